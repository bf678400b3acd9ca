"""The steering core checked against an independent plain-torch forward-hook implementation."""

from __future__ import annotations

import math

import pytest
import torch

from esr_analysis.steering.generate import generate
from esr_analysis.steering.interventions import AblateLatents, AddLatent, AddVector
from esr_analysis.steering.replay import replay
from esr_analysis.steering.results import LatentCapture
from esr_analysis.steering.sampling import SamplingSettings
from esr_analysis.tracing import hf_module

PROMPTS = ["Explain how to bake bread.", "How do you calculate the area of a circle?", "Budgets list income."]
N = 8
GREEDY = SamplingSettings(max_new_tokens=N, min_new_tokens=N)


def _plain_inputs(lm, prompts):
    """Left-padded chat inputs built without the library (reference path)."""
    tok = lm.tokenizer
    seqs = [tok(tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                        add_generation_prompt=True), add_special_tokens=False)["input_ids"]
            for p in prompts]
    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), tok.pad_token_id)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, T - len(s):] = torch.tensor(s)
        mask[b, T - len(s):] = 1
    return ids, mask


def _hook_generate(hf, ids, mask, layer, vec, scope, n=N):
    """Reference: HF generate with a forward hook adding ``vec`` at the scope's positions."""
    state = {"step": 0}

    def hook(_mod, _inp, out):
        h = out[0] if isinstance(out, tuple) else out
        add = torch.zeros_like(h)
        if state["step"] == 0:
            if scope in ("all", "prompt"):
                add += vec * mask[:, :, None].to(h.dtype)
            else:
                add[:, -1] += vec
        elif scope in ("all", "generated"):
            add[:, -1] += vec
        state["step"] += 1
        h2 = h + add
        return (h2,) + tuple(out[1:]) if isinstance(out, tuple) else h2

    handle = hf.model.layers[layer].register_forward_hook(hook)
    try:
        out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                          pad_token_id=0, eos_token_id=2)
    finally:
        handle.remove()
    return out[:, ids.shape[1]:]


def _record_received(hf, layer):
    """A torch pre-hook recording what block ``layer + 1`` receives at every step."""
    received = []

    def pre(_m, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        received.append(h.detach().clone())

    return received, hf.model.layers[layer + 1].register_forward_pre_hook(pre, with_kwargs=True)


def _raw_block_output(hf, ids, mask, layer):
    """Unedited output of block ``layer`` over a whole sequence (edits at ``layer`` cannot change it)."""
    with torch.no_grad():
        return hf.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer + 1]


@pytest.mark.parametrize("scope", ["all", "prompt", "generated"])
def test_added_delta_matches_scope_and_reference(tiny_lm, tiny_sae, scope):
    hf = hf_module(tiny_lm)
    latent, strength, layer = 7, 3.5, 0
    d = tiny_sae.W_dec[latent].detach()
    received, handle = _record_received(hf, layer)
    try:
        res = generate(tiny_lm, PROMPTS, interventions=[AddLatent(latent=latent, strength=strength, layer=layer,
                                                                  scope=scope)],
                       sae=tiny_sae, settings=GREEDY, progress=False)
    finally:
        handle.remove()
    ids, mask = _plain_inputs(tiny_lm, PROMPTS)
    assert len(received) == N and all(len(r.output_ids) == N for r in res)
    gen = torch.tensor([r.output_ids for r in res])
    full_ids = torch.cat([ids, gen[:, :-1]], 1)
    full_mask = torch.cat([mask, torch.ones_like(gen[:, :-1])], 1)
    raw = _raw_block_output(hf, full_ids, full_mask, layer)
    T = ids.shape[1]
    delta = torch.cat(received, 1) - raw
    expected = torch.zeros_like(delta)
    if scope in ("all", "prompt"):
        expected[:, :T] += strength * d * mask[:, :, None]
    if scope == "generated":
        expected[:, T - 1] += strength * d
    if scope in ("all", "generated"):
        expected[:, T:] += strength * d
    torch.testing.assert_close(delta, expected, atol=1e-4, rtol=1e-4)
    ref = _hook_generate(hf, ids, mask, layer, strength * d, scope)
    assert [r.output_ids for r in res] == [row[: len(r.output_ids)].tolist() for row, r in zip(ref, res, strict=True)]
    rec = res[0].interventions[0]
    assert rec.strength_sae == strength and rec.unit == "sae" and rec.scope == scope
    assert rec.delta_norm == pytest.approx(strength * float(d.norm()), rel=1e-5)
    assert rec.strength_relative == pytest.approx(rec.delta_norm / rec.median_residual_norm, rel=1e-6)


