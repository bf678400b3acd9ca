"""The result files the docs and notebooks quote (``data/results/``): each says how it was made, and the
mechanism summaries have the shape their issues fix, with intervals that bracket their values."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parent.parent / "data" / "results"
ORGANISM = "qwen2.5-coder-0.5b-instruct-sc70v3"
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def _commands(obj: object) -> list[str]:
    """Every ``command`` string anywhere in ``obj``."""
    if isinstance(obj, dict):
        found = [obj["command"]] if isinstance(obj.get("command"), str) else []
        return found + [c for v in obj.values() for c in _commands(v)]
    if isinstance(obj, list):
        return [c for v in obj for c in _commands(v)]
    return []


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_result_records_a_runnable_command(path):
    """A command that names a script of this repository (or the ``esr`` CLI) and parses as a shell line."""
    commands = _commands(json.loads(path.read_text(encoding="utf-8")))
    assert commands, f"{path.name} records no command"
    for command in commands:
        words = shlex.split(command)
        scripts = [w for w in words if w.startswith("scripts/") and w.endswith(".py")]
        assert scripts or "esr" in words or any(w.endswith("esr_analysis") for w in words), command
        for script in scripts:
            assert (SCRIPTS.parent / script).is_file(), f"{path.name}: {script} does not exist"


def _interval(values: list[float]) -> None:
    mean, lo, hi = values
    assert lo <= mean + 1e-12 and mean <= hi + 1e-12, values


def _metrics(m: dict) -> None:
    assert m["n"] > 0
    for rate, ci in (("multi_attempt_rate", "multi_attempt_ci"), ("esr_rate", "esr_ci")):
        lo, hi = m[ci]
        assert 0.0 <= lo <= m[rate] <= hi <= 1.0


@pytest.mark.parametrize("path", sorted(RESULTS.glob("detectors_*.json")), ids=lambda p: p.name)
def test_detector_summaries_have_the_issue_schema(path):
    d = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(d["rule"], str) and d["n_detectors"] >= 1
    _metrics(d["baseline"])
    _metrics(d["detector_ablation"])
    assert d["random_sets"] == len(d["random_multi_attempt_rates"]) >= 20
    assert all(0.0 <= r <= 1.0 for r in d["random_multi_attempt_rates"])
    assert 0.0 <= d["detector_percentile"] <= 100.0
    lo, hi = d["difference_ci"]
    assert -1.0 <= lo <= hi <= 1.0


def test_organism_anatomy_summary():
    """>= 30 episodes; region means and tests for both replays; paired tests count at most the episodes; the
    correlation-found latents are tested on episodes that did not choose them."""
    d = _load(f"anatomy_{ORGANISM}.json")
    assert d["n_episodes"] >= 30 and d["n_baseline"] > 0
    assert d["n_episodes"] + d["n_unclear"] == d["n_recoveries_found"]
    assert sum(e["valid"] for e in d["episodes"]) == d["n_episodes"]
    assert set(d["region_means"]) == set(d["tests"]) == {"steering_off", "steering_on"}
    sel = d["backtracking_corr_selection"]
    assert not sel["circular"] and not set(sel["select_episode_ids"]) & set(sel["test_episode_ids"])
    assert sel["n_select"] + sel["n_test"] == d["n_episodes"]
    for cond, tests in d["tests"].items():
        for group, t in tests.items():
            paired = t["before_gt_after"]
            limit = sel["n_test"] if group == "backtracking_corr" else d["n_episodes"]
            assert paired["n"] + paired["n_dropped"] <= limit, (cond, group)
            assert paired["p"] is None or 0.0 <= paired["p"] <= 1.0
    assert "--detectors" in d["command"] and "ranked26" in d["command"]


@pytest.mark.parametrize("path", sorted(RESULTS.glob("attribution_*.json")), ids=lambda p: p.name)
def test_attribution_summaries_have_the_issue_schema(path):
    d = json.loads(path.read_text(encoding="utf-8"))
    if path.name.endswith("_detectors_null.json"):  # the matched control of the detectors-ablated counterfactual
        assert d["n_episodes"] == len(d["rows"]) >= 20 and d["n_random_sets"] == len(d["random_sets"]) >= 20
        assert all(len(s) == len(d["detectors"]) for s in d["random_sets"])
        _interval(d["detector_effect"])
        _interval(d["difference_vs_random"])
        assert 0.0 <= d["detector_percentile"] <= 100.0
        return
    if "top_components" not in d:  # the base-vs-organism comparison has its own schema
        assert d["n_episodes"] >= 20 and d["models"]
        return
    assert d["n_episodes"] >= 10 and d["top_components"]
    assert all({"site", "kind", "atp"} <= set(c) for c in d["top_components"])
    rho = d["atp_vs_patching_spearman"]
    assert rho is None or (isinstance(rho, float) and (math.isnan(rho) or -1.0 <= rho <= 1.0))
    for key in ("top10_patch_effect", "random10_patch_effect"):
        _interval(d[key])
    records = path.with_suffix(".records.jsonl")
    if records.exists():
        ids = {json.loads(line)["id"] for line in records.read_text(encoding="utf-8").splitlines() if line}
        assert len(ids) >= d["n_episodes"]
