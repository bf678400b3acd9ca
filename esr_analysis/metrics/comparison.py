"""Comparisons of one metric between a baseline and a treated arm: relative reduction (exp 3) and ratio
(exp 5), each with a latent-clustered bootstrap interval.

The bootstrap is **paired** when the two arms share latents (the union of latents is resampled jointly, so a
drawn latent contributes its trials to both arms) and independent per arm otherwise. See
``docs/method.md#intervals``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from esr_analysis.metrics.definitions import METRICS
from esr_analysis.metrics.intervals import cluster_sums, draw_ratio, percentile_interval, z_quantile
from esr_analysis.metrics.trials import TrialsLike, metric_population, prepare_trials


@dataclass(frozen=True)
class ComparisonResult:
    """A comparison of one metric between a baseline and a treated arm.

    ``kind="relative_reduction"``: ``value = (baseline - treated) / baseline``; ``kind="ratio"``:
    ``value = treated / baseline``.  ``boot_*`` is the latent-clustered bootstrap interval, paired
    (joint resampling of the union of latents) when ``paired``; replicates where the comparison is
    undefined (baseline 0) are dropped and ``n_boot_valid`` counts the rest.
    """

    metric: str
    kind: str
    value: float
    baseline: float
    treated: float
    boot_low: float
    boot_high: float
    n_baseline: int
    n_treated: int
    paired: bool
    n_shared_latents: int
    n_boot_valid: int
    excluded_baseline: dict[str, int]
    excluded_treated: dict[str, int]
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0



def compare(
    baseline: TrialsLike,
    treated: TrialsLike,
    metric: str = "esr_rate",
    *,
    kind: Literal["relative_reduction", "ratio"] = "relative_reduction",
    exclude_degraded: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> ComparisonResult:
    """Compare ``metric`` between a baseline and a treated arm: ``kind="relative_reduction"`` gives
    ``(baseline - treated) / baseline``, ``kind="ratio"`` gives ``treated / baseline`` (``nan`` when the
    baseline value is 0), with a latent-clustered bootstrap interval, paired when the arms share latents."""
    if kind not in ("relative_reduction", "ratio"):
        raise ValueError(f"kind must be 'relative_reduction' or 'ratio', got {kind!r}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    z_quantile(confidence)
    m = METRICS[metric]
    vb = prepare_trials(baseline, exclude_degraded=exclude_degraded, _arm=0)
    vt = prepare_trials(treated, exclude_degraded=exclude_degraded, _arm=1)
    xb, cb = metric_population(vb, m)
    xt, ct = metric_population(vt, m)

    def combine(b: np.ndarray | float, t: np.ndarray | float) -> Any:
        with np.errstate(invalid="ignore", divide="ignore"):
            b_arr, t_arr = np.asarray(b, dtype=float), np.asarray(t, dtype=float)
            out = (b_arr - t_arr) / b_arr if kind == "relative_reduction" else t_arr / b_arr
            return np.where(b_arr == 0, np.nan, out)

    base_value = float(xb.mean()) if xb.size else math.nan
    treat_value = float(xt.mean()) if xt.size else math.nan
    value = float(combine(base_value, treat_value))
    shared = set(cb) & set(ct)
    paired = bool(shared)
    low = high = math.nan
    n_valid = 0
    if n_boot > 0 and len(set(cb)) >= 2 and len(set(ct)) >= 2:
        rng = np.random.default_rng(seed)
        if paired:
            order = {c: i for i, c in enumerate(dict.fromkeys([*cb, *ct]))}
            sb, nb = cluster_sums(cb, xb, order)
            st, nt = cluster_sums(ct, xt, order)
            rb, rt = draw_ratio(rng, n_boot, [(sb, nb), (st, nt)])
        else:
            ob = {c: i for i, c in enumerate(dict.fromkeys(cb))}
            ot = {c: i for i, c in enumerate(dict.fromkeys(ct))}
            (rb,) = draw_ratio(rng, n_boot, [cluster_sums(cb, xb, ob)])
            (rt,) = draw_ratio(rng, n_boot, [cluster_sums(ct, xt, ot)])
        low, high, n_valid = percentile_interval(combine(rb, rt), confidence)
    return ComparisonResult(
        metric=metric,
        kind=kind,
        value=value,
        baseline=base_value,
        treated=treat_value,
        boot_low=low,
        boot_high=high,
        n_baseline=int(xb.size),
        n_treated=int(xt.size),
        paired=paired,
        n_shared_latents=len(shared),
        n_boot_valid=n_valid,
        excluded_baseline=dict(vb.excluded),
        excluded_treated=dict(vt.excluded),
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
    )


def relative_reduction(
    baseline: TrialsLike,
    treated: TrialsLike,
    metric: str = "esr_rate",
    *,
    exclude_degraded: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> ComparisonResult:
    """Relative reduction of ``metric`` (a key of :data:`METRICS`): ``(baseline - treated) / baseline``,
    e.g. exp 3's reduction of the multi-attempt or ESR rate under OTD ablation.  ``nan`` when the
    baseline value is 0.  Interval: latent-clustered bootstrap, paired when the arms share latents."""
    return compare(
        baseline, treated, metric, kind="relative_reduction",
        exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence,
    )


def ratio(
    baseline: TrialsLike,
    treated: TrialsLike,
    metric: str = "esr_rate",
    *,
    exclude_degraded: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> ComparisonResult:
    """Ratio of ``metric`` (a key of :data:`METRICS`): ``treated / baseline``, e.g. exp 5's meta-prompt
    factors.  ``nan`` when the baseline value is 0.  Interval: latent-clustered bootstrap, paired when the
    arms share latents."""
    return compare(
        baseline, treated, metric, kind="ratio",
        exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence,
    )