@pytest.fixture(params=["llama", "qwen2", "gemma2", "gemma3"])
def arch_lm(request):
    from esr_analysis.models.tiny import tiny_hf_model, tiny_tokenizer
    from esr_analysis.tracing import wrap_model

    return wrap_model(tiny_hf_model(request.param), tiny_tokenizer())


def test_steering_matches_hook_reference_on_every_tiny_architecture(arch_lm, tiny_sae):
    hf = hf_module(arch_lm)
    d = tiny_sae.W_dec[11].detach()
    res = generate(arch_lm, PROMPTS, interventions=[AddLatent(latent=11, strength=2.0, layer=0)], sae=tiny_sae,
                   settings=GREEDY, progress=False)
    ids, mask = _plain_inputs(arch_lm, PROMPTS)
    ref = _hook_generate(hf, ids, mask, 0, 2.0 * d, "all")
    plain = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=N, min_new_tokens=N,
                        pad_token_id=0, eos_token_id=2)[:, ids.shape[1]:]
    assert [r.output_ids for r in res] == ref.tolist()
    assert ref.tolist() != plain.tolist()  # the steering changed something


def test_strength_zero_reproduces_plain_hf_generate(tiny_lm, tiny_sae):
    hf = hf_module(tiny_lm)
    res = generate(tiny_lm, PROMPTS, interventions=[AddLatent(latent=3, strength=0.0, layer=1)], sae=tiny_sae,
                   settings=SamplingSettings(max_new_tokens=12), progress=False)
    ids, mask = _plain_inputs(tiny_lm, PROMPTS)
    plain = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, pad_token_id=0,
                        eos_token_id=2)[:, ids.shape[1]:]
    for row, r in zip(plain, res, strict=True):
        assert r.output_ids == row[: len(r.output_ids)].tolist()
        assert all(t == 0 for t in row[len(r.output_ids):].tolist())  # only padding after the kept tokens


def test_relative_unit_scales_to_median_norm(tiny_lm, tiny_sae):
    res = generate(tiny_lm, PROMPTS[:1], interventions=[AddLatent(latent=5, strength=0.5, layer=1, unit="relative")],
                   sae=tiny_sae, settings=GREEDY, progress=False)
    rec = res[0].interventions[0]
    d_norm = float(tiny_sae.W_dec[5].detach().norm())
    assert rec.delta_norm == pytest.approx(0.5 * rec.median_residual_norm, rel=1e-5)
    assert rec.strength_sae == pytest.approx(0.5 * rec.median_residual_norm / d_norm, rel=1e-5)
    assert rec.strength_relative == pytest.approx(0.5, rel=1e-6)


