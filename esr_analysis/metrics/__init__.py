"""ESR metrics with their n, intervals and exclusions (definitions: ``docs/method.md#metrics``).

* :mod:`.definitions`: per-trial quantities (multi-attempt, improvement, improved, ESR episode, degraded)
  and the metric registry :data:`METRICS`; each metric is defined once, here.
* :mod:`.fluency`: per-text fluency measures and the degenerate rule (:func:`.fluency.fluency_measures`).
* :mod:`.trials`: which trials are valid, exclusions counted by reason, the per-trial table.
* :mod:`.intervals`: Wilson, Wald (the authors'), Student-t and latent-clustered bootstrap intervals.
* :mod:`.summary`: :func:`estimate`, :func:`summarize` (the report table), :func:`compare` (relative
  reduction or ratio between arms) and one function per metric.
"""

from __future__ import annotations

from esr_analysis.metrics.comparison import ComparisonResult, compare, ratio, relative_reduction
from esr_analysis.metrics.definitions import (
    DEGRADED_MIN_RUN,
    METRICS,
    SUMMARY_METRICS,
    MetricDefinition,
    TrialScores,
    first_score,
    improvement,
    is_degraded,
    is_esr,
    is_improved,
    is_multi_attempt,
    last_score,
    scored_attempts,
)
from esr_analysis.metrics.intervals import (
    cluster_bootstrap_interval,
    t_interval,
    wald_interval,
    wilson_interval,
)
from esr_analysis.metrics.summary import (
    SUMMARY_COLUMNS,
    MeanResult,
    RateResult,
    degraded_rate,
    esr_rate,
    estimate,
    first_attempt_score,
    improvement_rate,
    last_attempt_score,
    mean_improvement,
    multi_attempt_rate,
    summarize,
)
from esr_analysis.metrics.trials import EXCLUSION_REASONS, ValidTrials, per_trial, prepare_trials, score_trial

__all__ = [
    "DEGRADED_MIN_RUN",
    "EXCLUSION_REASONS",
    "METRICS",
    "SUMMARY_COLUMNS",
    "SUMMARY_METRICS",
    "ComparisonResult",
    "MeanResult",
    "MetricDefinition",
    "RateResult",
    "TrialScores",
    "ValidTrials",
    "cluster_bootstrap_interval",
    "compare",
    "degraded_rate",
    "esr_rate",
    "estimate",
    "first_attempt_score",
    "first_score",
    "improvement",
    "improvement_rate",
    "is_degraded",
    "is_esr",
    "is_improved",
    "is_multi_attempt",
    "last_attempt_score",
    "last_score",
    "mean_improvement",
    "multi_attempt_rate",
    "per_trial",
    "prepare_trials",
    "ratio",
    "relative_reduction",
    "score_trial",
    "scored_attempts",
    "summarize",
    "t_interval",
    "wald_interval",
    "wilson_interval",
]
