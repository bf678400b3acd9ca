"""Tests for esr_analysis.metrics: known answers on hand-built trials, properties, independent checks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest
from scipy.stats import t as student_t

from esr_analysis import metrics as m

FAST = {"n_boot": 400, "seed": 1}


def trial(latent, scores, *, error=None, response="a fine answer", graded=True):
    grade = {"attempts": [{"text": f"attempt {i}", "score": s} for i, s in enumerate(scores)]} if graded else None
    return {"latent": latent, "grade": grade, "error": error, "response": response, "condition": "steered"}


@pytest.fixture
def hand_trials():
    """Six valid trials over two latents, plus one of each exclusion reason."""
    return [
        trial(1, [30, 80]),  # multi, improved, ESR
        trial(1, [50]),  # single
        trial(1, [60, 40], response="word word word word word and more"),  # multi, worse; degraded
        trial(1, [20, 20]),  # multi, tie: not improved (strict)
        trial(2, [10, 55, 90]),  # multi (k=3), improved, ESR
        trial(2, [None, 70]),  # null score dropped: k=1, s1 = sk = 70
        trial(2, [40, 90], error="judge timed out"),  # excluded: error
        trial(2, []),  # excluded: no scored attempts
        trial(3, [None]),  # excluded: no scored attempts (only a null score)
        trial(3, [], graded=False),  # excluded: ungraded
    ]


# --------------------------------------------------------------------------------------------------
# per-trial definitions
# --------------------------------------------------------------------------------------------------


def test_scored_attempts_keeps_only_numeric_scores_in_order():
    grade = {"attempts": [{"score": None}, {"score": "42"}, {"score": float("nan")}, {"score": 7}, {"score": True}]}
    assert m.scored_attempts(grade) == [42.0, 7.0]
    assert m.scored_attempts(None) == []
    assert m.scored_attempts({"raw_response": "x", "error": "bad json"}) == []
    # the authors' attempt key is accepted too (only score is read)
    assert m.scored_attempts({"attempts": [{"attempt_text": "a", "score": 10}]}) == [10.0]


def test_per_trial_definitions():
    assert m.first_score([30, 80]) == 30 and m.last_score([30, 80]) == 80
    assert m.first_score([]) is None and m.last_score([]) is None
    assert m.is_multi_attempt([1, 2]) and not m.is_multi_attempt([5])
    assert m.improvement([30, 55, 80]) == 50 and m.improvement([30]) is None
    assert m.is_improved([30, 80]) is True and m.is_improved([20, 20]) is False and m.is_improved([1]) is None
    assert m.is_esr([30, 80]) and not m.is_esr([20, 20]) and not m.is_esr([80, 30]) and not m.is_esr([90])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the the the the the", True),
        ("the the the the", False),
        ("x the the the the the y", True),
        ("the\nthe\tthe  the the", True),  # any whitespace separates words
        ("a a a a a a a", False),  # one-character words never count
        ("The the the the the", False),  # case-sensitive
        ("the the the the the.", False),  # punctuation is part of the word
        ("go go go go stop go go go go", False),  # a different word breaks the run
        ("", False),
        (None, False),
    ],
)
def test_is_degraded(text, expected):
    assert m.is_degraded(text) is expected


# --------------------------------------------------------------------------------------------------
# known answers
# --------------------------------------------------------------------------------------------------


def test_exclusions_are_counted_by_reason(hand_trials):
    valid = m.prepare_trials(hand_trials)
    assert valid.n_valid == 6
    assert valid.excluded == {"error": 1, "no_scored_attempts": 2, "ungraded": 1}
    assert valid.n_excluded == 4
    # a grade-level error also excludes the trial
    v2 = m.prepare_trials([{"latent": 1, "grade": {"attempts": [{"score": 5}], "error": "parse"}}])
    assert v2.n_valid == 0 and v2.excluded == {"error": 1}


def test_known_answers(hand_trials):
    first = m.first_attempt_score(hand_trials, **FAST)
    assert first.value == pytest.approx((30 + 50 + 60 + 20 + 10 + 70) / 6)
    assert first.n == 6 and first.excluded == {"error": 1, "no_scored_attempts": 2, "ungraded": 1}
    assert m.last_attempt_score(hand_trials, **FAST).value == pytest.approx((80 + 50 + 40 + 20 + 90 + 70) / 6)

    multi = m.multi_attempt_rate(hand_trials, **FAST)
    assert (multi.count, multi.n) == (4, 6)
    assert multi.value == pytest.approx(4 / 6)

    imp = m.mean_improvement(hand_trials, **FAST)
    assert imp.n == 4 and imp.value == pytest.approx((50 - 20 + 0 + 80) / 4)
    imp_all = m.mean_improvement(hand_trials, single_attempt_as_zero=True, **FAST)
    assert imp_all.n == 6 and imp_all.value == pytest.approx((50 - 20 + 0 + 80) / 6)

    rate = m.improvement_rate(hand_trials, **FAST)
    assert (rate.count, rate.n) == (2, 4)  # the tie does not count

    esr = m.esr_rate(hand_trials, **FAST)
    assert (esr.count, esr.n, esr.n_clusters) == (2, 6, 2)
    assert esr.population == "valid trials"
    assert (esr.ci_low, esr.ci_high) == pytest.approx(m.wilson_interval(2, 6))

    deg = m.degraded_rate(hand_trials, **FAST)
    assert (deg.count, deg.n) == (1, 6)
    # excluding degraded outputs removes the degraded multi-attempt trial from every denominator
    multi_nd = m.multi_attempt_rate(hand_trials, exclude_degraded=True, **FAST)
    assert (multi_nd.count, multi_nd.n) == (3, 5) and multi_nd.excluded["degraded"] == 1


def test_flattened_dataframe_gives_same_numbers(hand_trials):
    """load_run-style columns (n_attempts/first_score/last_score, pandas missing markers) agree with grades."""
    rows = []
    for t in hand_trials:
        scores = m.scored_attempts(t["grade"])
        rows.append(
            {
                "latent": t["latent"],
                "error": t["error"],
                "response": t["response"],
                "graded": t["grade"] is not None,
                "n_attempts": len(scores),  # 0 when ungraded: the graded flag must decide
                "first_score": scores[0] if scores else None,
                "last_score": scores[-1] if scores else None,
            }
        )
    df = pd.DataFrame(rows).astype({"n_attempts": "Int64"})
    assert isinstance(df["graded"].to_list()[-1], bool | np.bool_)
    for name in m.SUMMARY_METRICS:
        a = m.estimate(df, name, exclude_degraded=False, n_boot=200, seed=3, confidence=0.95)
        b = m.estimate(hand_trials, name, exclude_degraded=False, n_boot=200, seed=3, confidence=0.95)
        assert a == b, name


def test_summarize_table(hand_trials):
    table = m.summarize(hand_trials, **FAST)
    assert list(table["metric"]) == list(m.SUMMARY_METRICS)
    for col in ("value", "n", "ci_low", "ci_high", "boot_low", "boot_high", "excluded", "excluded_detail"):
        assert col in table.columns
    esr = table.set_index("metric").loc["esr_rate"]
    assert esr["count"] == 2 and esr["n"] == 6 and esr["excluded"] == 4
    assert esr["excluded_detail"] == "error=1, no_scored_attempts=2, ungraded=1"
    assert pd.isna(table.set_index("metric").loc["first_attempt_score", "count"])

    other = [dict(t, condition="ablation") for t in hand_trials[:2]]
    grouped = m.summarize(hand_trials + other, by="condition", metrics=["esr_rate"], **FAST)
    assert list(grouped["condition"]) == ["steered", "ablation"]
    assert list(grouped["n"]) == [6, 2]
    with pytest.raises(ValueError, match="unknown metric"):
        m.summarize(hand_trials, metrics=["nope"])
    # missing group values (NaN in a DataFrame) form one group, not one per row
    df = pd.DataFrame([dict(t, boost=float("nan")) for t in hand_trials])
    assert len(m.summarize(df, by="boost", metrics=["esr_rate"], **FAST)) == 1


def test_empty_and_degenerate_inputs():
    r = m.esr_rate([], **FAST)
    assert r.n == 0 and math.isnan(r.value) and math.isnan(r.ci_low) and math.isnan(r.boot_low)
    # one latent only: no between-latent information, so no clustered bootstrap interval
    one = m.esr_rate([trial(7, [10, 90]), trial(7, [50])], **FAST)
    assert one.value == 0.5 and math.isnan(one.boot_low) and not math.isnan(one.ci_low)
    # trials without latents are their own clusters
    nolat = m.esr_rate([trial(None, [10, 90]), trial(None, [50])], **FAST)
    assert nolat.n_clusters == 2 and not math.isnan(nolat.boot_low)


# --------------------------------------------------------------------------------------------------
# intervals
# --------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 2000),
    frac=st.floats(0, 1),
    confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]),
)
def test_wilson_matches_scipy(n, frac, confidence):
    count = round(frac * n)
    ours = m.wilson_interval(count, n, confidence)
    ref = binomtest(count, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert ours == pytest.approx((ref.low, ref.high), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), frac=st.floats(0, 1))
def test_wilson_properties(n, frac):
    count = round(frac * n)
    low, high = m.wilson_interval(count, n)
    p = count / n
    assert 0.0 <= low <= p <= high <= 1.0
    low4, high4 = m.wilson_interval(4 * count, 4 * n)
    assert high4 - low4 < high - low  # more data, narrower interval


def test_wilson_rejects_bad_input():
    with pytest.raises(ValueError):
        m.wilson_interval(3, 2)
    with pytest.raises(ValueError):
        m.wilson_interval(1, 2, confidence=1.5)
    assert all(math.isnan(x) for x in m.wilson_interval(0, 0))


def test_wald_interval_is_the_authors_formula():
    low, high = m.wald_interval(30, 100)
    half = 1.959963984540054 * math.sqrt(0.3 * 0.7 / 100)
    assert (low, high) == pytest.approx((0.3 - half, 0.3 + half), abs=1e-12)
    assert m.wald_interval(0, 50) == (0.0, 0.0)  # the degenerate case Wilson fixes
    assert m.wilson_interval(0, 50)[1] > 0.05


def test_per_trial_table(hand_trials):
    table = m.per_trial(hand_trials)
    assert len(table) == len(hand_trials)
    assert list(table["excluded"].iloc[6:]) == ["error", "no_scored_attempts", "no_scored_attempts", "ungraded"]
    assert table["esr"].sum() == 2 and table["multi_attempt"].sum() == 4 and table["improved"].sum() == 2
    assert table.loc[4, "k"] == 3 and table.loc[4, "improvement"] == 80
    assert pd.isna(table.loc[1, "improvement"]) and table.loc[2, "degraded"]


def test_t_interval_known_answer_and_scipy():
    low, high = m.t_interval([1, 2, 3, 4, 5])
    assert (low, high) == pytest.approx((1.0367568385224, 4.9632431614776), abs=1e-9)
    x = np.random.default_rng(0).normal(50, 20, size=37)
    ref = student_t.interval(0.9, len(x) - 1, loc=x.mean(), scale=x.std(ddof=1) / math.sqrt(len(x)))
    assert m.t_interval(x, 0.9) == pytest.approx(ref, abs=1e-9)
    assert all(math.isnan(v) for v in m.t_interval([3.0]))


def test_bootstrap_is_seeded():
    values = np.r_[np.ones(30), np.zeros(70)]
    clusters = list(range(100))
    a = m.cluster_bootstrap_interval(values, clusters, n_boot=500, seed=5)
    b = m.cluster_bootstrap_interval(values, clusters, n_boot=500, seed=5)
    c = m.cluster_bootstrap_interval(values, clusters, n_boot=500, seed=6)
    assert a == b and a != c
    with pytest.raises(ValueError, match="differ in length"):
        m.cluster_bootstrap_interval(values, clusters[:-1])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(80, 300), p=st.floats(0.2, 0.8), seed=st.integers(0, 2**31))
def test_bootstrap_one_trial_per_latent_is_iid(n, p, seed):
    """With one trial per latent the clustered bootstrap is the iid bootstrap: close to the Wald interval."""
    count = round(p * n)
    values = np.r_[np.ones(count), np.zeros(n - count)]
    low, high = m.cluster_bootstrap_interval(values, list(range(n)), n_boot=2000, seed=seed)
    phat = count / n
    half = 1.959964 * math.sqrt(phat * (1 - phat) / n)
    assert low == pytest.approx(phat - half, abs=0.03)
    assert high == pytest.approx(phat + half, abs=0.03)


def test_bootstrap_widens_when_trials_cluster_by_latent():
    """20 latents x 5 identical trials carry 20 trials' worth of information, not 100."""
    values = np.repeat(np.r_[np.ones(10), np.zeros(10)], 5)
    clustered = m.cluster_bootstrap_interval(values, list(np.repeat(np.arange(20), 5)), n_boot=2000, seed=0)
    iid = m.cluster_bootstrap_interval(values, list(range(100)), n_boot=2000, seed=0)
    assert (clustered[1] - clustered[0]) > 1.8 * (iid[1] - iid[0])
    # and the clustered interval is close to a Wald interval with n = 20 latents
    half20 = 1.96 * math.sqrt(0.25 / 20)
    assert clustered == pytest.approx((0.5 - half20, 0.5 + half20), abs=0.04)


