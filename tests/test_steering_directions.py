"""Contrastive directions and residual reads, checked against plain HF hidden states."""

from __future__ import annotations

import pytest
import torch

from esr_analysis.steering.directions import contrastive_direction, mean_residual
from esr_analysis.steering.interventions import AddVector
from esr_analysis.steering.residuals import read_residuals
from esr_analysis.tracing import hf_module

POS = ["The ocean waves and whales.", "Deep blue sea with fish."]
NEG = ["The meeting is on Tuesday.", "Sign the form by Friday please."]


def _plain_mean(lm, texts, layer):
    """Plain HF: mean over every position but each text's first, leaving out norms > 10x the set's median."""
    hf, tok = hf_module(lm), lm.tokenizer
    rows = []
    for t in texts:
        ids = tok(t, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            h = hf.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]
        rows.append(h[1:])
    h = torch.cat(rows)
    norms = h.norm(dim=-1)
    return h[norms <= 10 * norms.median()].mean(0)


def test_mean_residual_matches_plain_hf(tiny_lm):
    torch.testing.assert_close(mean_residual(tiny_lm, POS, 0), _plain_mean(tiny_lm, POS, 0), atol=1e-4, rtol=1e-4)


def test_contrastive_direction_is_unit_and_points_to_positive(tiny_lm):
    d = contrastive_direction(tiny_lm, POS, NEG, 0)
    assert float(d.norm()) == pytest.approx(1.0, abs=1e-5)
    expected = _plain_mean(tiny_lm, POS, 0) - _plain_mean(tiny_lm, NEG, 0)
    torch.testing.assert_close(d, expected / expected.norm(), atol=1e-4, rtol=1e-4)


def test_read_residuals_shows_exactly_the_added_vector(tiny_lm):
    v = torch.randn(64)
    iv = AddVector(vector=tuple(v.tolist()), strength=2.5, layer=0)
    before = read_residuals(tiny_lm, POS, 0)
    after = read_residuals(tiny_lm, POS, 0, interventions=[iv])
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a - b, (2.5 * v).expand_as(a), atol=1e-4, rtol=1e-4)


def test_read_residuals_rejects_bad_layer(tiny_lm):
    with pytest.raises(ValueError, match="out of range"):
        read_residuals(tiny_lm, POS, 7)


def test_contrastive_direction_needs_texts(tiny_lm):
    with pytest.raises(ValueError, match="at least one text"):
        contrastive_direction(tiny_lm, [], NEG, 0)
