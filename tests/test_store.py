"""Tests for esr_analysis.store: records, run directories (crash/resume), loaders, the authors' reader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from esr_analysis import metrics
from esr_analysis import store as s
from esr_analysis.store import run as run_module

REPO = Path(__file__).resolve().parents[1]
AUTHORS_SAMPLE = REPO / "tests" / "data" / "authors_results_sample.json"


def manifest(**config) -> s.RunManifest:
    return s.RunManifest(
        experiment="unit", model_id="tiny-llama", dtype="float32", judge_id="offline", rubric_hash="r1",
        config=s.RunConfig(experiment="unit", **config),
    )


def make_trial(i: int, **kw) -> s.Trial:
    fields = {
        "experiment": "unit", "prompt": f"prompt {i}", "latent": i % 3, "latent_label": f"label {i % 3}",
        "boost": 7.5, "seed": i, "layers": s.Layers(steer=2, read=3),
        "interventions": [{"kind": "add_latent", "latent": i % 3, "strength": 7.5, "layer": 2, "scope": "all",
                           "unit": "sae"}],
    }
    fields.update(kw)
    return s.Trial(**fields)


def graded(t: s.Trial, scores, *, error=None) -> s.Trial:
    grade = {"attempts": [{"text": f"a{j}", "score": x} for j, x in enumerate(scores)], "raw_response": "r",
             "error": error, "judge_id": "offline", "rubric_hash": "r1"}
    return t.model_copy(update={"response": "an answer", "grade": grade, "output_ids": [1, 2, 3]})


# --------------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------------


def test_trial_id_is_a_content_key():
    a, b = make_trial(1), make_trial(1)
    assert a.trial_id == b.trial_id and a.trial_id.startswith("t-")
    assert make_trial(2).trial_id != a.trial_id
    assert make_trial(1, condition="ablation").trial_id != a.trial_id
    assert make_trial(1, key_extra={"replicate": 1}).trial_id != a.trial_id
    assert make_trial(1, boost=7).trial_id == make_trial(1, boost=7.0).trial_id
    # outputs and timestamps do not change identity
    assert graded(a, [10, 90]).trial_id == a.trial_id
    assert make_trial(1, meta={"note": "x"}, response="r").trial_id == a.trial_id
    assert s.Trial(experiment="e", prompt="p", trial_id="given").trial_id == "given"
    with pytest.raises(ValueError, match="non-key fields"):
        s.trial_key(response="x")


def test_trial_rejects_unknown_fields():
    with pytest.raises(ValueError):
        s.Trial(experiment="e", prompt="p", bogus=1)


def test_manifest_identity_and_collect():
    m1, m2 = manifest(n=1), manifest(n=2)
    assert m1.identity_diff(m2) == ["config"]
    later = m1.model_copy(update={"git_commit": "abc", "versions": {"torch": "9"}})
    assert m1.identity_diff(later) == []  # provenance is not identity
    collected = s.RunManifest.collect(model_id="m")
    assert collected.started_at is not None and "pydantic" in collected.versions and "python" in collected.versions
    assert s.RunManifest.collect(git_commit=None).git_commit is None


def test_requested_and_resolved_interventions_share_a_key():
    requested = {"kind": "add_latent", "latent": 4, "strength": 7, "layer": 2, "scope": "all", "unit": "sae"}
    resolved = {"kind": "add_latent", "latent": 4, "layer": 2, "scope": "all", "unit": "sae", "strength_given": 7.0,
                "strength_sae": 7.0, "delta_norm": 3.2, "median_residual_norm": 11.0, "sae": "x"}
    assert s.intervention_key(requested) == s.intervention_key(resolved)
    a = make_trial(1, interventions=[requested])
    assert make_trial(1, interventions=[resolved]).trial_id == a.trial_id
    assert make_trial(1, interventions=[dict(requested, strength=8)]).trial_id != a.trial_id
    abl = [{"kind": "ablate_latents", "latents": [9, 3], "layer": 2, "scope": "all"}]
    assert make_trial(1, interventions=abl).trial_id == make_trial(
        1, interventions=[dict(abl[0], latents=[3, 9], sae="s")]).trial_id


def test_trial_from_generation_duck_typed():
    class FakeIntervention:
        def model_dump(self, mode="python"):
            return {"kind": "add_latent", "latent": 5, "strength": 3.0, "layer": 4, "scope": "generated",
                    "unit": "relative"}

    gen = SimpleNamespace(prompt="p", chat_input="<u>p</u>", input_ids=[1, 2], output_ids=[3, 4], text="out",
                          seed=9, interventions=[FakeIntervention()],
                          settings=SimpleNamespace(model_dump=lambda mode="python": {"temperature": 0.6}))
    grade = {"attempts": [{"text": "out", "score": 50}], "raw_response": "x", "error": None}
    t = s.trial_from_generation(gen, experiment="exp1", grade=grade, latent_label="cats")
    assert (t.latent, t.boost, t.unit, t.scope, t.layers.steer) == (5, 3.0, "relative", "generated", 4)
    assert t.response == "out" and t.output_ids == [3, 4] and t.settings == {"temperature": 0.6}
    assert t.trial_id == make_trial(0, experiment="exp1", prompt="p", latent=5, boost=3.0, unit="relative",
                                    scope="generated", seed=9, layers=s.Layers(steer=4),
                                    interventions=t.interventions).trial_id
    failed = s.trial_from_generation(gen, experiment="exp1", grade={"raw_response": "?", "error": "bad json"})
    assert failed.error == "bad json"
    with pytest.raises(ValueError, match="spec= or experiment="):
        s.trial_from_generation(gen)


def test_trial_from_real_generation_result_and_grade(tmp_path):
    """The store takes the lead's GenerationResult and the judge's Grade without importing them."""
    from esr_analysis.judge.types import Attempt, Grade
    from esr_analysis.steering.interventions import AddLatent, ResolvedIntervention
    from esr_analysis.steering.results import GenerationResult
    from esr_analysis.steering.sampling import SamplingSettings

    request = AddLatent(latent=11, strength=2.5, layer=1)
    spec = s.Trial(experiment="exp1", prompt="How do I boil an egg?", latent=11, boost=2.5, seed=42,
                   layers=s.Layers(steer=1), interventions=[request.model_dump()])
    resolved = ResolvedIntervention(kind="add_latent", layer=1, scope="all", latent=11, unit="sae",
                                    strength_given=2.5, strength_sae=2.5, delta_norm=0.7, median_residual_norm=3.0)
    gen = GenerationResult(prompt=spec.prompt, chat_input="<chat>", input_ids=[1, 2, 3], output_ids=[4, 5],
                           text="Boil it. Wait, no: simmer it.", seed=42, interventions=[resolved],
                           settings=SamplingSettings(temperature=0.6), model="tiny", versions={},
                           stopped_by_eos=True)
    grade = Grade(attempts=[Attempt(text="Boil it.", score=20), Attempt(text="simmer it.", score=80)],
                  raw_response="<json>...</json>", judge_id="offline", rubric_hash="abc")
    t = s.trial_from_generation(gen, spec=spec, grade=grade)
    assert t.trial_id == spec.trial_id  # resuming skips it
    assert s.trial_from_generation(gen, experiment="exp1", grade=grade).trial_id == spec.trial_id
    assert t.interventions[0]["strength_sae"] == 2.5 and t.meta == {"model": "tiny", "stopped_by_eos": True}
    assert t.grade["attempts"][1] == {"text": "simmer it.", "score": 80.0} and t.settings["temperature"] == 0.6
    with s.open_run(tmp_path / "r", manifest()) as run:
        run.append(t)
    assert metrics.esr_rate(s.load_run(tmp_path / "r"), n_boot=0).count == 1
    with pytest.raises(ValueError, match="does not match"):
        s.trial_from_generation(gen, spec=spec.model_copy(update={"seed": 7}), grade=grade)


# --------------------------------------------------------------------------------------------------
# run directories
# --------------------------------------------------------------------------------------------------


def test_write_read_roundtrip_and_frame(tmp_path):
    d = tmp_path / "run"
    written = [graded(make_trial(0), [10, 90]), graded(make_trial(1), [40]),
               graded(make_trial(2), [55], error="judge: bad json"), make_trial(3)]
    with s.open_run(d, manifest(n=4)) as run:
        for t in written:
            run.append(t)
        assert run.n_trials == 4 and run.is_done(written[0].trial_id)
    assert sorted(p.name for p in d.iterdir()) == [".lock", "manifest.json", "trials.jsonl"]
    m = s.read_manifest(d)
    assert m.ended_at is not None and [h["event"] for h in m.history] == ["created", "closed"]

    trials, report = s.read_trials(d)
    assert trials == written and report.problems == []

    df = s.load_run(d)
    assert list(df["trial_id"]) == [t.trial_id for t in written]
    assert list(df["n_attempts"].astype(object).where(df["n_attempts"].notna(), None)) == [2, 1, 1, None]
    assert df.loc[0, "first_score"] == 10 and df.loc[0, "last_score"] == 90
    assert df.loc[2, "error"] == "judge: bad json" and not df.loc[3, "graded"]
    assert df.loc[0, "layer_steer"] == 2 and df.loc[0, "n_output_tokens"] == 3
    assert df.attrs["manifest"]["model_id"] == "tiny-llama"
    # metrics read the DataFrame and the records alike
    for name in metrics.SUMMARY_METRICS:
        a = metrics.estimate(df, name, exclude_degraded=False, n_boot=100, seed=0, confidence=0.95)
        b = metrics.estimate(trials, name, exclude_degraded=False, n_boot=100, seed=0, confidence=0.95)
        assert a == b
    esr = metrics.esr_rate(df, n_boot=100)
    assert (esr.count, esr.n, esr.excluded) == (1, 2, {"error": 1, "ungraded": 1})


def test_empty_run_loads_with_columns(tmp_path):
    with s.open_run(tmp_path / "r", manifest()):
        pass
    df = s.load_run(tmp_path / "r")
    assert len(df) == 0 and "first_score" in df.columns


def test_duplicates_refused(tmp_path):
    with s.open_run(tmp_path / "r", manifest()) as run:
        run.append(make_trial(0))
        with pytest.raises(s.DuplicateTrialError):
            run.append(make_trial(0))
    with s.open_run(tmp_path / "r", manifest()) as run, pytest.raises(s.DuplicateTrialError):
        run.append(make_trial(0).model_dump())


def test_resume_conflict_overwrite(tmp_path):
    d = tmp_path / "r"
    with s.open_run(d, manifest(n=3)) as run:
        for i in range(3):
            run.append(make_trial(i))
    later = manifest(n=3).model_copy(update={"git_commit": "newcommit"})
    with s.open_run(d, later) as run:
        assert run.done_ids() == {make_trial(i).trial_id for i in range(3)}
        assert run.manifest.git_commit is None  # the stored manifest is kept...
        assert run.manifest.history[-1]["git_commit"] == "newcommit"  # ...and the session is recorded
        run.append(make_trial(3))
    assert [h["event"] for h in s.read_manifest(d).history] == ["created", "closed", "resumed", "closed"]

    with pytest.raises(FileExistsError, match="resume=True"):
        s.open_run(d, manifest(n=3), resume=False)
    with pytest.raises(s.RunConflictError, match="config"):
        s.open_run(d, manifest(n=99))
    other_model = manifest(n=3).model_copy(update={"model_id": "other"})
    with pytest.raises(s.RunConflictError, match="model_id"):
        s.open_run(d, other_model)
    assert len(s.read_trials(d)[0]) == 4  # refusals changed nothing

    with s.open_run(d, manifest(n=99), overwrite=True) as run:
        assert run.done_ids() == frozenset()
    assert s.read_manifest(d).config.model_dump()["n"] == 99 and s.read_trials(d)[0] == []


def test_one_writer_at_a_time(tmp_path):
    d = tmp_path / "r"
    first = s.open_run(d, manifest())
    with pytest.raises(s.RunLockedError):
        s.open_run(d, manifest())
    first.close()
    s.open_run(d, manifest()).close()


def test_interrupted_session_is_recorded(tmp_path):
    d = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt), s.open_run(d, manifest()) as run:
        run.append(make_trial(0))
        raise KeyboardInterrupt
    m = s.read_manifest(d)
    assert m.ended_at is None and m.history[-1]["event"] == "interrupted"


def test_manifest_write_is_atomic(tmp_path, monkeypatch):
    d = tmp_path / "r"
    run = s.open_run(d, manifest())
    before = (d / "manifest.json").read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(run_module.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        run.close()
    assert (d / "manifest.json").read_bytes() == before
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_half_written_final_line_is_ignored_then_redone(tmp_path):
    d = tmp_path / "r"
    with s.open_run(d, manifest()) as run:
        run.append(make_trial(0))
        run.append(make_trial(1))
    half = make_trial(2).model_dump_json().encode()[:57]
    with open(d / "trials.jsonl", "ab") as fh:
        fh.write(half)

    with pytest.warns(UserWarning, match="truncated_final_line"):
        df = s.load_run(d)  # strict, but a cut-short final write is not corruption
    assert len(df) == 2
    assert df.attrs["load_report"].problems[0].line == 3

    with pytest.warns(UserWarning, match="unterminated final line"), s.open_run(d, manifest()) as run:
        assert run.repaired_bytes == len(half)
        assert run.done_ids() == {make_trial(0).trial_id, make_trial(1).trial_id}
        run.append(make_trial(2))
    trials, report = s.read_trials(d)
    assert [t.trial_id for t in trials] == [make_trial(i).trial_id for i in range(3)] and report.problems == []


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_corrupt_and_foreign_lines_are_reported_with_line_numbers(tmp_path):
    d = tmp_path / "r"
    with s.open_run(d, manifest()) as run:
        run.append(make_trial(0))
    good = (d / "trials.jsonl").read_text().strip()
    _write_lines(d / "trials.jsonl", [
        good,
        "{not json",
        json.dumps({"event": "something else"}),
        json.dumps({"kind": "esr.trial", "experiment": "x", "prompt": 5}),
        good,
        "",
        make_trial(1).model_dump_json(),
    ])
    with pytest.raises(s.RunFormatError) as info:
        s.load_run(d)
    msg = str(info.value)
    for lineno, kind in [(2, "invalid_json"), (3, "foreign"), (4, "invalid_trial"), (5, "duplicate_trial_id")]:
        assert f"trials.jsonl:{lineno}: {kind}" in msg
    assert "strict=False" in msg

    with pytest.warns(UserWarning, match="problem"):
        df = s.load_run(d, strict=False)
    assert len(df) == 2
    report = df.attrs["load_report"]
    assert [(p.line, p.kind) for p in report.problems] == [
        (2, "invalid_json"), (3, "foreign"), (4, "invalid_trial"), (5, "duplicate_trial_id"), (6, "blank_line"),
    ]
    assert "prompt" in report.problems[2].message

    # resuming a corrupt run refuses by default and leaves it unlocked
    with pytest.raises(s.RunFormatError):
        s.open_run(d, manifest())
    with pytest.warns(UserWarning), s.open_run(d, manifest(), strict=False) as run:
        assert len(run.report.fatal) == 4 and run.n_trials == 2


def test_trials_without_manifest_are_not_adopted(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "trials.jsonl").write_text(make_trial(0).model_dump_json() + "\n")
    with pytest.raises(s.RunFormatError, match="no manifest.json"):
        s.open_run(d, manifest())
    with pytest.raises(FileNotFoundError):
        s.load_run(tmp_path / "missing")


CHILD = """
import sys, time
from esr_analysis.store import RunConfig, RunManifest, Trial, open_run