def test_rate_result_intervals_contain_estimate(hand_trials):
    for fn in (m.multi_attempt_rate, m.esr_rate, m.improvement_rate):
        r = fn(hand_trials, n_boot=300, seed=2)
        assert r.ci_low <= r.value <= r.ci_high
        assert r.ci_low >= 0 and r.ci_high <= 1


# --------------------------------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------------------------------


def _arm(rates_by_latent, per_latent=20, offset=0):
    """Trials whose ESR rate per latent is exactly the given fraction (deterministic layout)."""
    out = []
    for latent, rate in rates_by_latent.items():
        n_esr = round(rate * per_latent)
        for i in range(per_latent):
            out.append(trial(latent + offset, [10, 90] if i < n_esr else [50]))
    return out


def test_relative_reduction_and_ratio_known_answers():
    base = _arm({1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5})
    treated = _arm({1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25})
    red = m.relative_reduction(base, treated, "esr_rate", n_boot=300)
    assert red.value == pytest.approx(0.5) and red.baseline == 0.5 and red.treated == 0.25
    assert red.paired and red.n_shared_latents == 4 and red.n_baseline == red.n_treated == 80
    assert red.boot_low == pytest.approx(0.5) and red.boot_high == pytest.approx(0.5)  # identical per latent
    rat = m.ratio(base, treated, "multi_attempt_rate", n_boot=300)
    assert rat.value == pytest.approx(0.5) and rat.kind == "ratio"
    zero = m.relative_reduction(_arm({1: 0.0, 2: 0.0}), treated, n_boot=100)
    assert math.isnan(zero.value) and zero.n_boot_valid == 0
    with pytest.raises(ValueError, match="unknown metric"):
        m.ratio(base, treated, "nope")


def test_paired_bootstrap_is_narrower_when_latents_are_shared():
    """Latent base rates vary a lot; the treatment halves each. Pairing removes the between-latent spread."""
    rng = np.random.default_rng(0)
    rates = {i: float(r) for i, r in enumerate(rng.choice([0.1, 0.4, 0.8], size=30))}
    base = _arm(rates, per_latent=10)
    treated_same = _arm({k: v / 2 for k, v in rates.items()}, per_latent=10)
    treated_other = _arm({k: v / 2 for k, v in rates.items()}, per_latent=10, offset=1000)
    paired = m.relative_reduction(base, treated_same, n_boot=1000, seed=4)
    unpaired = m.relative_reduction(base, treated_other, n_boot=1000, seed=4)
    assert paired.paired and not unpaired.paired and unpaired.n_shared_latents == 0
    assert paired.value == pytest.approx(unpaired.value)
    assert paired.boot_low <= paired.value <= paired.boot_high
    assert (paired.boot_high - paired.boot_low) < 0.6 * (unpaired.boot_high - unpaired.boot_low)
