"""Attribution (esr_analysis.mechanisms.attribution) against independent plain-torch implementations on tiny
random models: gradients x deltas by autograd and hooks, activation patching by hooks, head contributions, DLA."""

from __future__ import annotations

import json
import math

import pytest
import torch

from esr_analysis.errors import ConfigError
from esr_analysis.mechanisms.attribution.inputs import (
    RecoveryPoint,
    counterfactual,
    load_episodes,
    model_inputs,
    prepare,
    restart_metric,
    restart_token_ids,
)
from esr_analysis.mechanisms.attribution.methods import (
    SaeNode,
    activation_patching,
    attribution_patching,
    integrated_gradients,
)
from esr_analysis.models.tiny import TINY_HIDDEN, tiny_hf_model, tiny_tokenizer
from esr_analysis.sae.random_sae import random_sae
from esr_analysis.tracing import find_sites, head_contributions, hf_module, wrap_model
from esr_analysis.tracing.attribution import site_pass

RESP = "The sky is blue because of light. Cats like fish a lot. Wait, that is not right. Light scatters in the air and the blue light wins over the red light by far."
LAT, STRENGTH, LAYER = 3, 4.0, 1


def _episode(**kw) -> RecoveryPoint:
    base = {"prompt": "Why is the sky blue?", "response": RESP, "correction_char": RESP.index("Wait"),
            "offtopic_char": RESP.index("Cats"), "ontopic_char": RESP.index("Light scatters"),
            "interventions": [{"kind": "add_latent", "latent": LAT, "strength": STRENGTH, "layer": LAYER,
                               "unit": "sae"}], "detectors": [5, 7], "id": "e0"}
    return RecoveryPoint.from_dict({**base, **kw})


@pytest.fixture
def setup():
    torch.manual_seed(0)
    lm = wrap_model(tiny_hf_model("llama", n_layers=3), tiny_tokenizer())
    sae = random_sae(TINY_HIDDEN, 96, 3)
    return lm, sae


def _hook_run(hf, ids, steer, metric, *, edits=None, grads=True):
    """Plain torch: forward with hooks (steering vector added to block LAYER's output at every position), the
    logit difference at the last position; returns (metric, values, grads) keyed 'L:kind'."""
    sites = find_sites(hf)
    vals: dict[str, torch.Tensor] = {}
    edits = edits or {}
    handles = []

    def pre(key):
        def hook(_m, args):
            x = args[0]
            if key in edits:
                x = edits[key](x)
            if grads and not x.requires_grad:
                x = x.detach().requires_grad_(True)
            if grads:
                x.retain_grad()
            vals[key] = x
            return (x,) + tuple(args[1:])
        return hook

    def post(key, add=None):
        def hook(_m, _args, out):
            h = out[0] if isinstance(out, tuple) else out
            if add is not None:
                h = h + add
            if key in edits:
                h = edits[key](h)
            if grads:
                h.retain_grad()
            vals[key] = h
            return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h
        return hook

    for layer in range(sites.n_layers):
        base = f"{sites.layers}.{layer}"
        handles.append(hf.get_submodule(f"{base}.{sites.o_proj}").register_forward_pre_hook(pre(f"{layer}:head")))
        handles.append(hf.get_submodule(f"{base}.{sites.mlp}").register_forward_hook(post(f"{layer}:mlp_out")))
        add = steer if layer == LAYER else None
        handles.append(hf.get_submodule(base).register_forward_hook(post(f"{layer}:block_out", add)))
    try:
        with torch.set_grad_enabled(grads):
            logits = hf(input_ids=torch.tensor([ids])).logits
            m = logits[0, -1, metric["target"]] - logits[0, -1, metric["other"]]
            if grads:
                m.backward()
    finally:
        for h in handles:
            h.remove()
    out = {k: v.detach() for k, v in vals.items()}
    out["logits"] = logits[:, -1].detach()
    return float(m.detach()), out, {k: v.grad for k, v in vals.items() if grads}


