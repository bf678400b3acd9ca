"""The one residual reader and the one attention-sink rule, checked against plain torch / plain HF."""

from __future__ import annotations

import pytest
import torch

from esr_analysis.models.chat import format_chat
from esr_analysis.steering.residuals import (
    REFERENCE_TEXTS,
    median_residual_norm,
    ordinary_positions,
    ordinary_residuals,
    read_residuals,
)
from esr_analysis.tracing import hf_module

TEXTS = ["The ocean waves and whales.", "Sign the form by Friday please, and return it to the office.", "Hi"]


def _plain_ordinary(hidden, mask, prefix=1, factor=10.0):
    """Independent loop version of the documented rule."""
    B, T, _ = hidden.shape
    cands = []
    for b in range(B):
        real = [t for t in range(T) if mask[b, t]]
        cands += [(b, t) for t in real[prefix:]]
    norms = {bt: float(hidden[bt[0], bt[1]].norm()) for bt in cands}
    med = torch.tensor(sorted(norms.values())).median() if norms else None
    out = torch.zeros(B, T, dtype=torch.bool)
    for bt, n in norms.items():
        out[bt] = n <= factor * float(med)
    return out


def test_sink_rule_drops_first_real_position_padding_and_planted_outlier():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 6, 8, generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]])
    h[1, 3] *= 100.0  # an outlier in the middle of a row
    got = ordinary_positions(h, mask)
    assert torch.equal(got, _plain_ordinary(h, mask))
    assert not got[0, :3].any() and not got[1, 0] and not got[1, 3] and not got[2, 4] and got[2, 5]
    flat = h[1, 1:]
    assert torch.equal(ordinary_positions(flat), torch.tensor([True, True, False, True, True]))
    assert torch.equal(ordinary_positions(h, mask, prefix=0, factor=1e9), mask.bool())


def _plain_residuals(lm, ids_list, layer):
    """Block ``layer``'s output from HF's hidden states (index ``layer + 1``; not the last block, whose
    hidden state HF returns after the final norm)."""
    hf = hf_module(lm)
    assert layer + 1 < hf.config.num_hidden_layers
    out = []
    for ids in ids_list:
        with torch.no_grad():
            hs = hf.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        out.append(hs[layer + 1][0])
    return out


@pytest.mark.parametrize("batch_size", [None, 2])
def test_read_residuals_matches_plain_hf_in_padded_batches(tiny_lm, batch_size):
    ids = [format_chat(tiny_lm.tokenizer, t)[1] for t in TEXTS]
    got = read_residuals(tiny_lm, TEXTS, 0, batch_size=batch_size)
    for g, want in zip(got, _plain_residuals(tiny_lm, ids, 0), strict=True):
        assert g.shape == want.shape and g.dtype == torch.float32
        torch.testing.assert_close(g, want, atol=1e-4, rtol=1e-4)
    by_ids = read_residuals(tiny_lm, ids, 0, batch_size=batch_size)
    for a, b in zip(by_ids, got, strict=True):
        torch.testing.assert_close(a, b)


def test_read_residuals_rejects_bad_input_before_compute(tiny_lm):
    with pytest.raises(ValueError, match="non-empty list"):
        read_residuals(tiny_lm, [], 0)
    with pytest.raises(ValueError, match="batch_size"):
        read_residuals(tiny_lm, TEXTS, 0, batch_size=0)
    with pytest.raises(ValueError, match="non-empty"):
        read_residuals(tiny_lm, [[1, 2], []], 0)


def test_median_norm_and_ordinary_residuals_follow_the_rule(tiny_lm):
    ids = [format_chat(tiny_lm.tokenizer, t)[1] for t in REFERENCE_TEXTS]
    rows = [r[1:] for r in _plain_residuals(tiny_lm, ids, 0)]
    h = torch.cat(rows)
    norms = h.norm(dim=-1)
    kept = h[norms <= 10 * norms.median()]
    torch.testing.assert_close(ordinary_residuals(tiny_lm, list(REFERENCE_TEXTS), 0), kept, atol=1e-4, rtol=1e-4)
    assert median_residual_norm(tiny_lm, 0) == pytest.approx(float(kept.norm(dim=-1).median()), rel=1e-4)
