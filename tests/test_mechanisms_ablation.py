"""Paired exp 3 / exp 10 replay on a tiny model: each ablated trial replays its exp 1 partner (same prompt, latent,
strength, seed) with the latents ablated at the steering layer; pairing survives a killed and resumed run; the
study steps end to end; errors before compute."""

from __future__ import annotations

import json

import pytest

from esr_analysis.mechanisms.ablation import (
    baseline_subset,
    load_paired,
    run_ablation,
    run_random_sets,
    source_trials,
)
from esr_analysis.store import read_trials


def test_subset_is_seeded_and_fixed(exp1_run):
    _, rd = exp1_run
    trials = source_trials(rd / "exp1")
    assert len(trials) == 9
    a = baseline_subset(trials, 5, seed=1)
    assert [t.trial_id for t in a] == [t.trial_id for t in baseline_subset(list(reversed(trials)), 5, seed=1)]
    assert len(a) == 5 and a == sorted(a, key=lambda t: t.trial_id)
    assert baseline_subset(trials, 5, seed=2) != a
    assert len(baseline_subset(trials, None, 0)) == 9 and len(baseline_subset(trials, 50, 0)) == 9


def test_ablation_replays_each_trial_with_the_latents_ablated(exp1_run):
    from esr_analysis.steering import AblateLatents, AddLatent, SamplingSettings, generate

    s, rd = exp1_run
    src = source_trials(rd / "exp1")
    out = run_ablation(s, rd / "exp3", src, [40, 7, 11])
    abl = load_paired(out)
    by_id = {t.trial_id: t for t in src}
    assert len(abl) == len(src) and {t.meta["source_trial"] for t in abl} == set(by_id)
    for t in abl:
        b = by_id[t.meta["source_trial"]]
        assert (t.prompt, t.latent, t.boost, t.seed, t.settings) == (b.prompt, b.latent, b.boost, b.seed, b.settings)
        assert t.condition == "detector_ablation" and t.layers.steer == t.layers.ablate == s.steer_layer
        kinds = {iv["kind"]: iv for iv in t.interventions}
        assert kinds["ablate_latents"]["latents"] == [7, 11, 40] and kinds["ablate_latents"]["layer"] == s.steer_layer
        assert kinds["add_latent"]["strength_sae"] == pytest.approx(b.boost)
    t = abl[0]
    st = SamplingSettings(**t.settings)
    ref = generate(s.model, [t.prompt], interventions=[AddLatent(latent=t.latent, strength=t.boost, layer=s.steer_layer),
                                                      AblateLatents(latents=(7, 11, 40), layer=s.steer_layer)],
                   sae=s.sae, settings=st, seeds=[t.seed], progress=False)[0]
    assert ref.output_ids == t.output_ids  # the stored text is the steered-and-ablated generation of that seed
    every = run_ablation(s, rd / "exp3-all", src, list(range(96)))  # ablating every latent is not a no-op
    assert any(t.output_ids != by_id[t.meta["source_trial"]].output_ids for t in load_paired(every))


def test_pairing_survives_a_killed_run_and_conflicting_subsets_are_refused(exp1_run):
    from esr_analysis.store import RunConflictError

    s, rd = exp1_run
    src = baseline_subset(source_trials(rd / "exp1"), 6, seed=0)
    run_ablation(s, rd / "exp3", src, [5, 6])
    first = {t.trial_id: t.meta["source_trial"] for t in load_paired(rd / "exp3")}
    p = rd / "exp3" / "trials.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:2]) + lines[2][:15])  # killed mid-write after two trials
    generated = s.stats["generated"]
    with pytest.warns(UserWarning, match="unterminated"):
        run_ablation(s, rd / "exp3", src, [5, 6])
    again = {t.trial_id: t.meta["source_trial"] for t in load_paired(rd / "exp3")}
    assert again == first and len(set(again.values())) == 6  # every source exactly once, same partners
    assert s.stats["generated"] == generated  # replayed from the generation cache: same rows, same seeds
    with pytest.raises(RunConflictError):
        run_ablation(s, rd / "exp3", src[:4], [5, 6])  # another subset never mixes into this run
    with pytest.raises(RunConflictError):
        run_ablation(s, rd / "exp3", src, [5, 7])


