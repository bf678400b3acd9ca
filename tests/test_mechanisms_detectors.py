"""Detector discovery: seeded derangements, streamed statistics against a plain-torch recomputation (forward hooks
+ the full sae-lens encode), the three rules against direct definitions, the detector file, errors before compute."""

from __future__ import annotations

import pytest
import torch

from esr_analysis.mechanisms.detectors import (
    ZERO_EPS,
    DiscoveryStats,
    derangements,
    discover,
    discovery_pairs,
    select_detectors,
)
from esr_analysis.tracing import hf_module

PROMPTS = ["How do you bake bread?", "Explain the ocean.", "How do you write a thank-you note?",
           "What is compound interest?", "Explain a budget."]
ANSWERS = ["Mix flour, water and yeast, then bake it.", "The ocean is deep and blue; whales sing.",
           "Start with a greeting and thank the person.", "The balance grows by one plus the rate.",
           "A budget lists income and expenses each month."]


def test_derangements_are_seeded_distinct_and_have_no_fixed_points():
    for n in (2, 3, 5, 9):
        ds = derangements(n, 4, seed=3)
        assert ds == derangements(n, 4, seed=3)
        for d in ds:
            assert sorted(d) == list(range(n)) and all(d[i] != i for i in range(n))
        if n >= 5:
            assert len({tuple(d) for d in ds}) == 4
    assert derangements(9, 3, seed=3) != derangements(9, 3, seed=4)
    pairs = discovery_pairs(5, 2, seed=0)
    assert pairs[:5] == [(i, i, False) for i in range(5)] and len(pairs) == 15
    assert all(a != i for i, a, off in pairs if off)
    with pytest.raises(ValueError, match="at least 2"):
        derangements(1, 1, 0)


def _reference(lm, sae, layer, pairs, p_ids, a_ids):
    """Pooled [pairs, d_sae] and profile sums by plain torch: a forward hook on the decoder layer, one unpadded
    sequence per forward, the whole sae-lens encode, max over the answer positions."""
    hf = hf_module(lm)
    got = {}
    handle = hf.model.layers[layer].register_forward_hook(
        lambda m, i, o: got.__setitem__("h", (o[0] if isinstance(o, tuple) else o).detach()))
    pooled, count, total, positions = [], torch.zeros(sae.cfg.d_sae), torch.zeros(sae.cfg.d_sae), 0
    try:
        for i, a, _ in pairs:
            ids = torch.tensor([p_ids[i] + a_ids[a]])
            with torch.no_grad():
                hf(input_ids=ids)
                acts = sae.encode(got["h"][0, len(p_ids[i]):].float())
            pooled.append(acts.max(0).values)
            count += (acts > 0).sum(0)
            total += acts.sum(0)
            positions += acts.shape[0]
    finally:
        handle.remove()
    return torch.stack(pooled), count, total, positions