def test_ablation_removes_latents_and_keeps_error_term(tiny_lm, tiny_sae):
    hf = hf_module(tiny_lm)
    layer, latents = 0, (3, 10, 42)
    ids, mask = _plain_inputs(tiny_lm, PROMPTS[:1])
    with torch.no_grad():
        acts = tiny_sae.encode(hf.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                               .hidden_states[layer + 1])
    active = [i for i in range(tiny_sae.cfg.d_sae) if (acts[0, :, i] > 0).sum() >= 3][:3]
    latents = tuple(active) if len(active) == 3 else latents
    received, handle = _record_received(hf, layer)
    try:
        res = generate(tiny_lm, PROMPTS[:1], interventions=[AblateLatents(latents=latents, layer=layer)],
                       sae=tiny_sae, settings=SamplingSettings(max_new_tokens=3, min_new_tokens=3), progress=False)
    finally:
        handle.remove()
    gen = torch.tensor([res[0].output_ids[:-1]])
    raw = _raw_block_output(hf, torch.cat([ids, gen], 1), torch.cat([mask, torch.ones_like(gen)], 1), layer)
    for r, x in [(raw, torch.cat(received, 1))]:
        f = tiny_sae.encode(r)
        err = r - tiny_sae.decode(f)
        f_clamped = f.clone()
        f_clamped[..., list(latents)] = 0
        expected = tiny_sae.decode(f_clamped) + err  # clamp-to-zero, decode, add the error term
        torch.testing.assert_close(x, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(x - tiny_sae.decode(f_clamped), err, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(x, r, atol=1e-3)  # the ablation did something


def test_rows_in_one_batch_equal_rows_alone(tiny_lm, tiny_sae):
    rows = [[AddLatent(latent=1, strength=4.0, layer=0)],
            [AblateLatents(latents=(2, 3), layer=1), AddLatent(latent=9, strength=-2.0, layer=1, scope="generated")],
            []]
    batched = generate(tiny_lm, PROMPTS, interventions=rows, sae=tiny_sae, settings=GREEDY, progress=False)
    for p, row, b in zip(PROMPTS, rows, batched, strict=True):
        alone = generate(tiny_lm, [p], interventions=[row], sae=tiny_sae, settings=GREEDY, progress=False)[0]
        assert alone.output_ids == b.output_ids
    assert len({tuple(b.output_ids) for b in batched}) > 1


def test_remote_local_equals_local(tiny_lm, tiny_sae):
    kw = dict(interventions=[AddLatent(latent=4, strength=2.0, layer=0), AblateLatents(latents=(5,), layer=1)],
              sae=tiny_sae, settings=GREEDY, capture=LatentCapture(latents=(1, 2), layer=1), progress=False)
    local = generate(tiny_lm, PROMPTS[:2], **kw)
    remote = generate(tiny_lm, PROMPTS[:2], remote="local", **kw)
    for a, b in zip(local, remote, strict=True):
        assert a.output_ids == b.output_ids
        torch.testing.assert_close(torch.tensor(a.latent_acts), torch.tensor(b.latent_acts))


def test_replay_remote_local_equals_local(tiny_lm, tiny_sae):
    """Replay with steering and ablation through NDIF's serialisation (the plans are built before the trace)."""
    pairs = [(PROMPTS[0], "Mix flour and water."), (PROMPTS[1], "Use pi r squared.")]
    kw = dict(capture=LatentCapture(latents=(1, 2, 7), layer=1), sae=tiny_sae, progress=False,
              interventions=[AddLatent(latent=4, strength=2.0, layer=0), AblateLatents(latents=(5,), layer=1)])
    local = replay(tiny_lm, pairs, **kw)
    remote = replay(tiny_lm, pairs, remote="local", **kw)
    for a, b in zip(local, remote, strict=True):
        assert a.tokens == b.tokens
        torch.testing.assert_close(torch.tensor(a.latent_acts), torch.tensor(b.latent_acts))
    assert any(v > 0 for r in local for row in r.latent_acts for v in row)


def test_relative_unit_norm_pass_honours_remote(tiny_lm, tiny_sae, monkeypatch):
    """The median-norm pass behind ``unit="relative"`` runs where the call runs (never silently locally)."""
    from esr_analysis.steering import residuals
    from esr_analysis.tracing import run as tracing_run

    seen = []
    real = tracing_run.forward_with_plan

    def spy(*args, **kwargs):
        seen.append(kwargs.get("remote"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tracing_run, "forward_with_plan", spy)
    monkeypatch.setattr(residuals, "_NORM_CACHE", {})
    iv = [AddLatent(latent=4, strength=0.5, layer=1, unit="relative")]
    local = generate(tiny_lm, PROMPTS[:1], interventions=iv, sae=tiny_sae, settings=GREEDY, progress=False)
    residuals._NORM_CACHE.clear()
    remote = generate(tiny_lm, PROMPTS[:1], interventions=iv, sae=tiny_sae, settings=GREEDY, progress=False,
                      remote="local")
    assert seen == [False, "local"]
    assert local[0].output_ids == remote[0].output_ids
    assert local[0].interventions == remote[0].interventions


def test_seeded_sampling_is_per_row_and_batch_independent(tiny_lm):
    s = SamplingSettings(temperature=1.0, top_p=0.95, max_new_tokens=10, min_new_tokens=10)
    a = generate(tiny_lm, PROMPTS, settings=s, seeds=[11, 12, 13], progress=False)
    b = generate(tiny_lm, PROMPTS, settings=s, seeds=[11, 12, 13], progress=False)
    assert [r.output_ids for r in a] == [r.output_ids for r in b]
    alone = generate(tiny_lm, [PROMPTS[1]], settings=s, seeds=[12], progress=False)[0]
    reordered = generate(tiny_lm, [PROMPTS[2], PROMPTS[1]], settings=s, seeds=[99, 12], batch_size=2,
                         progress=False)[1]
    assert alone.output_ids == a[1].output_ids == reordered.output_ids
    other = generate(tiny_lm, [PROMPTS[1]] * 4, settings=s, seeds=[1, 2, 3, 4], progress=False)
    assert len({tuple(r.output_ids) for r in other}) > 1  # seeds matter


def test_capture_matches_teacher_forced_replay(tiny_lm, tiny_sae):
    iv = [AddLatent(latent=6, strength=3.0, layer=0)]
    cap = LatentCapture(latents=(0, 6, 20), layer=1)
    res = generate(tiny_lm, PROMPTS[:2], interventions=iv, sae=tiny_sae, settings=GREEDY, capture=cap,
                   progress=False)
    reps = replay(tiny_lm, [(r.prompt, r.output_ids) for r in res], interventions=iv, sae=tiny_sae, capture=cap,
                  progress=False)
    for r, rp in zip(res, reps, strict=True):
        n = len(r.output_ids)
        got = torch.tensor(rp.latent_acts)[rp.response_start - 1: rp.response_start - 1 + n]
        torch.testing.assert_close(torch.tensor(r.latent_acts), got, atol=1e-4, rtol=1e-4)
        assert torch.tensor(r.latent_acts).abs().sum() > 0


def test_result_records_everything_for_replay(tiny_lm, tiny_sae):
    r = generate(tiny_lm, PROMPTS[:1], interventions=[AddLatent(latent=2, strength=1.0, layer=1)], sae=tiny_sae,
                 settings=GREEDY, seeds=5, progress=False)[0]
    assert r.seed == 5 and r.chat_input.startswith("<bos><|user|>") and r.input_ids
    assert {"torch", "transformers", "nnsight", "python"} <= set(r.versions)
    again = r.model_validate_json(r.model_dump_json())
    assert again == r


def test_add_vector(tiny_lm):
    v = tuple(float(x) for x in torch.linspace(-1, 1, 64))
    r = generate(tiny_lm, PROMPTS[:1], interventions=[AddVector(vector=v, strength=2.0, layer=0, name="ramp")],
                 settings=GREEDY, progress=False)[0]
    assert r.interventions[0].vector_name == "ramp"
    assert r.interventions[0].delta_norm == pytest.approx(2.0 * float(torch.tensor(v).norm()), rel=1e-5)


# ---- bad input fails fast, before any compute --------------------------------------------------


@pytest.fixture
def no_compute(monkeypatch):
    from esr_analysis.tracing import run as tracing_run

    def boom(*a, **k):
        raise AssertionError("compute ran before validation")

    monkeypatch.setattr(tracing_run, "generate_with_plan", boom)
    monkeypatch.setattr(tracing_run, "forward_with_plan", boom)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(prompts=[]), "prompt list is empty"),
        (dict(prompts=["  "]), "non-empty string"),
        (dict(interventions=[AddLatent(latent=1, strength=1.0, layer=5)]), "layer 5 is out of range"),
        (dict(interventions=[AddLatent(latent=96, strength=1.0, layer=0)]), "latent index out of range"),
        (dict(interventions=[AblateLatents(latents=(1, 500), layer=0)]), "latent index out of range"),
        (dict(interventions=[AddLatent(latent=1, strength=1.0, layer=0)], sae=None), "need an SAE"),
        (dict(capture=LatentCapture(latents=(1,), layer=9)), "out of range"),
        (dict(settings=SamplingSettings(max_new_tokens=2, min_new_tokens=5)), "min_new_tokens"),
    ],
)
def test_bad_input_fails_before_compute(tiny_lm, tiny_sae, no_compute, kwargs, message):
    kw = dict(prompts=PROMPTS[:1], sae=tiny_sae, settings=GREEDY, progress=False)
    kw.update(kwargs)
    prompts = kw.pop("prompts")
    with pytest.raises(ValueError, match=message):
        generate(tiny_lm, prompts, **kw)


def test_sae_width_mismatch(tiny_lm, no_compute):
    from sae_lens import StandardSAE, StandardSAEConfig

    wrong = StandardSAE(StandardSAEConfig(d_in=32, d_sae=16))
    with pytest.raises(ValueError, match="does not match the model's hidden size 64"):
        generate(tiny_lm, PROMPTS[:1], interventions=[AddLatent(latent=1, strength=1.0, layer=0)], sae=wrong,
                 progress=False)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_strength_rejected(bad):
    with pytest.raises(ValueError, match="finite"):
        AddLatent(latent=1, strength=bad, layer=0)


def test_unknown_scope_rejected():
    with pytest.raises(ValueError, match="unknown scope 'middle'"):
        AddLatent(latent=1, strength=1.0, layer=0, scope="middle")
