"""Experiment pipeline: prompts, bisection maths, selection, calibration, exp 1/8/2/5/7, resume, config errors.

Tiny random model + random SAE + a deterministic stub judge (fast, offline)."""

from __future__ import annotations

import hashlib
import json
import math
import random

import pytest

from esr_analysis.experiments import ProbabilisticBisection, find_root, load_config, load_prompts
from esr_analysis.experiments.config import PRESETS
from esr_analysis.judge.base import Judge
from esr_analysis.judge.types import Attempt, Grade, GradeRequest


class StubJudge(Judge):
    """Deterministic judge: first score from a hash of the response; a hash-chosen third of responses get a
    second, higher-scored attempt."""

    judge_id = "stub"
    rubric_hash = "stub-v1"
    uses_api = False

    async def grade_one(self, request: GradeRequest) -> Grade:
        h = int(hashlib.sha256(request.response.encode()).hexdigest()[:8], 16)
        s1 = float(h % 101)
        attempts = [Attempt(text=request.response[:20], score=s1)]
        if h % 3 == 0:
            attempts.append(Attempt(text="again", score=min(100.0, s1 + 10)))
        return Grade(attempts=attempts, judge_id=self.judge_id, rubric_hash=self.rubric_hash)


# ---------------------------------------------------------------------------------------------- prompts


def test_shipped_prompt_sets_are_disjoint_and_large_enough():
    esr, otd = load_prompts("esr"), load_prompts("otd_discovery")
    assert len(esr) >= 40 and len(otd) >= 20
    assert not set(esr) & set(otd)


