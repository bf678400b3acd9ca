"""Aligned statistics (:mod:`esr_analysis.mechanisms.alignment`): NaN masks (never zeros), SEM and n per offset,
region means, strict pairing (a mismatch raises, never a silent p = 1) and the tests against scipy/numpy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from esr_analysis.mechanisms.alignment import (
    PairingError,
    align_at,
    aligned_summary,
    paired_test,
    paired_values,
    region_means,
    response_mean,
    summarize_traces,
    unpaired_test,
)
from esr_analysis.mechanisms.boundaries import TokenBoundaries
from esr_analysis.mechanisms.traces import EpisodeTrace


def _tb(start, off, corr, on, end):
    return TokenBoundaries(off, corr, on, start, end)


def test_alignment_masks_missing_positions_with_nan():
    v1 = np.arange(10.0)  # prompt 0..2, response 3..9, correction at 5
    v2 = np.arange(100.0, 108.0)  # prompt 0..3, response 4..7, correction at 7
    bs = [_tb(3, 3, 5, 7, 10), _tb(4, 4, 7, 7, 8)]
    a = align_at([v1, v2], bs, window=3)
    assert a.shape == (2, 7)
    np.testing.assert_array_equal(a[0], [np.nan, 3, 4, 5, 6, 7, 8])  # offset -3 would be prompt token 2
    np.testing.assert_array_equal(a[1], [104, 105, 106, 107, np.nan, np.nan, np.nan])
    s = aligned_summary(a)
    np.testing.assert_array_equal(s["offsets"], np.arange(-3, 4))
    np.testing.assert_array_equal(s["n"], [1, 2, 2, 2, 1, 1, 1])
    np.testing.assert_allclose(s["mean"], [104, (3 + 105) / 2, (4 + 106) / 2, (5 + 107) / 2, 6, 7, 8])
    np.testing.assert_allclose(s["sem"][1], np.std([3, 105], ddof=1) / np.sqrt(2))
    assert np.isnan(s["sem"][0]) and np.isnan(s["sem"][-1])  # n = 1: no SEM
    unclear = align_at([v1], [_tb(3, -1, -1, -1, 10)], window=2)
    assert np.isnan(unclear).all()


def test_alignment_rejects_series_that_do_not_fit():
    with pytest.raises(PairingError):
        align_at([np.zeros(5)], [_tb(1, 1, 2, 3, 6)], window=2)
    with pytest.raises(PairingError):
        align_at([np.zeros(6)], [], window=2)


def test_region_means_and_response_mean():
    v = np.array([9, 9, 1, 2, 3, 10, 20, 5, 7.0])
    r = region_means(v, _tb(2, 2, 5, 7, 9))
    assert r == {"before": 2.0, "during": 15.0, "after": 6.0}
    empty = region_means(v, _tb(2, 2, 5, 5, 9))
    assert np.isnan(empty["during"])
    assert response_mean(v, _tb(2, 2, 5, 7, 9)) == pytest.approx(v[2:].mean())
    two = region_means(np.stack([v, 2 * v], axis=1), _tb(2, 2, 5, 7, 9))
    np.testing.assert_allclose(two["before"], [2.0, 4.0])


def test_pairing_mismatch_is_an_error_never_p_one():
    with pytest.raises(PairingError, match="do not pair"):
        paired_test({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 0.0, "b": 1.0})
    keys, x, y, dropped = paired_values({"a": 1.0, "b": np.nan, "c": 3.0}, {"c": 1.0, "a": 0.5, "b": 0.0})
    assert keys == ["a", "c"] and list(x) == [1.0, 3.0] and list(y) == [0.5, 1.0] and dropped == 1


def test_paired_test_matches_scipy_and_effect_sizes():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 20)
    y = rng.normal(0.0, 1.0, 20)
    a = {f"e{i}": v for i, v in enumerate(x)}
    b = {f"e{i}": v for i, v in reversed(list(enumerate(y)))}  # order must not matter: keys pair
    got = paired_test(a, b, alternative="greater")
    want = stats.wilcoxon(x, y, alternative="greater")
    assert got["p"] == pytest.approx(want.pvalue) and got["statistic"] == pytest.approx(want.statistic)
    d = x - y
    assert got["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    ranks = stats.rankdata(np.abs(d))
    assert got["rank_biserial"] == pytest.approx((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())
    assert got["n"] == 20 and got["n_dropped"] == 0
    shuffled = paired_test(a, dict(zip(sorted(b), np.roll(y, 3), strict=True)), alternative="greater")
    assert shuffled["p"] != got["p"]  # the pairing is by key


def test_degenerate_paired_test_gives_no_p():
    got = paired_test({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0})
    assert got["p"] is None and "non-zero" in got["reason"]


def test_unpaired_test_and_cliffs_delta():
    x, y = [3.0, 4.0, 5.0, np.nan], [1.0, 2.0, 3.5]
    got = unpaired_test(x, y, alternative="greater")
    want = stats.mannwhitneyu([3, 4, 5], [1, 2, 3.5], alternative="greater")
    assert got["p"] == pytest.approx(want.pvalue) and got["n_x"] == 3
    assert got["cliffs_delta"] == pytest.approx((8 - 1) / 9)


def _trace(eid, kind, acts, tb, groups):
    T = len(acts)
    return EpisodeTrace(episode_id=eid, kind=kind, steered=False, layer=0, tokens=list(range(T)),
                        token_strings=["x"] * T, response_start=tb.response_start, latents=[1, 2],
                        acts=np.asarray(acts, dtype=float), bounds=tb, groups=groups)


def test_summarize_traces_region_means_and_tests():
    groups = {"steered": [1], "det": [1, 2]}
    rng = np.random.default_rng(1)
    rec = []
    for i in range(6):
        acts = np.zeros((10, 2))
        acts[2:5] = 1.0 + rng.random((3, 2))  # before: high
        acts[5:7] = 0.5
        acts[7:] = 0.1 * rng.random((3, 2))  # after: low
        rec.append(_trace(f"r{i}", "recovery", acts, _tb(2, 2, 5, 7, 10), groups))
    rec.append(_trace("u", "recovery", np.ones((10, 2)), _tb(2, -1, -1, -1, 10), groups))  # unclear: left out
    base = [_trace(f"b{i}", "baseline", np.full((6, 2), 0.2), _tb(2, -1, -1, -1, 6), groups) for i in range(4)]
    means, tests = summarize_traces(rec, base, ["steered", "det"])
    assert means["det"]["n_before"] == 6 and means["det"]["n_baseline"] == 4
    want = np.mean([t.acts[2:5].mean() for t in rec[:6]])
    assert means["det"]["before"] == pytest.approx(want) and means["det"]["baseline"] == pytest.approx(0.2)
    assert means["per_latent"]["2"]["during"] == pytest.approx(0.5)
    t = tests["det"]
    assert t["before_gt_after"]["n"] == 6 and t["before_gt_after"]["p"] < 0.05
    assert t["before_gt_baseline_by_latent"]["n"] == 2
    assert t["before_gt_baseline_episodes"]["cliffs_delta"] == pytest.approx(1.0)
