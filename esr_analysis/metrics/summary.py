"""Estimates with their n, intervals and exclusions: one metric (:func:`estimate`) and the report table
(:func:`summarize`); comparisons between arms are :mod:`esr_analysis.metrics.comparison`.

Each estimate is the metric's mean over its population (:mod:`esr_analysis.metrics.definitions`) of valid
trials (:mod:`esr_analysis.metrics.trials`), with a Wilson (rates) or Student-t (means) interval and a
latent-clustered bootstrap interval (:mod:`esr_analysis.metrics.intervals`). See ``docs/method.md#metrics``
and ``docs/method.md#intervals``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from esr_analysis.metrics.definitions import METRICS, SUMMARY_METRICS
from esr_analysis.metrics.intervals import (
    cluster_bootstrap_interval,
    t_interval,
    wilson_interval,
)
from esr_analysis.metrics.trials import TrialsLike, is_missing, metric_population, prepare_trials, trial_rows

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class RateResult:
    """A proportion ``count / n`` with a Wilson interval (``ci_*``) and a latent-clustered bootstrap
    interval (``boot_*``).  ``excluded`` counts trials dropped before any metric (by reason); ``population``
    names the denominator; ``n_clusters`` is the number of latents in it."""

    metric: str
    value: float
    count: int
    n: int
    ci_low: float
    ci_high: float
    boot_low: float
    boot_high: float
    n_clusters: int
    excluded: dict[str, int]
    population: str
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["excluded_detail"] = _fmt_excluded(self.excluded)
        row["excluded"] = sum(self.excluded.values())
        return row


@dataclass(frozen=True)
class MeanResult:
    """A mean over ``n`` trials with a Student-t interval (``ci_*``, trials treated as iid) and a
    latent-clustered bootstrap interval (``boot_*``).  ``sd`` uses ddof 1."""

    metric: str
    value: float
    n: int
    sd: float
    ci_low: float
    ci_high: float
    boot_low: float
    boot_high: float
    n_clusters: int
    excluded: dict[str, int]
    population: str
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["count"] = math.nan
        row["excluded_detail"] = _fmt_excluded(self.excluded)
        row["excluded"] = sum(self.excluded.values())
        return row


def _fmt_excluded(excluded: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(excluded.items()) if v)


def estimate(
    trials: TrialsLike,
    name: str,
    *,
    exclude_degraded: bool,
    n_boot: int,
    seed: int,
    confidence: float,
) -> RateResult | MeanResult:
    """Metric ``name`` (a key of :data:`~esr_analysis.metrics.definitions.METRICS`) of ``trials`` with its n,
    Wilson or Student-t interval, latent-clustered bootstrap interval and exclusion counts."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    metric = METRICS[name]
    valid = prepare_trials(trials, exclude_degraded=exclude_degraded)
    values, clusters = metric_population(valid, metric)
    n = int(values.size)
    boot_low, boot_high = cluster_bootstrap_interval(
        values, clusters, n_boot=n_boot, seed=seed, confidence=confidence
    )
    common: dict[str, Any] = {
        "metric": name,
        "n": n,
        "boot_low": boot_low,
        "boot_high": boot_high,
        "n_clusters": len(set(clusters)),
        "excluded": dict(valid.excluded),
        "population": metric.population,
        "confidence": confidence,
        "n_boot": n_boot,
        "seed": seed,
    }
    value = float(values.mean()) if n else math.nan
    if metric.kind == "rate":
        count = int(values.sum())
        low, high = wilson_interval(count, n, confidence)
        return RateResult(value=value, count=count, ci_low=low, ci_high=high, **common)
    low, high = t_interval(values, confidence)
    sd = float(values.std(ddof=1)) if n > 1 else math.nan
    return MeanResult(value=value, sd=sd, ci_low=low, ci_high=high, **common)