def test_atp_equals_autograd_grad_times_delta(setup):
    lm, sae = setup
    hf = hf_module(lm)
    prep = prepare(lm, _episode())
    cf_ids, cf_ivs, rec = counterfactual(prep, "steering_off")
    att, state = attribution_patching(lm, prep, cf_ids, cf_ivs, metric=restart_metric(prep, lm.tokenizer),
                                      sae=sae, node=SaeNode.of(sae, LAYER))
    assert att.passes == 3 and rec["kind"] == "steering_off"
    # the comparison token: the clean run's top token outside the restart tokens
    steer = STRENGTH * sae.W_dec[LAT].detach()
    m_clean, v_clean, g = _hook_run(hf, prep.ids, steer, {"target": prep.target, "other": att.other})
    _, v_cf, _ = _hook_run(hf, cf_ids, None, {"target": prep.target, "other": att.other}, grads=False)
    logits = v_clean["logits"][0].clone()
    logits[sorted(set(restart_token_ids(lm.tokenizer)) | {prep.target})] = -math.inf
    assert att.other == int(logits.argmax())
    assert att.metric_clean == pytest.approx(m_clean, abs=1e-4)
    n_heads = find_sites(lm).n_heads
    for key in g:
        layer, kind = key.split(":")
        prod = (g[key] * (v_clean[key] - v_cf[key]))[0].sum(0)
        if kind == "head":
            for h, want in enumerate(prod.unflatten(-1, (n_heads, -1)).sum(-1).tolist()):
                assert att.atp[f"L{layer}.H{h}"] == pytest.approx(want, abs=1e-4)
        else:
            name = f"L{layer}." + {"mlp_out": "mlp", "block_out": "block"}[kind]
            assert att.atp[name] == pytest.approx(float(prod.sum()), abs=1e-4)
    # latents + error node sum to the read layer's block AtP (nothing cut by top_latents here: 96 latents)
    parts = sum(v for k, v in att.atp.items() if k.startswith("latent:") or k == "sae_error")
    assert parts == pytest.approx(att.atp[f"L{LAYER}.block"], rel=1e-3, abs=1e-4)
    assert state["metric"]["other"] == att.other


def test_activation_patching_equals_hook_patching(setup):
    lm, sae = setup
    hf = hf_module(lm)
    node = SaeNode.of(sae, LAYER)
    prep = prepare(lm, _episode())
    cf_ids, cf_ivs, _ = counterfactual(prep, "ontopic_span", tok=lm.tokenizer)
    assert len(cf_ids) == len(prep.ids) and cf_ids != prep.ids
    att, state = attribution_patching(lm, prep, cf_ids, cf_ivs, metric=restart_metric(prep, lm.tokenizer),
                                      sae=sae, node=node)
    steer = STRENGTH * sae.W_dec[LAT].detach()
    metric = {"target": prep.target, "other": att.other}
    m_clean, v_clean, _ = _hook_run(hf, prep.ids, steer, metric, grads=False)
    _, v_cf, _ = _hook_run(hf, cf_ids, steer, metric, grads=False)
    dh = find_sites(lm).head_dim
    latent = max((k for k in att.atp if k.startswith("latent:")), key=lambda k: abs(att.atp[k]))
    i = int(latent.split(":")[1])

    def head_edit(x, h=2, key="2:head"):
        x = x.clone()
        x[..., h * dh:(h + 1) * dh] = v_cf[key][..., h * dh:(h + 1) * dh]
        return x

    f_c, _ = node.split(v_clean[f"{LAYER}:block_out"])
    f_f, _ = node.split(v_cf[f"{LAYER}:block_out"])
    cases = {
        "L2.H2": {"2:head": head_edit},
        "L0.mlp": {"0:mlp_out": lambda x: v_cf["0:mlp_out"]},
        latent: {f"{LAYER}:block_out": lambda x: x + (f_f[..., i] - f_c[..., i])[..., None] * sae.W_dec[i].detach()},
    }
    got = activation_patching(lm, prep, state, [[n] for n in cases] + [["L2.H2", "L0.mlp"]], sae=sae, node=node,
                              batch_size=3)
    for (name, edit), effect in zip(cases.items(), got, strict=False):
        m_patched, _, _ = _hook_run(hf, prep.ids, steer, metric, edits=edit, grads=False)
        assert effect == pytest.approx(m_clean - m_patched, abs=1e-4), name
    both = {**cases["L2.H2"], **cases["L0.mlp"]}
    assert got[-1] == pytest.approx(m_clean - _hook_run(hf, prep.ids, steer, metric, edits=both, grads=False)[0],
                                    abs=1e-4)