def test_random_sets_are_separate_paired_runs(exp1_run):
    s, rd = exp1_run
    src = baseline_subset(source_trials(rd / "exp1"), 4, seed=0)
    paths = run_random_sets(s, rd / "exp10", src, [[1, 2], [3, 4]], sampler={"seed": 0})
    assert [p.name for p in paths] == ["set-00", "set-01"]
    for i, p in enumerate(paths):
        ts = load_paired(p)
        assert {t.meta["source_trial"] for t in ts} == {t.trial_id for t in src}
        assert all(t.key_extra["set"] == i and t.condition == "random_ablation" for t in ts)


def test_bad_replays_fail_before_compute(exp1_run, monkeypatch):
    s, rd = exp1_run
    src = source_trials(rd / "exp1")

    def boom(*a, **k):
        raise AssertionError("compute started")

    monkeypatch.setattr(s, "generate", boom)
    with pytest.raises(ValueError, match="empty"):
        run_ablation(s, rd / "x", src, [])
    with pytest.raises(ValueError, match="out of range"):
        run_ablation(s, rd / "x", src, [3, 96])
    with pytest.raises(ValueError, match="no source"):
        run_ablation(s, rd / "x", [], [3])
    moved = [t.model_copy(update={"layers": t.layers.model_copy(update={"steer": 0})}) for t in src]
    with pytest.raises(ValueError, match="steered at layer 0"):
        run_ablation(s, rd / "x", moved, [3])
    with pytest.raises(ValueError, match="source trial"):
        load_paired(rd / "exp1")
    with pytest.raises(ValueError, match="no replayable"):
        source_trials([t.model_copy(update={"boost": None}) for t in src])
    graded_elsewhere = [t.model_copy(update={"grade": {**t.grade, "rubric_hash": "other"}}) for t in src]
    with pytest.raises(ValueError, match="regrade the run first"):
        run_ablation(s, rd / "x", graded_elsewhere, [3])
    assert not (rd / "x").exists()


def test_study_steps_end_to_end(exp1_run, tmp_path):
    from esr_analysis.mechanisms import detector_study as study

    s, rd = exp1_run
    det_file = tmp_path / "det" / "tiny.json"
    det_file.parent.mkdir()
    rec = study.discover_to_file(s.model, s.sae, det_file, model_name="tiny-llama", layer=1, n_prompts=4,
                                 max_new_tokens=5, rule="ranked", top_k=3, n_derangements=2, progress=False,
                                 command="test")
    assert len(rec["off_topic_detectors"]) == 3 and study.profile_path(det_file).is_file()
    study.ablate_step(s, rd, det_file, n_trials=5, subset_seed=3)
    rep = study.null_step(s, rd, det_file, n_sets=3, seed=1, n_trials=5, subset_seed=3)
    assert len(rep["random_sets"]) == 3 and all(not set(x) & set(rec["off_topic_detectors"]) for x in rep["random_sets"])
    out = tmp_path / "summary.json"
    summ = study.summarize_step(rd, det_file, n_boot=100, command="test", out=out)
    on_disk = json.loads(out.read_text())
    assert on_disk["random_sets"] == 3 and on_disk["n_detectors"] == 3 and on_disk["command"] == "test"
    assert summ["baseline"]["n"] == 5 and summ["detector_ablation"]["n"] == 5 and summ["subset"]["n"] == 5
    assert summ["subset"]["seed"] == 3 and summ["subset"]["n_subset_trials"] == 5
    assert summ["subset"]["n_source_trials"] == 9 == len(source_trials(rd / "exp1"))  # the pool drawn from
    assert rep["subset"] == summ["subset"] == summ["sampler"]["subset"]
    sampler = rd / "exp10" / "sampler.json"  # a sampler.json of the old form: subset size as n_source_trials
    old = json.loads(sampler.read_text())
    old["subset"] = {k: v for k, v in old["subset"].items() if k != "n_subset_trials"} | {"n_source_trials": 5}
    sampler.write_text(json.dumps(old))
    again = study.summarize_step(rd, det_file, n_boot=0)
    assert again["subset"] == summ["subset"] and again["sampler"]["subset"] == summ["subset"]
    assert len(read_trials(rd / "exp10" / "set-02")[0]) == 5
    from esr_analysis.plotting import fig5_detectors

    fig5_detectors(summ, tmp_path / "fig5.png")
    assert (tmp_path / "fig5.png").stat().st_size > 10_000