@pytest.mark.parametrize("batch_size,chunk,per_pass", [(4, 2048, None), (3, 7, 40)])
def test_discovery_statistics_match_plain_torch(tiny_lm, tiny_sae, batch_size, chunk, per_pass):
    from esr_analysis.models.chat import format_chat

    d = discover(tiny_lm, tiny_sae, PROMPTS, layer=1, answers=ANSWERS, n_derangements=3, seed=5,
                 batch_size=batch_size, chunk=chunk, latents_per_pass=per_pass, progress=False)
    tok = tiny_lm.tokenizer
    p_ids = [format_chat(tok, p)[1] for p in PROMPTS]
    a_ids = [list(tok(a, add_special_tokens=False)["input_ids"]) for a in ANSWERS]
    assert d.pairs == discovery_pairs(5, 3, 5)
    ref, count, total, positions = _reference(tiny_lm, tiny_sae, 1, d.pairs, p_ids, a_ids)
    off = torch.tensor([o for _, _, o in d.pairs])
    s = d.stats
    assert s.off.n == 15 and s.on.n == 5 and s.positions == positions
    for g, rows in ((s.off, ref[off].double()), (s.on, ref[~off].double())):
        torch.testing.assert_close(g.mean, rows.mean(0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g.max, rows.max(0).values, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g.min, rows.min(0).values, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(g.sumsq, (rows * rows).sum(0), atol=1e-4, rtol=1e-4)
        assert torch.equal(g.active, (rows > 0).sum(0).double())
    torch.testing.assert_close(s.density, count.double() / positions)
    torch.testing.assert_close(s.mean_active, total.double() / count.clamp(min=1).double(), atol=1e-5, rtol=1e-4)
    assert bool((s.off.mean > 0).any())  # the tiny SAE does fire: the comparison is not of zeros


def test_candidates_subset_gives_the_same_columns(tiny_lm, tiny_sae):
    full = discover(tiny_lm, tiny_sae, PROMPTS[:3], layer=0, answers=ANSWERS[:3], n_derangements=1, progress=False)
    cands = [90, 3, 41, 7]
    sub = discover(tiny_lm, tiny_sae, PROMPTS[:3], layer=0, answers=ANSWERS[:3], n_derangements=1, candidates=cands,
                   batch_size=2, progress=False)
    assert sub.stats.latents == tuple(cands)
    torch.testing.assert_close(sub.stats.off.max, full.stats.off.max[cands])
    torch.testing.assert_close(sub.stats.fire_count, full.stats.fire_count[cands])


def _stats_from(on: torch.Tensor, off: torch.Tensor, latents=None) -> DiscoveryStats:
    s = DiscoveryStats.empty(latents or list(range(on.shape[1])))
    cols = slice(0, on.shape[1])
    s.on.update(on, cols)
    s.off.update(off, cols)
    return s


def _auc(off: torch.Tensor, on: torch.Tensor) -> float:
    diff = off[:, None] - on[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def test_rules_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    n_on, n_off, k = 6, 18, 40
    on = torch.relu(torch.randn(n_on, k, generator=g))
    off = torch.relu(torch.randn(n_off, k, generator=g) + 0.3)
    on[:, :5] = 0.0                      # zero on every on-topic pair ...
    off[:, :5] = torch.rand(n_off, 5, generator=g) + 0.1   # ... and active on every off-topic pair
    off[:4, 3] = 0.0                     # active on 14/18 = 78 % < 80 %
    off[:3, 4] = 0.0                     # active on 15/18 = 83 %
    on[:, 5] = 0.2
    off[:, 5] = 0.5 + torch.rand(n_off, generator=g)  # separable but not zero on-topic
    s = _stats_from(on, off, latents=[100 + j for j in range(k)])
    frac = (off >= ZERO_EPS).double().mean(0)
    want_a = [j for j in range(k) if frac[j] >= 0.8 and bool((on[:, j] < ZERO_EPS).all())]
    got_a = select_detectors(s, "zero_on_topic")
    assert sorted(got_a) == [100 + j for j in want_a] and 103 not in got_a and 104 in got_a
    assert got_a == sorted(got_a, key=lambda i: (float(frac[i - 100]), float(off[:, i - 100].mean())), reverse=True)
    want_b = [100 + j for j in range(k) if _auc(off[:, j], on[:, j]) == 1.0]
    got_b = select_detectors(s, "separability")
    assert sorted(got_b) == sorted(want_b) and 105 in got_b and 103 not in got_b
    diff = off.mean(0) - on.mean(0)
    top = [100 + int(j) for j in torch.argsort(diff, descending=True)[:7] if diff[j] > 0]
    assert select_detectors(s, "ranked", top_k=7) == top
    with pytest.raises(ValueError, match="unknown rule"):
        select_detectors(s, "contrast")


def test_bad_input_fails_before_any_compute(tiny_lm, tiny_sae, monkeypatch):
    import importlib

    gen = importlib.import_module("esr_analysis.steering.generate")
    run = importlib.import_module("esr_analysis.tracing.run")

    def boom(*a, **k):
        raise AssertionError("compute started")

    monkeypatch.setattr(run, "forward_pooled", boom)
    monkeypatch.setattr(gen, "generate", boom)
    cases = [
        (dict(prompts=PROMPTS[:1]), "at least 2"),
        (dict(prompts=[PROMPTS[0], PROMPTS[0]]), "distinct"),
        (dict(layer=7), "out of range"),
        (dict(answers=ANSWERS[:2]), "answers"),
        (dict(candidates=[3, 96]), "out of range"),
        (dict(candidates=[]), "empty"),
        (dict(n_derangements=0), ">= 1"),
        (dict(prompts=["ok", ""]), "non-empty"),
    ]
    for over, msg in cases:
        kw = dict(prompts=PROMPTS[:3], layer=1, answers=None)
        kw.update(over)
        with pytest.raises(ValueError, match=msg):
            discover(tiny_lm, tiny_sae, kw.pop("prompts"), progress=False, **kw)


def test_remote_local_discovery_matches_local(tiny_lm, tiny_sae):
    kw = dict(layer=1, answers=ANSWERS[:3], n_derangements=1, candidates=list(range(0, 96, 3)), progress=False)
    a = discover(tiny_lm, tiny_sae, PROMPTS[:3], **kw)
    b = discover(tiny_lm, tiny_sae, PROMPTS[:3], remote="local", latents_per_pass=16, **kw)
    torch.testing.assert_close(a.stats.off.max, b.stats.off.max)
    torch.testing.assert_close(a.stats.act_sum, b.stats.act_sum, atol=1e-4, rtol=1e-5)


def test_generated_answers_are_seeded(tiny_lm, tiny_sae):
    from esr_analysis.steering.sampling import SamplingSettings

    st = SamplingSettings(temperature=0.8, max_new_tokens=5)
    a = discover(tiny_lm, tiny_sae, PROMPTS[:3], layer=1, settings=st, seed=2, n_derangements=1, progress=False)
    b = discover(tiny_lm, tiny_sae, PROMPTS[:3], layer=1, settings=st, seed=2, n_derangements=1, progress=False)
    assert a.answer_ids == b.answer_ids and all(a.answer_ids) and a.params["answers"] == "generated"
    torch.testing.assert_close(a.stats.off.sum, b.stats.off.sum)


def _jumprelu_sae():
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(2)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=64, d_sae=96))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn_like(sae.W_enc) * 0.3)
        sae.b_enc.copy_(torch.randn_like(sae.b_enc) * 0.1)
        sae.threshold.copy_(torch.rand_like(sae.threshold) * 0.2)
    return sae


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_encoder_kernel_equals_the_sliced_sae(tiny_sae, arch):
    from esr_analysis.mechanisms.detectors import encoder_kernel
    from esr_analysis.sae.sliced import SlicedSAE
    from esr_analysis.tracing.kernels import encode_slice

    sae = tiny_sae if arch == "relu" else _jumprelu_sae()
    x = torch.randn(5, 64)
    for lats in (list(range(96)), list(range(10, 40)), [90, 3, 41]):
        enc = encoder_kernel(sae, lats)
        assert "W_dec" not in enc
        torch.testing.assert_close(encode_slice(x, enc), SlicedSAE.from_sae(sae, lats).encode(x))
    torch.testing.assert_close(encode_slice(x, encoder_kernel(sae, range(96))), sae.encode(x))
    assert encoder_kernel(tiny_sae, range(96))["W_enc"].data_ptr() == tiny_sae.W_enc.data_ptr()  # a view, no copy


