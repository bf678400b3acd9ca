"""Traces of episodes (:mod:`esr_analysis.mechanisms.traces`) against a plain-torch computation: forward hooks on
an independent copy of the tiny model, the steering vector added (or not) at the block output, the SAE's own
``encode`` of the hooked residuals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esr_analysis.mechanisms.boundaries import Boundaries
from esr_analysis.mechanisms.episodes import Episode
from esr_analysis.mechanisms.traces import (
    correction_correlation,
    episode_token_boundaries,
    label_search,
    trace_episodes,
)
from esr_analysis.models.chat import format_chat
from esr_analysis.models.tiny import tiny_hf_model

PROMPTS = ["How do you boil an egg?", "What is the area of a circle?"]
RESPONSES = ["Boil water then add the egg. Wait, that is wrong. Put the egg in cold water first.",
             "A circle has a radius. Sorry, let me try again. The area is pi times r squared."]
STEER = {"kind": "add_latent", "latent": 4, "layer": 0, "scope": "all", "unit": "sae", "strength_given": 2.5,
         "strength_sae": 2.5}


def _episodes(tok) -> list[Episode]:
    out = []
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        ids = list(tok(r, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
        out.append(Episode(episode_id=f"e{i}", kind="recovery", prompt=p, response=r, model="tiny-llama", seed=i,
                           interventions=[STEER], input_ids=format_chat(tok, p)[1], output_ids=ids))
    return out


def _bounds(response: str) -> Boundaries:
    c = response.index(". ") + 2
    on = response.index(". ", c) + 2
    return Boundaries(0, c, on, source="test")


def _hooked_residuals(sae, seq: list[int], steer: bool, layer: int = 1) -> torch.Tensor:
    """Block ``layer``'s output of a plain HF forward, with ``strength * W_dec[latent]`` added to block 0's output
    at every position when ``steer``."""
    hf = tiny_hf_model("llama")
    seen = {}

    def add(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h + STEER["strength_sae"] * sae.W_dec[STEER["latent"]].detach()
        return (h, *out[1:]) if isinstance(out, tuple) else h

    def keep(_m, _i, out):
        seen["h"] = (out[0] if isinstance(out, tuple) else out).detach()

    handles = [hf.model.layers[layer].register_forward_hook(keep)]
    if steer:
        handles.append(hf.model.layers[STEER["layer"]].register_forward_hook(add))
    with torch.no_grad():
        hf(torch.tensor([seq]))
    for h in handles:
        h.remove()
    return seen["h"][0]


@pytest.mark.parametrize("steering", [True, False])
def test_trace_equals_hooked_sae_encoding(tiny_lm, tiny_sae, steering):
    eps = _episodes(tiny_lm.tokenizer)
    groups = {"detectors": [1, 2], "user": [7]}
    traces = trace_episodes(tiny_lm, tiny_sae, eps, layer=1, groups=groups, steering=steering,
                            boundaries=[_bounds(e.response) for e in eps])
    for e, t in zip(eps, traces, strict=True):
        assert t.latents == [1, 2, 7, 4] and t.groups["steered"] == [4] and t.steered is steering
        seq = e.input_ids + e.output_ids
        assert t.tokens == seq and t.response_start == len(e.input_ids)
        with torch.no_grad():
            want = tiny_sae.encode(_hooked_residuals(tiny_sae, seq, steering))[:, t.latents].numpy()
        np.testing.assert_allclose(t.acts, want, atol=1e-4, rtol=1e-4)
        assert np.abs(want).sum() > 0
        np.testing.assert_allclose(t.group("detectors"), want[:, :2].mean(axis=1), atol=1e-4)
        np.testing.assert_allclose(t.group("detectors", "sum"), want[:, :2].sum(axis=1), atol=1e-4)
    off = trace_episodes(tiny_lm, tiny_sae, eps[:1], layer=1, groups=groups, steering=not steering)
    assert not np.allclose(off[0].acts, traces[0].acts)  # steering on and off differ


def test_trace_boundaries_point_at_the_regions(tiny_lm, tiny_sae):
    eps = _episodes(tiny_lm.tokenizer)
    bs = [_bounds(e.response) for e in eps]
    traces = trace_episodes(tiny_lm, tiny_sae, eps, layer=1, groups={"d": [1]}, steering=False, boundaries=bs)
    for e, b, t in zip(eps, bs, traces, strict=True):
        tb = t.bounds
        assert tb == episode_token_boundaries(tiny_lm.tokenizer, e, b)
        assert t.response_start == tb.off_topic < tb.correction < tb.on_topic < tb.end == len(t.tokens)
        corr_text = "".join(t.token_strings[tb.correction:tb.on_topic])
        assert corr_text.strip().startswith(e.response[b.correction:b.correction + 4])


def test_trace_remote_local_equals_local(tiny_lm, tiny_sae):
    eps = _episodes(tiny_lm.tokenizer)
    kw = dict(layer=1, groups={"d": [1, 2]}, steering=True)
    local = trace_episodes(tiny_lm, tiny_sae, eps, **kw)
    remote = trace_episodes(tiny_lm, tiny_sae, eps, remote="local", **kw)
    for a, b in zip(local, remote, strict=True):
        np.testing.assert_allclose(a.acts, b.acts, atol=1e-5)


def test_correction_correlation_equals_numpy(tiny_lm, tiny_sae):
    eps = _episodes(tiny_lm.tokenizer)
    tbs = [episode_token_boundaries(tiny_lm.tokenizer, e, _bounds(e.response)) for e in eps]
    got = correction_correlation(tiny_lm, tiny_sae, eps, tbs, layer=1, top=5, exclude=[4])
    xs, ys = [], []
    for e, b in zip(eps, tbs, strict=True):
        h = _hooked_residuals(tiny_sae, e.input_ids + e.output_ids, steer=False)
        with torch.no_grad():
            xs.append(tiny_sae.encode(h[b.response_start:b.end]).numpy())
        y = np.zeros(b.end - b.response_start)
        y[b.correction - b.response_start:b.on_topic - b.response_start] = 1
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    r = np.array([np.corrcoef(x[:, j], y)[0, 1] if x[:, j].std() > 0 else 0.0 for j in range(x.shape[1])])
    r[4] = -np.inf
    want = np.argsort(-r, kind="stable")[:5]
    assert [j for j, _ in got] == [int(j) for j in want]
    np.testing.assert_allclose([v for _, v in got], r[want], atol=1e-6)
    assert 4 not in [j for j, _ in got]


def test_label_search_weights_and_excludes():
    labels = {1: "Self-correction: 'wait, I made a mistake'", 2: "HTTP error codes", 3: "apologies and revisions",
              4: "cooking", 5: "wrong answers"}
    got = label_search(labels, min_score=2)
    assert [i for i, _, _ in got] == [1, 3]
    assert got[0][1] > got[1][1]
    assert label_search(labels, min_score=1, top=None)[-1][0] == 5


def test_episodes_without_stored_ids_replay_the_same(tiny_lm, tiny_sae):
    from dataclasses import replace

    eps = _episodes(tiny_lm.tokenizer)
    bare = [replace(e, input_ids=None, output_ids=None) for e in eps]
    mixed = [eps[0], bare[1]]
    a = trace_episodes(tiny_lm, tiny_sae, eps, layer=1, groups={"d": [1, 2]}, steering=True)
    b = trace_episodes(tiny_lm, tiny_sae, mixed, layer=1, groups={"d": [1, 2]}, steering=True)
    assert [t.episode_id for t in b] == ["e0", "e1"]
    for x, y in zip(a, b, strict=True):  # the stored ids end with an end-of-turn token; re-tokenized text does not
        n = len(y.tokens)
        assert x.tokens[:n] == y.tokens
        np.testing.assert_allclose(x.acts[:n], y.acts, atol=1e-5)