run_dir, n, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
manifest = RunManifest(experiment="kill", model_id="tiny", config=RunConfig(experiment="kill", n=n))
with open_run(run_dir, manifest) as run:
    for i in range(n):
        spec = Trial(experiment="kill", prompt=f"prompt {i}", latent=i % 7, boost=1.5, seed=i)
        if run.is_done(spec.trial_id):
            continue
        grade = {"attempts": [{"text": "x", "score": i % 100}], "error": None}
        run.append(spec.model_copy(update={"response": "word " * 200, "grade": grade}))
        if delay:
            time.sleep(delay)
print("finished", run.n_appended, flush=True)
"""


def _n_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    n = 150
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    d = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(child), str(d), str(n), "0.01"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _n_lines(d / "trials.jsonl") < 15 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    at_kill = _n_lines(d / "trials.jsonl")
    assert 15 <= at_kill < n
    # the worst case a kill can leave: a line cut short mid-write
    with open(d / "trials.jsonl", "ab") as fh:
        fh.write(b'{"kind":"esr.trial","schema_version":1,"trial_id":"t-cut')

    done = subprocess.run([sys.executable, str(child), str(d), str(n), "0"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["finished", str(n - at_kill)]

    trials, report = s.read_trials(d)
    ids = [t.trial_id for t in trials]
    expected = {s.Trial(experiment="kill", prompt=f"prompt {i}", latent=i % 7, boost=1.5, seed=i).trial_id
                for i in range(n)}
    assert len(ids) == len(set(ids)) == n  # 0 duplicated
    assert set(ids) == expected  # 0 lost
    assert report.problems == []
    assert [h["event"] for h in s.read_manifest(d).history] == ["created", "resumed", "closed"]


# --------------------------------------------------------------------------------------------------
# the authors' result JSON
# --------------------------------------------------------------------------------------------------


def test_authors_reader_maps_fields():
    with pytest.warns(UserWarning, match="feature_error"):
        trials, report = s.read_authors_results(AUTHORS_SAMPLE)
    assert len(trials) == 6 and report.n_records == 6
    assert [(p.kind, p.where) for p in report.problems] == [("feature_error", "results_by_feature[2]")]
    t0 = trials[0]
    assert (t0.experiment, t0.condition, t0.latent, t0.boost, t0.unit, t0.seed) == (
        "authors", "steered", 101, 7.31, "sae", 4242)
    assert t0.latent_label == "Medieval castle architecture"
    assert t0.interventions == [{"kind": "add_latent", "latent": 101, "layer": None, "scope": "all", "unit": "sae",
                                 "strength_given": 7.31, "strength_sae": 7.31}]
    assert t0.grade["judge_id"] == "claude-haiku-4-5-20251001"
    assert [a["score"] for a in t0.grade["attempts"]] == [10, 85]
    assert t0.grade["attempts"][0]["text"].startswith("The keep")
    assert trials[2].error == "Failed to parse judge response as JSON"
    assert t0.meta["feature_threshold"] == 7.31 and t0.meta["model_name"] == "meta-llama/Meta-Llama-3.3-70B-Instruct"
    assert report.header["experiment_config"]["target_score_normalized"] == 0.3
    assert len({t.trial_id for t in trials}) == 6


def test_authors_schema_rescored_with_our_metrics():
    with pytest.warns(UserWarning):
        df = s.load_authors_results([AUTHORS_SAMPLE])
    assert set(df["model_name"]) == {"meta-llama/Meta-Llama-3.3-70B-Instruct"}
    assert set(df["source_file"]) == {AUTHORS_SAMPLE.name}
    table = metrics.summarize(df, n_boot=200).set_index("metric")
    assert table.loc["esr_rate", ["count", "n", "excluded"]].tolist() == [1, 4, 2]
    assert table.loc["esr_rate", "excluded_detail"] == "error=1, no_scored_attempts=1"
    assert table.loc["multi_attempt_rate", "value"] == pytest.approx(3 / 4)
    assert table.loc["improvement_rate", ["count", "n"]].tolist() == [1, 3]
    assert table.loc["mean_improvement", "value"] == pytest.approx((75 - 30 + 0) / 3)
    assert table.loc["first_attempt_score", "value"] == pytest.approx((10 + 40 + 60 + 20) / 4)
    assert table.loc["degraded_rate", "count"] == 1
    # the raw authors' trial dicts (``score`` key) give the same answer
    raw = [dict(t, latent=f["feature_index_in_sae"])
           for f in json.loads(AUTHORS_SAMPLE.read_text())["results_by_feature"] for t in f["trials"]]
    assert metrics.esr_rate(raw, n_boot=200) == metrics.esr_rate(df, n_boot=200)


def test_authors_conditions(tmp_path):
    doc = json.loads(AUTHORS_SAMPLE.read_text())
    doc["ablated_latents"] = [3675, 7517]
    doc["results_by_feature"] = doc["results_by_feature"][:1]
    p = tmp_path / "experiment_results_70b_20260101_000000_with_ablation.json"
    p.write_text(json.dumps(doc))
    trials, _ = s.read_authors_results(p)
    assert {t.condition for t in trials} == {"ablation"}
    assert trials[0].interventions[1] == {"kind": "ablate_latents", "latents": [3675, 7517], "layer": None,
                                          "scope": "all"}
    doc["experiment_config"]["disable_steering"] = True
    p.write_text(json.dumps(doc))
    trials, _ = s.read_authors_results(p)
    assert {t.condition for t in trials} == {"no_steering"}


def test_authors_boost_sweep_and_prompt_variant_files_are_their_own_conditions(tmp_path):
    """Exp 2 (multi-boost) and exp 5 (prompt-variant) files are not exp 1 'steered' trials and are not pooled."""
    doc = json.loads(AUTHORS_SAMPLE.read_text())
    boost = dict(doc, boost_levels=[0.0, 5.0, 10.0], n_boost_levels=3, boost_range_std=3.0,
                 threshold_cache_stats={"mean": 7.0, "std": 2.0})
    variant = dict(doc, experiment_config=dict(doc["experiment_config"], prompt_variant_id="self_monitor",
                                               prompt_variant_template="{prompt} Stay on track."),
                   experiment_metadata={"variant": "self_monitor"})
    paths = []
    for name, d in (("experiment_results_70b_20260101_000000.json", doc),
                    ("experiment_multi_boost_70b_20260101_000000.json", boost),
                    ("experiment_5_prompt_variants_70b_self_monitor_20260101_000000.json", variant)):
        p = tmp_path / name
        p.write_text(json.dumps(d))
        paths.append(p)
    with pytest.warns(UserWarning):
        conds = [{t.condition for t in s.read_authors_results(p)[0]} for p in paths]
    assert conds == [{"steered"}, {"multi_boost"}, {"prompt_variant:self_monitor"}]
    with pytest.warns(UserWarning):
        df = s.load_authors_results(paths)
    with pytest.raises(ValueError, match="mixes trials of different experiments/conditions"):
        metrics.summarize(df, by="model_name", n_boot=50)
    table = metrics.summarize(df, by=["model_name", "condition"], metrics=["esr_rate"], n_boot=50)
    assert list(table["condition"]) == ["steered", "multi_boost", "prompt_variant:self_monitor"]
    assert list(table["n"]) == [4, 4, 4]
    pooled = metrics.summarize(df, by="model_name", metrics=["esr_rate"], n_boot=50, pool_conditions=True)
    assert list(pooled["n"]) == [12]


def test_authors_reader_reports_bad_records(tmp_path):
    doc = json.loads(AUTHORS_SAMPLE.read_text())
    del doc["results_by_feature"][0]["trials"][1]["prompt"]
    doc["results_by_feature"][1]["trials"][0]["score"] = "oops"
    doc["results_by_feature"][1]["trials"][1]["seed"] = "not a seed"
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc, indent=1))
    with pytest.raises(s.RunFormatError) as info:
        s.read_authors_results(p)
    msg = str(info.value)
    assert "bad.json (results_by_feature[0].trials[1]): invalid_record: missing key 'prompt'" in msg
    assert "results_by_feature[1].trials[0]" in msg and "results_by_feature[1].trials[1]" in msg
    with pytest.warns(UserWarning):
        trials, report = s.read_authors_results(p, strict=False)
    assert len(trials) == 3 and len(report.fatal) == 3

    p.write_text('{"results_by_feature": [\n  {"trials": [}\n]}')
    with pytest.raises(s.RunFormatError, match=r"bad.json:2: invalid_json"):
        s.read_authors_results(p)
    p.write_text("[1, 2, 3]")
    with pytest.raises(s.RunFormatError, match="not an authors' result file"):
        s.read_authors_results(p)