def test_pool_window_and_forward_pooled_equal_pooling_over_every_position(tiny_lm, tiny_sae):
    """The windowed read (:func:`pool_window`) against plain torch: a hook on the block, the full sae-lens encode
    over all ``T`` positions, masked max / count / sum; rows with an empty mask and a mask in the middle too."""
    from esr_analysis.mechanisms.detectors import encoder_kernel
    from esr_analysis.tracing.run import forward_pooled, pool_window

    assert pool_window(torch.zeros(2, 5, 1)) == (0, 5)
    m = torch.zeros(3, 9, 1)
    m[0, 6:] = 1
    m[1, 4:6] = 1  # a window inside, not a suffix
    assert pool_window(m) == (4, 9)
    ids = torch.randint(5, 200, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 9, dtype=torch.long)
    got = forward_pooled(tiny_lm, ids, mask, 1, encoder_kernel(tiny_sae, range(96)), m, chunk=40)
    hf, seen = hf_module(tiny_lm), {}
    handle = hf.model.layers[1].register_forward_hook(
        lambda mod, i, o: seen.__setitem__("h", (o[0] if isinstance(o, tuple) else o).detach()))
    try:
        with torch.no_grad():
            hf(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    acts = tiny_sae.encode(seen["h"].float()) * m
    torch.testing.assert_close(got["max"], acts.amax(1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["count"], (acts > 0).sum(1).float())
    torch.testing.assert_close(got["sum"], acts.sum(1), rtol=1e-5, atol=1e-5)
    assert float(got["max"][2].abs().sum()) == 0.0  # the row with no pooled position