def first_attempt_score(
    trials: TrialsLike, *, exclude_degraded: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> MeanResult:
    """First-attempt score: the mean of ``s_1`` (0-100) over all valid trials."""
    return estimate(trials, "first_attempt_score", exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def last_attempt_score(
    trials: TrialsLike, *, exclude_degraded: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> MeanResult:
    """Last-attempt score: the mean of ``s_k`` (0-100) over all valid trials."""
    return estimate(trials, "last_attempt_score", exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def multi_attempt_rate(
    trials: TrialsLike, *, exclude_degraded: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> RateResult:
    """Multi-attempt rate: the fraction of valid trials with more than one scored attempt (``k > 1``)."""
    return estimate(trials, "multi_attempt_rate", exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def mean_improvement(
    trials: TrialsLike,
    *,
    single_attempt_as_zero: bool = False,
    exclude_degraded: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> MeanResult:
    """Mean improvement ("MSI"): the mean of ``s_k - s_1`` over valid **multi-attempt** trials.

    With ``single_attempt_as_zero=True`` (exp 8 / "include degraded" figure variant): the mean over all
    valid trials, single-attempt trials counting as 0 (metric name ``mean_improvement_all``).
    """
    name = "mean_improvement_all" if single_attempt_as_zero else "mean_improvement"
    return estimate(trials, name, exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def improvement_rate(
    trials: TrialsLike, *, exclude_degraded: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> RateResult:
    """Improvement rate: among valid multi-attempt trials (``k > 1``), the fraction with ``s_k > s_1``
    (strict; ties do not count)."""
    return estimate(trials, "improvement_rate", exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def esr_rate(
    trials: TrialsLike, *, exclude_degraded: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> RateResult:
    """ESR rate: the fraction of **all** valid trials with ``k > 1`` and ``s_k > s_1`` (strict)."""
    return estimate(trials, "esr_rate", exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def degraded_rate(
    trials: TrialsLike, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> RateResult:
    """Degraded rate: the fraction of valid trials with a response text whose response is degraded
    (:func:`is_degraded`: >= 5 identical consecutive whitespace-delimited words longer than 1 character)."""
    return estimate(trials, "degraded_rate", exclude_degraded=False, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


SUMMARY_COLUMNS: tuple[str, ...] = (
    "metric", "value", "count", "n", "ci_low", "ci_high", "boot_low", "boot_high",
    "n_clusters", "excluded", "excluded_detail", "population",
)


def summarize(
    trials: TrialsLike,
    *,
    by: str | Sequence[str] | None = None,
    metrics: Iterable[str] = SUMMARY_METRICS,
    exclude_degraded: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    pool_conditions: bool = False,
) -> pd.DataFrame:
    """The report table: one row per metric (and per group of ``by`` columns, if given).

    A group may not mix trials of different ``(experiment, condition)`` (e.g. the authors' exp 1 files with
    their boost-sweep or meta-prompt files under one ``model_name``): that raises ``ValueError`` unless
    ``pool_conditions=True`` says the pooling is meant. Add ``"condition"`` to ``by`` or filter first.

    Columns: ``metric, value, count`` (rates only), ``n`` (the metric's denominator), ``ci_low, ci_high``
    (Wilson for rates, Student-t for means), ``boot_low, boot_high`` (latent-clustered bootstrap),
    ``n_clusters`` (latents), ``excluded`` (trials dropped before any metric) and ``excluded_detail``
    (``reason=count``), ``population``.
    """
    import pandas as pd

    names = list(metrics)
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    keys = [by] if isinstance(by, str) else list(by or [])
    rows = trial_rows(trials)
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"cannot group by {missing}: not a trial field")
        key = tuple(None if is_missing(row.get(k)) else row.get(k) for k in keys)  # NaN != NaN: one null group
        groups.setdefault(key, []).append(row)
    if not groups:
        groups[tuple(None for _ in keys)] = []
    table: list[dict[str, Any]] = []
    for group_key, group_rows in groups.items():
        if not pool_conditions:
            arms = {tuple(None if is_missing(r.get(f)) else str(r.get(f)) for f in ("experiment", "condition"))
                    for r in group_rows}
            if len(arms) > 1:
                arm_names = ", ".join(sorted("/".join(a for a in arm if a) or "?" for arm in arms))
                where = f"group {dict(zip(keys, group_key, strict=True))} " if keys else ""
                raise ValueError(f"{where}mixes trials of different experiments/conditions ({arm_names}); their metrics "
                                 "are not one population: add 'condition' to by=, filter the trials, or pass "
                                 "pool_conditions=True")
        valid = prepare_trials(group_rows, exclude_degraded=exclude_degraded)
        for name in names:
            est = estimate(
                valid, name, exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence
            )
            row = est.as_row()
            table.append({**dict(zip(keys, group_key, strict=True)), **{c: row[c] for c in SUMMARY_COLUMNS}})
    out = pd.DataFrame(table, columns=[*keys, *SUMMARY_COLUMNS])
    out["count"] = out["count"].astype("Int64")
    return out
