"""The paper's headline numbers as data, their approximate Wilson intervals, and the side-by-side table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from esr_analysis.metrics import summarize
from esr_analysis.metrics.definitions import METRICS
from esr_analysis.metrics.paper import (
    PAPER_MAIN_MODEL,
    PAPER_NUMBERS,
    paper_interval,
    paper_table,
    side_by_side,
)


def _trials(n_multi: int, n_single: int) -> list[dict]:
    rows = []
    for i in range(n_multi):
        rows.append({"latent": i % 3, "condition": "steered", "response": f"r{i}",
                     "grade": {"attempts": [{"text": "a", "score": 10}, {"text": "b", "score": 60}]}})
    for i in range(n_single):
        rows.append({"latent": i % 3, "condition": "steered", "response": f"s{i}",
                     "grade": {"attempts": [{"text": "a", "score": 40}]}})
    return rows


def test_headline_values_are_the_papers():
    got = {(p.experiment, p.condition, p.model, p.metric): (p.value, p.n) for p in PAPER_NUMBERS}
    assert got[("exp1", "steered", PAPER_MAIN_MODEL, "multi_attempt_rate")] == (0.074, 4877)
    assert got[("exp1", "steered", PAPER_MAIN_MODEL, "esr_rate")] == (0.038, 4877)
    assert got[("exp8", "no_steering", "all five models", "multi_attempt_rate")] == (0.0, 13118)
    assert got[("exp5", "self_monitor", PAPER_MAIN_MODEL, "esr_rate")][0] == 0.148
    assert all(p.metric in METRICS for p in PAPER_NUMBERS)


def test_paper_interval_is_wilson_of_the_reconstructed_count():
    p = next(p for p in PAPER_NUMBERS if p.experiment == "exp1" and p.metric == "esr_rate" and p.model == PAPER_MAIN_MODEL)
    low, high = paper_interval(p)
    # independent Wilson: 185 of 4877 (0.038 * 4877 = 185.3)
    k, n, z = 185, 4877, 1.959963984540054
    ph = k / n
    centre = (ph + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
    assert low == pytest.approx(centre - half, abs=1e-12) and high == pytest.approx(centre + half, abs=1e-12)
    assert low < 0.038 < high


def test_zero_rate_has_a_nonzero_upper_bound_and_means_have_no_interval():
    zero = next(p for p in PAPER_NUMBERS if p.experiment == "exp8" and p.metric == "multi_attempt_rate")
    low, high = paper_interval(zero)
    assert low == 0.0 and 0 < high < 0.001  # Wilson does not collapse at 0 % (Wald would)
    mean = next(p for p in PAPER_NUMBERS if p.metric == "first_attempt_score")
    assert all(math.isnan(v) for v in paper_interval(mean))
    bound = next(p for p in PAPER_NUMBERS if p.relation != "=")
    assert all(math.isnan(v) for v in paper_interval(bound))


def test_paper_table_filters_and_rejects_unknown_experiment():
    t = paper_table("exp1")
    assert set(t["experiment"]) == {"exp1"} and {"ci_low", "ci_high"} <= set(t.columns)
    assert len(paper_table()) == len(PAPER_NUMBERS)
    with pytest.raises(ValueError, match="no headline numbers"):
        paper_table("exp42")


def test_side_by_side_puts_our_estimate_next_to_the_paper():
    ours = summarize(_trials(2, 8), metrics=["multi_attempt_rate", "esr_rate", "first_attempt_score"], n_boot=50)
    t = side_by_side(ours, "exp1", model=PAPER_MAIN_MODEL, label="embedded")
    row = t.set_index("metric").loc["esr_rate"]
    assert row["embedded"] == "20.0 %" and row["embedded n"] == 10 and row["paper"] == "3.8 %"
    assert row["paper n"] == "4,877"
    first = t.set_index("metric").loc["first_attempt_score"]
    assert first["embedded"] == "34.0"  # (2 * 10 + 8 * 40) / 10 and first["paper"] == "26.3"
    assert first["paper 95% CI (Wilson, approx.)"] == "-"
    others = side_by_side(ours, "exp1", model="Llama-3.1-8B, Gemma-2 2B/9B/27B")
    assert set(others["paper"]) == {"<= 1.1 %", "< 1.0 %"}


def test_side_by_side_rejects_tables_it_cannot_read():
    with pytest.raises(ValueError, match="not a summarize"):
        side_by_side(pd.DataFrame({"metric": ["esr_rate"], "value": [0.1]}), "exp1")
    grouped = summarize(_trials(1, 3) + [{**r, "condition": "other"} for r in _trials(1, 3)], by="condition",
                        metrics=["esr_rate"], n_boot=10)
    with pytest.raises(ValueError, match="several rows per metric"):
        side_by_side(grouped, "exp1")
    with pytest.raises(ValueError, match="no paper number"):
        side_by_side(summarize(_trials(1, 1), metrics=["degraded_rate"], n_boot=10), "exp1")