def test_thresholds_re_searched_under_ablation(exp1_run, tmp_path, monkeypatch):
    """--research-thresholds: the search generates with the detectors ablated (and keys its cache by them), the
    replay uses the new strength per latent with the source strength recorded, and the summary reports the
    re-searched ablation against the same source trials."""
    from esr_analysis.experiments import calibration
    from esr_analysis.mechanisms import detector_study as study

    s, rd = exp1_run
    det_file = tmp_path / "det.json"
    det_file.write_text(json.dumps({"off_topic_detectors": [7, 11, 40]}))
    assert calibration.threshold_key(s, 3) != calibration.threshold_key(s, 3, [40, 7, 11])
    assert calibration.threshold_key(s, 3, [7, 11, 40]) == calibration.threshold_key(s, 3, [40, 11, 7])
    seen: list = []
    real = s.generate

    def spy(prompts, interventions, seeds, settings):
        seen.extend(interventions)
        return real(prompts, interventions, seeds, settings)

    monkeypatch.setattr(s, "generate", spy)
    out = study.ablate_step(s, rd, det_file, n_trials=5, subset_seed=3, research_thresholds=True)
    assert out == rd / study.RESEARCHED_DIR
    thr = json.loads((out / "thresholds_under_ablation.json").read_text())["latents"]
    replayed = load_paired(out)
    src = {t.trial_id: t for t in source_trials(rd / "exp1")}
    assert len(replayed) == 5
    for t in replayed:
        b = src[t.meta["source_trial"]]
        assert t.boost == pytest.approx(thr[str(t.latent)]["under_ablation"])
        assert t.meta["source_boost"] == pytest.approx(b.boost) == pytest.approx(thr[str(t.latent)]["source"])
        assert (t.prompt, t.seed) == (b.prompt, b.seed)
    searched = [ivs for ivs in seen if len(ivs) == 2]
    assert searched and all(ivs[1].kind == "ablate_latents" and ivs[1].latents == (7, 11, 40) for ivs in searched)
    assert not (rd / "exp3").exists()  # the paired ablation at the source strengths is a separate run
    study.ablate_step(s, rd, det_file, n_trials=5, subset_seed=3)
    summ = study.summarize_step(rd, det_file, n_boot=50)
    res = summ["researched_thresholds"]
    assert res["baseline"]["n"] == res["detector_ablation"]["n"] == 5 and len(res["difference_ci"]) == 2
    assert set(res["thresholds"]["latents"]) == {str(t.latent) for t in replayed}


def test_cli_errors_exit_2_before_loading(tmp_path, capsys):
    from esr_analysis.cli import main

    assert main(["detectors", "ablate", str(tmp_path), "--detectors", "x.json"]) == 2
    assert "not a pipeline run directory" in capsys.readouterr().err
    assert main(["detectors", "discover", "--model", "qwen2.5-coder-0.5b-instruct", "--rule", "contrast",
                 "--out", "x.json"]) == 2
    assert "unknown rule" in capsys.readouterr().err
    assert main(["detectors", "discover", "--model", "no-such-model", "--out", "x.json"]) == 2


