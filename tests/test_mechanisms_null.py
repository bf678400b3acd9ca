"""The matched random null: the sampler's matching (caliper, dead latents and detectors excluded, seeded), the
percentile, the paired latent-clustered bootstrap against a loop implementation, and the summary's schema."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from esr_analysis.mechanisms.null import (
    detector_summary,
    latent_profile,
    matched_random_sets,
    paired_arms,
    paired_difference,
    percentile_of,
)
from esr_analysis.store import Trial


def _profile(n=300, seed=0, norms=False):
    rng = random.Random(seed)
    dens = [10 ** rng.uniform(-4, -0.5) for _ in range(n)]
    mean = [10 ** rng.uniform(-1, 1) for _ in range(n)]
    for j in range(0, n, 7):
        dens[j] = 0.0  # dead
        mean[j] = 0.0
    return {"latents": list(range(1000, 1000 + n)), "density": dens, "mean_active": mean,
            "decoder_norm": [10 ** rng.uniform(-0.5, 0.5) for _ in range(n)] if norms else None}


@pytest.mark.parametrize("norms", [False, True])
def test_matched_sets_are_within_caliper_and_exclude_dead_latents_and_detectors(norms):
    prof = _profile(norms=norms)
    pos = {lat: j for j, lat in enumerate(prof["latents"])}
    dets = [1001, 1010, 1023, 1050, 1100, 1201]
    excluded = [1002, 1003]
    sets, rep = matched_random_sets(prof, dets, 20, seed=4, caliper=0.3, exclude=excluded)
    assert len(sets) == 20 and sets == matched_random_sets(prof, dets, 20, seed=4, caliper=0.3, exclude=excluded)[0]
    assert len({tuple(s) for s in sets}) > 1
    keys = ["density", "mean_active"] + (["decoder_norm"] if norms else [])
    assert rep["matched_on"] == keys
    for s, info in zip(sets, rep["sets"], strict=True):
        assert len(s) == len(dets) == len(set(s))
        assert not set(s) & set(dets) and not set(s) & set(excluded)
        assert all(prof["density"][pos[x]] > 0 for x in s)  # never a dead latent
        assert sorted(m for _, m in info["pairs"]) == s and sorted(d for d, _ in info["pairs"]) == sorted(dets)
        if info["widened"] == 0:
            for d, m in info["pairs"]:
                for k in keys:
                    gap = abs(math.log10(prof[k][pos[d]]) - math.log10(prof[k][pos[m]]))
                    assert gap <= 0.3 + 1e-12
    assert sum(i["widened"] for i in rep["sets"]) == 0  # 300 latents: every detector has neighbours
    assert matched_random_sets(prof, dets, 3, seed=5)[0] != matched_random_sets(prof, dets, 3, seed=4)[0]


def test_isolated_detector_widens_the_caliper_and_errors():
    prof = _profile(n=60)
    prof["density"][1] = 0.9
    prof["mean_active"][1] = 500.0  # far from every other latent
    sets, rep = matched_random_sets(prof, [1001], 2, seed=0, caliper=0.05)
    assert all(i["widened"] > 0 for i in rep["sets"]) and all(len(s) == 1 for s in sets)
    with pytest.raises(ValueError, match="no profile"):
        matched_random_sets(prof, [5], 1, seed=0)
    with pytest.raises(ValueError, match="never fire"):
        matched_random_sets(prof, [1000], 1, seed=0)  # latent 1000 is dead
    with pytest.raises(ValueError, match="n_sets"):
        matched_random_sets(prof, [1001], 0, seed=0)
    with pytest.raises(ValueError, match="eligible"):
        matched_random_sets(prof, [1001], 1, seed=0, exclude=prof["latents"])


def test_latent_profile_from_discovery_statistics(tiny_sae):
    import torch

    from esr_analysis.mechanisms.detectors import DiscoveryStats

    s = DiscoveryStats.empty([2, 5, 9])
    s.positions = 10
    s.fire_count = torch.tensor([0.0, 4.0, 10.0], dtype=torch.float64)
    s.act_sum = torch.tensor([0.0, 2.0, 30.0], dtype=torch.float64)
    p = latent_profile(s, tiny_sae)
    assert p["latents"] == [2, 5, 9] and p["density"] == [0.0, 0.4, 1.0] and p["mean_active"] == [0.0, 0.5, 3.0]
    assert p["decoder_norm"] is not None and len(p["decoder_norm"]) == 3
    with torch.no_grad():
        tiny_sae.W_dec.copy_(tiny_sae.W_dec / tiny_sae.W_dec.norm(dim=-1, keepdim=True))
    assert latent_profile(s, tiny_sae)["decoder_norm"] is None  # unit-norm decoders: nothing to match


def test_percentile():
    assert percentile_of(0.05, [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert percentile_of(0.2, [0.1, 0.2, 0.3, 0.4]) == 37.5
    assert percentile_of(0.5, [0.1, 0.2]) == 100.0
    assert math.isnan(percentile_of(0.1, []))


def _trial(i, latent, scores, *, exp="exp1", source=None, cond="steered", error=None):
    grade = {"attempts": [{"text": "a", "score": s} for s in scores], "judge_id": "stub", "rubric_hash": "h"}
    meta = {"source_trial": source} if source else {}
    return Trial(experiment=exp, condition=cond, prompt=f"p{i}", latent=latent, boost=1.0, seed=i,
                 trial_id=f"{exp}-{i}-{source}", grade=None if error else grade, error=error, meta=meta,
                 interventions=[{"kind": "ablate_latents", "latents": [7, 8, 9], "layer": 1}] if source else [])


def _arm(base, pattern, exp, seed):
    rng = random.Random(seed)
    return [_trial(i, t.latent, [30, 60] if rng.random() < pattern else [30], exp=exp, source=t.trial_id)
            for i, t in enumerate(base)]


def test_paired_difference_matches_a_loop_bootstrap():
    rng = random.Random(1)
    base = [_trial(i, i % 6, [30, 60] if rng.random() < 0.3 else [30]) for i in range(60)]
    base.append(_trial(99, 2, [], error="judge failed"))
    arm = _arm(base, 0.15, "exp3", 2)
    _, (pairs,) = paired_arms(base, [arm])
    assert len(pairs) == 60  # the invalid baseline trial drops its pair
    value, (lo, hi) = paired_difference(pairs, "multi_attempt_rate", n_boot=500, seed=3)
    b = np.array([float(p[0].multi_attempt) for p in pairs])
    a = np.array([float(p[1].multi_attempt) for p in pairs])
    assert value == pytest.approx(a.mean() - b.mean())
    clusters = sorted({p[0].cluster for p in pairs}, key=[p[0].cluster for p in pairs].index)
    g = np.random.default_rng(3)
    idx = g.integers(0, len(clusters), size=(500, len(clusters)))
    stats = []
    for row in idx:
        sb = cb = sa = ca = 0.0
        for k in row:
            members = [j for j, p in enumerate(pairs) if p[0].cluster == clusters[k]]
            sa += a[members].sum()
            ca += len(members)
            sb += b[members].sum()
            cb += len(members)
        stats.append(sa / ca - sb / cb)
    assert [lo, hi] == pytest.approx(list(np.quantile(stats, [0.025, 0.975])))
    same, ci = paired_difference([(x, x) for x, _ in pairs], "esr_rate", n_boot=200, seed=0)
    assert same == 0.0 and ci == [0.0, 0.0]


def test_summary_schema_pairing_and_percentile():
    rng = random.Random(0)
    base = [_trial(i, i % 5, [30, 60] if rng.random() < 0.4 else [30]) for i in range(40)]
    det = _arm(base, 0.1, "exp3", 1)
    rand = [_arm(base, 0.4, "exp10", 10 + s) for s in range(6)]
    s = detector_summary(base, det, rand, rule="zero_on_topic", n_boot=200, seed=0)
    for key in ("rule", "n_detectors", "baseline", "detector_ablation", "random_sets", "random_multi_attempt_rates",
                "detector_percentile", "difference_ci"):
        assert key in s
    for m in (s["baseline"], s["detector_ablation"]):
        assert set(m) >= {"n", "multi_attempt_rate", "multi_attempt_ci", "esr_rate", "esr_ci"}
        assert m["n"] == 40 and m["multi_attempt_ci"][0] <= m["multi_attempt_rate"] <= m["multi_attempt_ci"][1]
    assert s["n_detectors"] == 3 and s["random_sets"] == 6 and len(s["random_multi_attempt_rates"]) == 6
    rates = [sum(len(t.grade["attempts"]) > 1 for t in arm) / 40 for arm in rand]
    assert s["random_multi_attempt_rates"] == pytest.approx(rates)
    d = sum(len(t.grade["attempts"]) > 1 for t in det) / 40
    assert s["detector_percentile"] == pytest.approx(percentile_of(d, rates))
    b = sum(len(t.grade["attempts"]) > 1 for t in base) / 40
    assert s["difference"] == pytest.approx(d - b)
    lo, hi = s["difference_ci"]
    assert lo <= d - b <= hi
    assert s["difference_vs_random"] == pytest.approx(d - sum(rates) / 6)
    from esr_analysis.mechanisms.null import reading

    assert "percentile" in reading(s)
    ok = {**s, "difference_ci": [-0.2, -0.05], "detector_percentile": 2.0, "random_sets": 20}
    assert "supports the paper" in reading(ok)
    assert "not specific" in reading({**ok, "detector_percentile": 40.0})
    assert "no resolved drop" in reading({**ok, "difference_ci": [-0.2, 0.05]})
    zero = {**ok, "baseline": {**s["baseline"], "multi_attempt_rate": 0.0}}
    assert "no test" in reading(zero)
    stray = [_trial(0, 0, [30], exp="exp10", source="not-a-baseline-trial")]
    with pytest.raises(ValueError, match="not among the baseline"):
        detector_summary(base, det, [stray], rule="r", n_boot=0)


def _wilson(count, n, z=1.959963984540054):
    p = count / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [centre - half, centre + half]


def test_random_metrics_pool_every_random_set_trial():
    """``random_metrics`` is M over the random sets' trials pooled, recomputed here from the raw grades (the old
    code fed scored objects to ``condition_metrics`` and reported ``n = 0``)."""
    rng = random.Random(7)
    base = [_trial(i, i % 4, [40, 70] if rng.random() < 0.4 else [40]) for i in range(24)]
    det = _arm(base, 0.1, "exp3", 1)

    def arm(s):
        out = []
        for i, t in enumerate(base):
            k = rng.choice([1, 1, 2, 3])
            scores = [rng.randint(0, 100) for _ in range(k)]
            err = "judge failed" if (i + s) % 11 == 0 else None
            out.append(_trial(i, t.latent, scores, exp="exp10", source=t.trial_id, error=err))
        return out

    rand = [arm(s) for s in range(3)]
    s = detector_summary(base, det, rand, rule="ranked", n_boot=0)
    valid = [[a["score"] for a in t.grade["attempts"]] for r in rand for t in r if t.error is None]
    n = len(valid)
    assert n == 3 * 24 - sum(1 for r in rand for t in r if t.error) and n > 0
    multi = sum(len(v) > 1 for v in valid)
    esr = sum(len(v) > 1 and v[-1] > v[0] for v in valid)
    m = s["random_metrics"]
    assert m["n"] == n
    assert m["multi_attempt_rate"] == pytest.approx(multi / n)
    assert m["esr_rate"] == pytest.approx(esr / n)
    assert m["first_attempt_score"] == pytest.approx(sum(v[0] for v in valid) / n)
    assert m["multi_attempt_ci"] == pytest.approx(_wilson(multi, n))
    assert m["esr_ci"] == pytest.approx(_wilson(esr, n))
    assert detector_summary(base, det, [], rule="ranked", n_boot=0)["random_metrics"] is None


def test_condition_metrics_reads_scored_trials_like_records():
    from esr_analysis.mechanisms.null import _valid, condition_metrics

    rng = random.Random(3)
    trials = [_trial(i, i % 3, [rng.randint(0, 100) for _ in range(rng.choice([1, 2]))]) for i in range(15)]
    scored = [_valid(t) for t in trials]
    assert condition_metrics(scored) == condition_metrics(trials) and condition_metrics(scored)["n"] == 15
    with pytest.raises(TypeError, match="not a mix"):
        condition_metrics([scored[0], trials[1]])


def test_subset_record_reads_old_and_new_subsets():
    import json
    from pathlib import Path

    from esr_analysis.mechanisms.detector_study import subset_record

    new = {"n": 5, "seed": 3, "n_subset_trials": 5, "n_source_trials": 9, "drawn": "rule"}
    assert subset_record(new) == new and subset_record(new, pool_size=12) == new  # a recorded pool size wins
    old = {"n": 5, "seed": 3, "n_source_trials": 5, "drawn": "rule"}  # before: the subset size under this name
    assert subset_record(old) == {**old, "n_subset_trials": 5, "n_source_trials": None}
    assert subset_record(old, pool_size=9) == new
    assert old["n_source_trials"] == 5 and subset_record(None) is None  # input untouched
    committed = Path(__file__).resolve().parent.parent / "data" / "results"
    for f in sorted(committed.glob("detectors_*.json")):
        raw = json.loads(f.read_text())["subset"]
        sub = subset_record(raw)
        assert sub is not None and sub["n_subset_trials"] == sub["n"], f.name
        if "n_subset_trials" in raw:  # the current form keeps the recorded pool size, never below the subset
            assert sub == raw and sub["n_source_trials"] >= sub["n_subset_trials"], f.name
        else:  # the old form: the pool size was not recorded
            assert sub["n_source_trials"] is None, f.name