def test_load_prompts_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_prompts(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# only a comment\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts(empty)
    f = tmp_path / "p.txt"
    f.write_text("A?\n\nB?\nA?\n")
    assert load_prompts(f) == ["A?", "B?"]


# ---------------------------------------------------------------------------------------------- bisection


def test_bisection_converges_on_noisy_monotone_function():
    root = 17.3

    def score(x: float, rng: random.Random) -> float:  # decreasing in x, 0.3 at the root, noisy
        p = 1 / (1 + math.exp((x - root) / 2.0 - math.log(0.3 / 0.7)))
        return min(1.0, max(0.0, p + rng.gauss(0, 0.08)))

    est, pb = find_root(score, n_steps=40, rng=random.Random(0), lower=0, upper=50, prior_mean=10, prior_std=10,
                        target=0.3, grid_size=5000)
    assert abs(est - root) < 2.5
    assert len(pb.history) == 40 and all(h.p >= 0.5 for h in pb.history)


def test_bisection_update_rules():
    pb = ProbabilisticBisection(lower=0, upper=10, prior_mean=5, prior_std=100, target=0.3, grid_size=101)
    m0 = pb.median()
    pb.update(m0, 0.9)  # high score: boost more, mass moves right
    assert pb.median() > m0
    pb2 = ProbabilisticBisection(lower=0, upper=10, prior_mean=5, prior_std=100, target=0.3, grid_size=101)
    pb2.update(m0, 0.0)
    assert pb2.median() < m0
    before = pb2.density.copy()
    pb2.update(3.0, None)  # no observation: unchanged, but logged
    assert (pb2.density == before).all() and pb2.history[-1].y is None
    with pytest.raises(ValueError):
        ProbabilisticBisection(lower=1, upper=0, prior_mean=0, prior_std=1, target=0.3)


# ---------------------------------------------------------------------------------------------- config


def test_presets_and_overrides():
    assert {"embedded-demo", "paper-llama-3.3-70b", "paper-llama-3.1-8b", "paper-gemma-2-2b", "paper-gemma-2-9b",
            "paper-gemma-2-27b"} <= set(PRESETS)
    c = load_config("paper-llama-3.3-70b", ["search.target=50", "repetition_penalty=1.1"])
    assert c.search.target == 50 and c.search.samples_per_step == 5 and c.repetition_penalty == 1.1
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("no-such-preset")
    with pytest.raises(ValueError, match="between 0 and 100"):
        load_config("embedded-demo", ["search.target=130"])
    with pytest.raises(ValueError, match="unknown experiments"):
        load_config("embedded-demo", ["experiments=[\"exp9\"]"])


def test_cli_bad_configs_exit_2(monkeypatch, capsys):
    from esr_analysis.cli import main

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert main(["run", "no-such-preset"]) == 2
    assert main(["run", "embedded-demo", "--set", "search.target=101"]) == 2
    assert main(["run", "embedded-demo", "--set", "judge=claude"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset" in err and "between 0 and 100" in err and "ANTHROPIC_API_KEY" in err


def test_bad_configs_fail_before_compute(monkeypatch, tiny_sae):
    from esr_analysis.errors import ConfigError
    from esr_analysis.experiments.session import preflight

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        preflight(load_config("embedded-demo", ["judge=claude"]), sae=tiny_sae)
    with pytest.raises(ConfigError, match="outside the SAE"):
        preflight(load_config("embedded-demo", ["selection.latents=[1, 5000000]", "sae=random:64"]))
    with pytest.raises(ConfigError, match="unknown model"):
        preflight(load_config("embedded-demo", ["model=not-a-model"]), judge=StubJudge())


# ---------------------------------------------------------------------------------------------- pipeline


def _tiny_session(tmp_path, tiny_sae, **over):
    from esr_analysis.experiments.session import open_session
    from esr_analysis.models.tiny import load_tiny

    model = load_tiny("llama")
    overrides = {"model": "tiny-llama", "n_prompts_per_latent": 2, "max_new_tokens": 6, "batch_size": 8,
                 "temperature": 0.6, "selection.n_latents": 3, "selection.relevance_rule": "none",
                 "search.n_steps": 2, "search.max_new_tokens": 4, "search.upper": 20, "search.prior_mean": 5,
                 "search.prior_std": 5, "search.grid_size": 200, "output_dir": str(tmp_path / "runs"),
                 # the stub judge's scores are hashes: whether a latent shows a fluent off-topic sample is chance
                 # (the drop rule has its own test, test_calibration_stays_in_the_fluent_regime)
                 "search.require_fluent_window": False,
                 "boost.n_levels": 3, "boost.multiples": [0.5, 1.0], "meta_variants": ["self_monitor"],
                 "cross_judge_samples": 4}
    overrides.update(over)
    cfg = load_config("embedded-demo", overrides)
    return open_session(cfg, model=model, sae=tiny_sae, judge=StubJudge(), cache_dir=tmp_path / "cache",
                        progress=False)


def test_selection_rules_report_removals(tmp_path, tiny_sae):
    from esr_analysis.experiments.selection import max_activations, select_latents

    s = _tiny_session(tmp_path, tiny_sae)
    prompts = s.prompts[:5]
    mx = max_activations(s.model, s.sae, prompts, list(range(96)), 1)
    assert tuple(mx.shape) == (5, 96)
    zero = select_latents(s.model, s.sae, prompts, n_latents=96, layer=1, latents=list(range(96)),
                          relevance_rule="zero")
    expected = [i for i in range(96) if not (mx[:, i] > 0).any()]
    assert zero.latents == expected and zero.removed["relevance_zero"] == 96 - len(expected)
    topk = select_latents(s.model, s.sae, prompts, n_latents=96, layer=1, latents=list(range(96)),
                          relevance_rule="topk", top_k=5)
    top = set(mx.topk(5, dim=1).indices.flatten().tolist())
    assert topk.latents == [i for i in range(96) if i not in top]
    assert all((mx[:, i] > 0).any() for i in top)  # a small k only ever removes firing latents


def test_topk_rule_keeps_latents_that_never_fire(tmp_path, tiny_sae):
    """With fewer than top_k active latents on a prompt, the never-firing ones tie at 0: they are not 'top'."""
    from esr_analysis.experiments.selection import max_activations, select_latents

    s = _tiny_session(tmp_path, tiny_sae)
    prompts = s.prompts[:5]
    mx = max_activations(s.model, s.sae, prompts, list(range(96)), 1)
    silent = [i for i in range(96) if not (mx[:, i] > 0).any()]
    assert silent and all(int((mx[p] > 0).sum()) < 96 for p in range(5))
    rep = select_latents(s.model, s.sae, prompts, n_latents=96, layer=1, latents=list(range(96)),
                         relevance_rule="topk", top_k=96)
    assert rep.latents == silent and rep.removed["relevance_topk"] == 96 - len(silent)


def test_selection_concreteness(tmp_path, tiny_sae):
    from esr_analysis.experiments.selection import select_latents

    s = _tiny_session(tmp_path, tiny_sae)
    prompts = s.prompts[:5]
    rnd = select_latents(s.model, s.sae, prompts, n_latents=4, layer=1, relevance_rule="none", seed=3,
                         concreteness_rater=lambda labels: [100.0 if i % 2 else 0.0 for i in range(len(labels))],
                         label=lambda i: f"topic {i}")
    assert rnd.removed["concreteness"] > 0 and len(rnd.latents) <= 4


def test_pipeline_end_to_end_resumes_and_hits_caches(tmp_path, tiny_sae):
    from esr_analysis.experiments.pipeline import run_pipeline
    from esr_analysis.experiments.report import report
    from esr_analysis.store import read_trials

    s = _tiny_session(tmp_path, tiny_sae, experiments=["exp1", "exp8", "exp2", "exp5"])
    res = run_pipeline(s.config, session=s, cache_dir=tmp_path / "cache")
    rd = res.run_dir
    assert len(res.latents) == 3 and set(res.thresholds) == set(res.latents)
    hist = json.loads((rd / "thresholds.json").read_text())
    assert all(len(v["history"]) == 2 for v in hist.values())
    exp1, _ = read_trials(rd / "exp1")
    exp8, _ = read_trials(rd / "exp8")
    assert len(exp1) == 6 and len(exp8) == 6
    assert {(t.latent, t.prompt, t.seed) for t in exp1} == {(t.latent, t.prompt, t.seed) for t in exp8}
    assert all(t.boost == res.thresholds[t.latent] for t in exp1) and all(not t.interventions for t in exp8)
    exp5, _ = read_trials(rd / "exp5")
    assert {t.condition for t in exp5} == {"baseline", "self_monitor"} and len(exp5) == 12
    exp2, _ = read_trials(rd / "exp2")
    assert {c.split(":")[0] for c in (t.condition for t in exp2)} == {"sigma", "multiple"}
    text = report(rd, n_boot=50)
    assert "esr_rate" in text and "== exp1 ==" in text

    from esr_analysis.cli import main

    assert main(["report", str(rd), "--n-boot", "50"]) == 0
    assert main(["figures", str(rd), "--out", str(tmp_path / "figs")]) == 0
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert any(n.startswith("fig2_esr") for n in names) and any(n.startswith("fig4_meta") for n in names)
    assert any(n.startswith("fig3_boost_sigma") for n in names)

    # a killed run: drop the last trials and a partial line; resume redoes exactly those
    p = rd / "exp1" / "trials.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:3]) + lines[3][:10])
    generated_before = s.stats["generated"]
    with pytest.warns(UserWarning, match="unterminated"):
        res2 = run_pipeline(s.config, session=s, cache_dir=tmp_path / "cache")
    exp1b, _ = read_trials(rd / "exp1")
    assert sorted(t.trial_id for t in exp1b) == sorted(t.trial_id for t in exp1)
    assert s.stats["generated"] == generated_before  # everything came from the generation cache
    assert res2.thresholds == res.thresholds


def test_retrained_sae_under_the_same_name_never_hits_old_caches(tmp_path, tiny_sae):
    """Caches and manifests key on the SAE's contents, not only on the string it was loaded from."""
    import copy

    import torch

    from esr_analysis.experiments.calibration import threshold_key
    from esr_analysis.experiments.trials import manifest_for

    tiny_sae.esr_source = "shipped:same-name"
    s = _tiny_session(tmp_path, tiny_sae)
    key_old, ident_old = threshold_key(s, 3), s.sae_identity
    row = ([s.prompts[0]], [[s.steer(3, 4.0)]], [0], s.settings())
    s.generate(*row)
    s.generate(*row)
    assert (s.stats["generated"], s.stats["gen_cached"]) == (1, 1)

    same = copy.deepcopy(tiny_sae)  # same weights, fresh object: same identity
    same.__dict__.pop("esr_fingerprint", None)
    retrained = copy.deepcopy(same)
    with torch.no_grad():
        retrained.W_dec[3, 0] += 1e-3
    s.sae = same
    assert s.sae_identity == ident_old and threshold_key(s, 3) == key_old
    s.sae = retrained
    assert s.sae_identity["source"] == "shipped:same-name" and s.sae_identity["sha256"] != ident_old["sha256"]
    assert threshold_key(s, 3) != key_old
    s.generate(*row)
    assert s.stats["generated"] == 2  # regenerated, not served from the old SAE's cache entry
    assert manifest_for(s, "exp1", {}).identity()["sae_source"] == s.sae_identity


_UNSET_VALUES = {"steer_layer": 1, "repetition_penalty": 1.3, "sae": "random:8", "system_prompt": "Be brief.",
                 "dtype": "float16"}


class _FakeGen:
    def __init__(self, text):
        self.text = text


class _RegimeSession:
    """A model-free session for calibration: fluent text whose judge score falls 3 points per boost unit, and
    degenerate loops above boost 30 that a fooled judge scores 50."""

    def __init__(self, config):
        self.config, self.prompts, self.progress = config, ["Explain how to boil an egg.", "How do you fold a shirt?"], False

    def settings(self, max_new_tokens=None):
        return None

    def steer(self, latent, boost):
        return boost

    def label(self, latent):
        return "money"

    def generate(self, prompts, interventions, seeds, settings):
        return [_FakeGen("be " * 40 if iv[0] > 30 else f"A fluent answer at boost {iv[0]:.3f} about costs and rent, "
                         "with several different words in it.") for iv in interventions]

    def grade(self, prompts, responses, labels):
        out = []
        for r in responses:
            score = 50.0 if r.startswith("be be") else max(0.0, 100.0 - 3.0 * float(r.split("boost ")[1].split()[0]))
            out.append(Grade(attempts=[Attempt(text=r[:10], score=score)], judge_id="fake", rubric_hash="fake"))
        return out


def test_calibration_stays_in_the_fluent_regime():
    """Degenerate samples are not scored as the judge scored them: the threshold lands where the fluent score
    crosses the target (100 - 3x = 30 at x = 23.3), not in the degenerate range the judge scores 50."""
    from esr_analysis.experiments.calibration import _step_score, calibrate

    assert _step_score([50.0, 20.0], [True, False], gate=True) == (0.2, None)
    assert _step_score([50.0], [True], gate=True)[0] == 0.0
    assert _step_score([50.0], [True], gate=False)[0] == 0.5
    over = {"search.n_steps": 25, "search.upper": 60, "search.prior_mean": 40, "search.prior_std": 20,
            "search.grid_size": 2000, "search.measure_achieved": True}
    gated = calibrate(_RegimeSession(load_config("embedded-demo", over)), [7])[7]
    assert 18 < gated.threshold < 29 and gated.fluent_window and gated.achieved_degenerate is False
    assert any(any(h["degenerate"]) for h in gated.history)
    naive = calibrate(_RegimeSession(load_config("embedded-demo", {**over, "search.fluency_gate": False})), [7])[7]
    assert naive.threshold > 30  # the judge's 50 on broken text pulls the ungated search into the collapse


def test_latent_without_a_fluent_offtopic_window_is_dropped_and_counted(tmp_path, tiny_sae):
    from esr_analysis.errors import ConfigError
    from esr_analysis.experiments.pipeline import run_pipeline

    s = _tiny_session(tmp_path, tiny_sae, **{"search.require_fluent_window": True, "search.target": 0.0})
    with pytest.raises(ConfigError, match="fluent off-topic window"):
        run_pipeline(s.config, session=s, cache_dir=tmp_path / "cache")  # no score is below a target of 0
    cal = json.loads(next((tmp_path / "runs").glob("*/calibration.json")).read_text())
    assert cal["removed"] == {"no_fluent_offtopic_window": 3} and cal["kept"] == []


def _changed(value, name=""):
    """A different valid value of the same type (for the threshold-key test)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 1.0
    if isinstance(value, str):
        return value + "-x"
    if value is None:
        return _UNSET_VALUES.get(name, "x")
    if isinstance(value, list):
        return [*value, "x"]
    raise TypeError(type(value))


def test_threshold_key_covers_every_field_that_changes_generation_or_grading(tmp_path, tiny_sae):
    """Defect: the key ignored llama_extra_header. Now every config field is keyed unless it is listed (with a
    reason) in THRESHOLD_KEY_IGNORES; changing any keyed field (top-level or in search) changes the key."""
    from esr_analysis.experiments.calibration import THRESHOLD_KEY_IGNORES, threshold_key
    from esr_analysis.experiments.config import ExperimentConfig, SearchConfig

    s = _tiny_session(tmp_path, tiny_sae)
    base = threshold_key(s, 3)
    cfg = s.config
    s.config = cfg.model_copy(update={"llama_extra_header": True})
    assert threshold_key(s, 3) != base
    assert set(THRESHOLD_KEY_IGNORES) < set(ExperimentConfig.model_fields)
    for name in ExperimentConfig.model_fields:
        if name in THRESHOLD_KEY_IGNORES or name == "search":
            continue
        s.config = cfg.model_copy(update={name: _changed(getattr(cfg, name), name)})
        assert threshold_key(s, 3) != base, name
    for name in SearchConfig.model_fields:
        if name == "measure_achieved":
            continue
        s.config = cfg.model_copy(update={"search": cfg.search.model_copy(update={name: _changed(
            getattr(cfg.search, name))})})
        assert threshold_key(s, 3) != base, f"search.{name}"
    s.config = cfg.model_copy(update={"batch_size": 3, "output_dir": "elsewhere"})
    assert threshold_key(s, 3) == base


def test_pipeline_never_writes_into_a_run_of_another_sae(tmp_path, tiny_sae):
    """Same config, re-trained SAE: explicit run_dir fails before writing; the default dir moves to <name>-2."""
    import copy

    import torch

    from esr_analysis.errors import ConfigError
    from esr_analysis.experiments.pipeline import run_pipeline

    tiny_sae.esr_source = "shipped:same-name"
    s = _tiny_session(tmp_path, tiny_sae, experiments=["exp1"])
    first = run_pipeline(s.config, session=s, cache_dir=tmp_path / "cache").run_dir
    before = {p.name: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    retrained = copy.deepcopy(tiny_sae)
    retrained.__dict__.pop("esr_fingerprint", None)
    with torch.no_grad():
        retrained.W_enc.mul_(1.5)
    s.sae = retrained
    with pytest.raises(ConfigError, match="different SAE"):
        run_pipeline(s.config, session=s, run_dir=first, cache_dir=tmp_path / "cache")
    second = run_pipeline(s.config, session=s, cache_dir=tmp_path / "cache").run_dir
    assert second.name == first.name + "-2"
    assert {p.name: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    # the same (config, SAE) resumes its own directory
    assert run_pipeline(s.config, session=s, cache_dir=tmp_path / "cache").run_dir == second


def test_exp7_agreement(tmp_path, tiny_sae):
    from esr_analysis.experiments.crossjudge import agreement
    from esr_analysis.experiments.pipeline import run_pipeline

    a = [[10.0], [20.0, 80.0], [50.0], None, [70.0, 30.0]]
    b = [[15.0], [30.0, 90.0], [40.0, 60.0], [1.0], [60.0, 20.0]]
    m = agreement(a, b)
    assert m["n"] == 4 and m["multi_attempt_agreement"] == 0.75 and m["esr_direction_agreement"] == 1.0
    assert m["attempt_count_confusion"] == {"1|1": 1, "1|2": 1, "2|2": 2}

    s = _tiny_session(tmp_path, tiny_sae, experiments=["exp7"])

    class Other(StubJudge):
        judge_id = "stub2"

    import esr_analysis.experiments.crossjudge as cj

    orig = cj.run_exp7
    cj.run_exp7 = lambda session, d, src: orig(session, d, src, judges=[Other()])
    try:
        res = run_pipeline(s.config, session=s, cache_dir=tmp_path / "cache")
    finally:
        cj.run_exp7 = orig
    table = json.loads((res.run_dir / "exp7_agreement.json").read_text())
    assert table["original vs stub2"]["multi_attempt_agreement"] == 1.0


def test_session_remote_local_matches_local(tmp_path, tiny_sae):
    """The pipeline's traces go through NDIF's serialisation when ``remote`` is set (here ``"local"``)."""
    from esr_analysis.experiments.selection import max_activations

    local = _tiny_session(tmp_path / "a", tiny_sae)
    remote = _tiny_session(tmp_path / "b", tiny_sae, remote="local")
    assert remote.config.remote == "local"
    prompts = local.prompts[:2]
    rows = [[local.steer(5, 3.0)], []]
    a = local.generate(prompts, rows, seeds=[1, 2], settings=local.settings())
    b = remote.generate(prompts, rows, seeds=[1, 2], settings=remote.settings())
    assert [g.output_ids for g in a] == [g.output_ids for g in b]
    mx_local = max_activations(local.model, local.sae, prompts, [1, 2, 3], 1)
    mx_remote = max_activations(remote.model, remote.sae, prompts, [1, 2, 3], 1, remote="local")
    assert mx_local.allclose(mx_remote, atol=1e-5)


def test_selection_read_is_chunked_by_bytes_and_ships_no_decoder(tmp_path, tiny_sae):
    import torch

    from esr_analysis.experiments.selection import latent_chunks, max_activations
    from esr_analysis.sae.sliced import SlicedSAE
    from esr_analysis.tracing.plans import LayerPlan

    assert latent_chunks(range(10), d_model=3, max_bytes=4 * 4 * 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert latent_chunks([5, 1], d_model=8192, max_bytes=1) == [[5], [1]]     # never an empty chunk
    with pytest.raises(ValueError, match="positive"):
        latent_chunks([1], d_model=4, max_bytes=0)
    s = _tiny_session(tmp_path, tiny_sae)
    d_model = int(tiny_sae.W_enc.shape[0])
    whole = max_activations(s.model, s.sae, s.prompts[:4], list(range(40)), 1)
    chunked = max_activations(s.model, s.sae, s.prompts[:4], list(range(40)), 1, max_read_bytes=7 * 4 * (d_model + 1))
    assert len(latent_chunks(range(40), d_model, 7 * 4 * (d_model + 1))) == 6
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    kernel = LayerPlan(layer=1, read=SlicedSAE.from_sae(tiny_sae, [1, 2]).params()).as_kernel()
    assert "W_dec" not in kernel["read"] and kernel["read"]["W_enc"].shape == (d_model, 2)