def test_head_contributions_sum_to_attention_output(setup):
    lm, _ = setup
    hf = hf_module(lm)
    sites = find_sites(lm)
    prep = prepare(lm, _episode())
    ids, mask, plans, masks = model_inputs(lm, prep.ids, prep.start, [], None)
    out = site_pass(lm, ids, mask, plans, masks, reads={1: ("head",)}, metric=restart_metric(prep, lm.tokenizer))
    seen = {}
    o_proj = hf.get_submodule(f"{sites.layers}.1.{sites.o_proj}")
    handle = o_proj.register_forward_hook(lambda _m, _a, o: seen.setdefault("o", o.detach()))
    with torch.no_grad():
        hf(input_ids=ids)
    handle.remove()
    contrib = head_contributions(out["values"]["1:head"], o_proj.weight, sites.n_heads)
    assert torch.allclose(contrib.sum(-2), seen["o"], atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_dla_sums_to_logit_difference_with_frozen_scale(arch):
    lm = wrap_model(tiny_hf_model(arch, n_layers=3), tiny_tokenizer())
    hf = hf_module(lm)
    sites = find_sites(lm)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a gain that is not all ones and an o_proj bias: the kernel must find both by calling
        norm_w = hf.get_submodule(sites.final_norm).weight
        norm_w.copy_(0.5 + torch.rand(norm_w.shape, generator=g))
        for layer in range(3):
            proj = hf.get_submodule(f"{sites.layers}.{layer}.{sites.o_proj}")
            proj.bias = torch.nn.Parameter(0.1 * torch.randn(proj.out_features, generator=g), requires_grad=False)
    prep = prepare(lm, _episode(interventions=[]))
    att, _ = attribution_patching(lm, prep, prep.ids, [], metric=restart_metric(prep, lm.tokenizer))
    d = att.dla
    parts = sum(v for k, v in d.items() if k not in ("total",))
    assert parts == pytest.approx(d["total"], abs=1e-4)
    assert d["total"] == pytest.approx(att.metric_clean, abs=1e-4)  # frozen scale = the clean scale: exact
    # one head independently: its contribution through o_proj, through the frozen final norm, onto W_U[r] - W_U[a]
    seen = {}
    o_proj = hf.get_submodule(f"{sites.layers}.2.{sites.o_proj}")
    h1 = o_proj.register_forward_pre_hook(lambda _m, a: seen.setdefault("z", a[0].detach()))
    h2 = hf.get_submodule(sites.final_norm).register_forward_pre_hook(lambda _m, a: seen.setdefault("x", a[0].detach()))
    with torch.no_grad():
        hf(input_ids=torch.tensor([prep.ids]))
    h1.remove()
    h2.remove()
    x = seen["x"][0, -1]
    norm = hf.get_submodule(sites.final_norm)
    scale = 1 / math.sqrt(float(x.pow(2).mean()) + norm.variance_epsilon)
    w_u = hf.get_output_embeddings().weight
    u = (w_u[prep.target] - w_u[att.other]) * norm.weight * scale
    contrib = head_contributions(seen["z"][0, -1], o_proj.weight, sites.n_heads)  # [H, D]
    for h in range(sites.n_heads):
        assert d[f"L2.H{h}"] == pytest.approx(float(contrib[h] @ u), abs=1e-4)
    assert d["L2.o_bias"] == pytest.approx(float(o_proj.bias @ u), abs=1e-4) and abs(d["L2.o_bias"]) > 1e-3


def test_remote_local_gives_the_same_scores(setup):
    lm, sae = setup
    prep = prepare(lm, _episode())
    cf_ids, cf_ivs, _ = counterfactual(prep, "detectors_ablated", sae_layer=LAYER)
    args = {"metric": restart_metric(prep, lm.tokenizer), "sae": sae}
    local, _ = attribution_patching(lm, prep, cf_ids, cf_ivs, **args)
    remote, _ = attribution_patching(lm, prep, cf_ids, cf_ivs, remote="local", **args)
    assert local.atp.keys() == remote.atp.keys()
    for k, v in local.atp.items():
        assert remote.atp[k] == pytest.approx(v, abs=1e-5)
    assert remote.dla["total"] == pytest.approx(local.dla["total"], abs=1e-5)


def test_integrated_gradients_complete_along_the_path(setup):
    lm, sae = setup
    node = SaeNode.of(sae, LAYER)
    prep = prepare(lm, _episode())
    cf_ids, cf_ivs, _ = counterfactual(prep, "steering_off")
    _, state = attribution_patching(lm, prep, cf_ids, cf_ivs, metric=restart_metric(prep, lm.tokenizer), sae=sae)
    ig = integrated_gradients(lm, prep, state, ["2:mlp_out", f"{LAYER}:block_out"], steps=32, sae=sae, node=node,
                              top_latents=None)
    effects = activation_patching(lm, prep, state, [["L2.mlp"], [f"L{LAYER}.block"]], sae=sae)
    # completeness: IG of a whole site = the effect of patching it (midpoint rule, 32 steps)
    assert ig["L2.mlp"] == pytest.approx(effects[0], rel=0.02, abs=1e-3)
    assert ig[f"L{LAYER}.block"] == pytest.approx(effects[1], rel=0.02, abs=1e-3)
    parts = sum(v for k, v in ig.items() if k.startswith("latent:") or k == "sae_error")
    assert parts == pytest.approx(ig[f"L{LAYER}.block"], rel=1e-3, abs=1e-4)


def test_detector_metric_gradients_stop_at_the_read_layer(setup):
    from esr_analysis.mechanisms.attribution.inputs import detector_metric

    lm, sae = setup
    prep = prepare(lm, _episode())
    m = detector_metric(prep, sae, LAYER, [5, 7], window=4)
    cf_ids, cf_ivs, _ = counterfactual(prep, "steering_off")
    att, _ = attribution_patching(lm, prep, cf_ids, cf_ivs, metric=m, sae=sae)
    assert not att.dla and "L2.mlp" not in att.atp and "L0.H0" in att.atp
    # the metric independently: pre-activations of the detectors on the steered residual
    hf = hf_module(lm)
    _, v, _ = _hook_run(hf, prep.ids, STRENGTH * sae.W_dec[LAT].detach(), {"target": 0, "other": 1}, grads=False)
    x = v[f"{LAYER}:block_out"][0, -4:]
    pre = (x - sae.b_dec) @ sae.W_enc[:, [5, 7]] + sae.b_enc[[5, 7]]
    assert att.metric_clean == pytest.approx(float(pre.sum()), abs=1e-4)


def test_restart_words_are_opening_words_of_the_judges_restart_language():
    """RESTART_WORDS (token exclusions) stays inside esr_analysis.judge.restart's vocabulary (the definition)."""
    import re

    from esr_analysis.judge.restart import RESTART_PATTERNS, WEAK_PATTERNS
    from esr_analysis.mechanisms.attribution.inputs import RESTART_WORDS

    patterns = RESTART_PATTERNS + WEAK_PATTERNS
    outside = [w for w in RESTART_WORDS
               if not any(re.search(rf"(?<![a-z]){w.lower()}(?![a-z])", p) for p in patterns)]
    assert outside == []


def test_loader_and_counterfactual_records(tmp_path, setup):
    lm, _ = setup
    rows = [_episode().__dict__ | {"extra": None}, {"prompt": "p", "response": "ab. Wait, no. cd", "correction_char": 4}]
    rows = [{k: v for k, v in r.items() if k != "extra"} for r in rows]
    (tmp_path / "e.json").write_text(json.dumps(rows))
    (tmp_path / "e.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    a, b = load_episodes(tmp_path / "e.json"), load_episodes(tmp_path / "e.jsonl")
    assert [e.id for e in a] == [e.id for e in b] == ["e0", "1"]
    prep = prepare(lm, a[1])
    assert lm.tokenizer.decode([prep.target]).strip().startswith("W")
    with pytest.raises(ConfigError, match="offtopic_char"):
        counterfactual(prep, "ontopic_span", tok=lm.tokenizer)
    with pytest.raises(ConfigError, match="detector"):
        counterfactual(prep, "detectors_ablated", sae_layer=1)
    with pytest.raises(ConfigError):
        RecoveryPoint.from_dict({"prompt": "p", "response": "abc", "correction_char": 0})


def test_study_script_writes_the_summary(tmp_path):
    """scripts/attribution_study.py --tiny: the issue's keys, intervals that bracket their means, the command, and
    a resumed run that recomputes nothing."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("attribution_study", root / "scripts" / "attribution_study.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = []
    for i, prompt in enumerate(("Why is the sky blue?", "How does rain form?", "What is a cloud?")):
        ep = _episode(id=f"e{i}", prompt=prompt)
        rows.append({k: v for k, v in ep.__dict__.items() if k != "extra"})
    eps = tmp_path / "eps.json"
    eps.write_text(json.dumps(rows))
    out = tmp_path / "attribution_tiny.json"
    res = mod.main([str(eps), "--tiny", "--top-k", "6", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["n_episodes"] == 3 and set(res) <= set(saved)
    for key in ("top10_patch_effect", "random10_patch_effect"):
        mean, lo, hi = saved[key]
        assert lo <= mean <= hi
    assert -1 <= saved["atp_vs_patching_spearman"] <= 1
    assert saved["top_components"] and all("atp" in c for c in saved["top_components"])
    assert "--tiny" in saved["command"] and saved["choices"]["counterfactuals"][0] == "steering_off"
    records = out.with_suffix(".records.jsonl").read_text().splitlines()
    assert len(records) == 3
    mod.main([str(eps), "--tiny", "--top-k", "6", "--out", str(out)])
    assert out.with_suffix(".records.jsonl").read_text().splitlines() == records
    # --detectors replaces the stored detectors for every episode and is recorded; an empty list is refused
    out2 = tmp_path / "attribution_tiny_detectors.json"
    mod.main([str(eps), "--tiny", "--top-k", "4", "--metric", "detectors", "--detectors", "3,5,7",
              "--counterfactuals", "steering_off", "detectors_ablated", "--out", str(out2)])
    saved2 = json.loads(out2.read_text())
    assert saved2["choices"]["detectors"] == "3,5,7" and saved2["choices"]["metric"] == "detectors"
    recs2 = [json.loads(r) for r in out2.with_suffix(".records.jsonl").read_text().splitlines()]
    assert len(recs2) == 3 and all("detectors_ablated" in json.dumps(r) for r in recs2)
    with pytest.raises(ConfigError, match="names no latent"):
        mod.main([str(eps), "--tiny", "--detectors", ",", "--out", str(tmp_path / "x.json")])


def test_recovery_points_from_trial_episodes_round_trip_and_count_unclear(tmp_path):
    from esr_analysis.mechanisms.attribution.inputs import (
        load_episodes,
        recovery_points,
        write_recovery_points,
    )
    from esr_analysis.mechanisms.boundaries import Boundaries
    from esr_analysis.mechanisms.episodes import Episode

    text = "Stars burn hydrogen. Wait, that's not right. Knead the dough for ten minutes."
    c = text.index("Wait")
    eps = [Episode(episode_id=f"e{i}", kind="recovery", prompt="How do I bake bread?", response=text, model="m",
                   seed=i, interventions=[{"kind": "add_latent", "latent": 3, "strength": 2.0, "layer": 1}],
                   latent=3, scores=[10.0, 90.0]) for i in range(2)]
    bounds = [Boundaries(off_topic=0, correction=c, on_topic=text.index("Knead"), source="offline"),
              Boundaries(off_topic=-1, correction=-1, on_topic=-1, source="offline")]
    points, dropped = recovery_points(eps, bounds, detectors=[5, 7])
    assert dropped == {"correction_unclear": 1} and len(points) == 1
    p = points[0]
    assert (p.correction_char, p.offtopic_char, p.ontopic_char, p.detectors, p.id) == (
        c, 0, text.index("Knead"), [5, 7], "e0")
    back = load_episodes(write_recovery_points(tmp_path / "r.jsonl", points))
    assert [(b.prompt, b.response, b.correction_char, b.interventions, b.extra["latent"]) for b in back] == [
        (p.prompt, p.response, c, p.interventions, 3)]
    with pytest.raises(ValueError, match="boundaries"):
        recovery_points(eps, bounds[:1])
    # a trial's stored record (resolved: strength in every unit, provenance fields) becomes a replayable spec
    stored = {"kind": "add_latent", "layer": 1, "scope": "all", "latent": 3, "latents": None, "vector_name": None,
              "unit": "relative", "strength_given": 0.8, "strength_sae": 17.5, "strength_relative": 0.8,
              "delta_norm": 16.0, "median_residual_norm": 20.0, "sae": "random:96:1"}
    real = [Episode(episode_id="r", kind="recovery", prompt="How do I bake bread?", response=text, model="m", seed=0,
                    interventions=[stored], latent=3, scores=[10.0, 90.0])]
    (q,), _ = recovery_points(real, bounds[:1])
    (iv,) = load_episodes(write_recovery_points(tmp_path / "s.jsonl", [q]))[0].parsed_interventions()
    assert (iv.latent, iv.layer, iv.strength, iv.unit) == (3, 1, 17.5, "sae")
    # an episode file that keeps the resolved record itself (as the committed organism episodes do) parses too
    raw = RecoveryPoint.from_dict({"prompt": "p", "response": text, "correction_char": 4, "interventions": [stored]})
    (iv2,) = raw.parsed_interventions()
    assert (iv2.latent, iv2.strength, iv2.unit) == (3, 17.5, "sae")


def _synthetic_records(seed: int, ids: list[str], noise: float, base: dict[str, float] | None = None):
    import numpy as np

    rng = np.random.default_rng(seed)
    sites = [f"L{layer}.H{h}" for layer in range(3) for h in range(4)] + [f"L{layer}.mlp" for layer in range(3)]
    sites += ["sae_error", "latent:5", "L2.block"]
    recs = []
    for j, i in enumerate(ids):
        own = {n: float(rng.normal()) for n in sites} if base is None else {
            n: base[i][n] + noise * float(rng.normal()) for n in sites}
        recs.append({"id": i, "metric": "restart", "target_token": " Wait", "counterfactuals": [
            {"kind": "steering_off", "atp": own, "metric_clean": 1.0 + j, "metric_cf": 0.5,
             "top10_patch_effect": 0.2, "random10_patch_effect": 0.0}]})
    return recs


def test_comparison_of_two_models_matches_a_plain_numpy_computation():
    import numpy as np
    from scipy.stats import spearmanr

    from esr_analysis.mechanisms.attribution.compare import compare_records, top_k_overlap
    from esr_analysis.mechanisms.detectors import derangements

    ids = [f"e{i}" for i in range(6)]
    a = _synthetic_records(0, ids, 0.0)
    b = _synthetic_records(1, ids, 0.3, base={r["id"]: r["counterfactuals"][0]["atp"] for r in a})
    b.append({"id": "only-b", "metric": "restart", "counterfactuals": [{"kind": "steering_off", "skipped": "x"}]})
    out = compare_records(a, b, k=5, seed=3, names=("organism", "base"))
    comp = [n for n in a[0]["counterfactuals"][0]["atp"] if n not in ("latent:5", "L2.block")]
    assert out["n_sites"] == len(comp) == 16 and out["chance_overlap"] == 5 / 16
    assert out["n_episodes"] == 6 and out["excluded"] == ["only-b"]
    perm = derangements(6, 1, 3)[0]  # the control's derangement
    assert all(p != i for i, p in enumerate(perm)) and sorted(perm) == list(range(6))

    def plain(x, y):
        va = np.array([x[n] for n in sorted(comp)])
        vb = np.array([y[n] for n in sorted(comp)])
        ta, tb = set(np.argsort(-np.abs(va))[:5]), set(np.argsort(-np.abs(vb))[:5])
        return len(ta & tb) / 5, spearmanr(va, vb).statistic

    atp = {r["id"]: r["counterfactuals"][0]["atp"] for r in a}
    atp_b = {r["id"]: r["counterfactuals"][0]["atp"] for r in b[:6]}
    matched = [plain(atp[i], atp_b[i]) for i in ids]
    control = [plain(atp[i], atp_b[ids[perm[j]]]) for j, i in enumerate(ids)]
    assert out["top_k_overlap"]["matched"][0] == pytest.approx(np.mean([m[0] for m in matched]))
    assert out["rank_agreement"]["matched"][0] == pytest.approx(np.mean([m[1] for m in matched]))
    assert out["rank_agreement"]["control"][0] == pytest.approx(np.mean([c[1] for c in control]))
    lo, hi = out["rank_agreement"]["matched"][1:]
    assert lo <= out["rank_agreement"]["matched"][0] <= hi
    # a noisy copy agrees with its own episode far better than with another episode
    assert out["rank_agreement"]["matched_minus_control"][1] > 0
    assert out["per_model"]["organism"]["metric_clean"][0] == pytest.approx(3.5)
    assert [s["site"] for s in out["top_sites_of_organism"]][:1] == [
        max(comp, key=lambda n: abs(np.mean([atp[i][n] for i in ids])))]
    assert top_k_overlap(atp["e0"], atp["e0"], 16) == 1.0


def test_comparison_refuses_unlike_records():
    from esr_analysis.mechanisms.attribution.compare import compare_records, top_k_overlap

    ids = ["e0", "e1", "e2"]
    a = _synthetic_records(0, ids, 0.0)
    b = _synthetic_records(1, ids, 0.0)
    for r in b:
        r["metric"] = "detectors"
    for c in b[0]["counterfactuals"]:
        c["metric"] = "detectors"
    with pytest.raises(ConfigError, match="different metrics"):
        compare_records(a, b)
    with pytest.raises(ConfigError, match="episodes in common"):
        compare_records(a[:1], _synthetic_records(1, ids, 0.0)[:1])
    with pytest.raises(ConfigError, match="k must be"):
        top_k_overlap(a[0]["counterfactuals"][0]["atp"], a[1]["counterfactuals"][0]["atp"], 17)