def test_cli_discover_passes_every_discovery_option(tmp_path, monkeypatch, capsys):
    """`esr detectors discover` on the tiny model: rule, fallback rule, top-k, min-off-fraction, temperature,
    batching, chunk and latents-per-pass reach the library, and the file equals the library's own."""
    import shlex

    import esr_analysis.mechanisms.detectors as detectors
    import esr_analysis.models.loaded_specs as loaded_specs
    import esr_analysis.models.loading as loading
    import esr_analysis.models.registry as registry
    from esr_analysis.cli import main
    from esr_analysis.experiments.session import load_sae_source
    from esr_analysis.mechanisms import detector_study as study
    from esr_analysis.models.tiny import TINY_HIDDEN, load_tiny

    model = load_tiny("llama")
    tiny = loaded_specs.remembered_spec(model)
    real_get_spec = registry.get_spec
    monkeypatch.setattr(registry, "get_spec", lambda name=None: tiny if name == tiny.name else real_get_spec(name))
    monkeypatch.setattr(loading, "load_model", lambda name, **kw: model)
    seen: dict = {}
    real_discover = detectors.discover

    def spy(*a, **kw):
        seen.update(kw)
        return real_discover(*a, **kw)

    monkeypatch.setattr(detectors, "discover", spy)
    out = tmp_path / "det.json"
    common = ["--model", tiny.name, "--sae", "random:96:0", "--n-prompts", "4", "--max-new-tokens", "5",
              "--temperature", "0.7", "--n-derangements", "2", "--top-k", "3", "--min-off-fraction", "0.9",
              "--batch-size", "3", "--seed", "1", "--no-progress"]
    argv = ["detectors", "discover", *common, "--rule", "zero_on_topic", "--fallback-rule", "ranked",
            "--chunk", "16", "--latents-per-pass", "40", "--out", str(out)]
    assert main(argv) == 0
    assert "fallback from zero_on_topic" in capsys.readouterr().out
    assert (seen["chunk"], seen["latents_per_pass"], seen["batch_size"], seen["n_derangements"], seen["seed"]) == \
        (16, 40, 3, 2, 1)
    assert (seen["settings"].temperature, seen["settings"].max_new_tokens, seen["layer"]) == (0.7, 5, tiny.read_layer)
    rec = json.loads(out.read_text())
    assert rec["command"] == "esr " + shlex.join(argv)
    assert rec["rule_params"]["min_off_fraction"] == 0.9 and rec["rule_params"]["top_k"] == 3
    assert rec["rules"]["zero_on_topic"]["n"] == 0  # selects nothing on the tiny model: the fallback is used
    assert rec["rule"] == "ranked" and rec["rule_fallback_from"] == "zero_on_topic"
    assert rec["off_topic_detectors"] == rec["rules"]["ranked"]["detectors"] != []
    ref = study.discover_to_file(model, load_sae_source("random:96:0", TINY_HIDDEN), tmp_path / "ref.json",
                                 model_name=tiny.name, layer=tiny.read_layer, n_prompts=4, max_new_tokens=5,
                                 temperature=0.7, rule="zero_on_topic", fallback_rule="ranked", top_k=3,
                                 min_off_fraction=0.9, n_derangements=2, seed=1, batch_size=3, progress=False)
    for key in ("off_topic_detectors", "rules", "rule", "rule_fallback_from", "normal_responses", "discovery"):
        assert rec[key] == ref[key], key
    assert main(["detectors", "discover", *common, "--fallback-rule", "contrast", "--out", str(out)]) == 2
    assert "unknown rule 'contrast' (--fallback-rule)" in capsys.readouterr().err
    for bad in (["--chunk", "0"], ["--latents-per-pass", "0"], ["--min-off-fraction", "1.5"]):
        assert main(["detectors", "discover", *common, *bad, "--out", str(out)]) == 2
        assert bad[0] in capsys.readouterr().err
