"""The ESR metrics, each defined once: per-trial quantities and the metric registry.

Definitions are stated in full, with the paper-vs-code choices, in ``docs/method.md`` (section
"Metrics", ``#metrics``); this module is their only implementation.

A trial's judge grade gives attempt scores in order; attempts whose ``score`` is not a number are dropped
(:func:`scored_attempts`). With ``k`` kept attempts, ``s_1`` the first kept score and ``s_k`` the last
(0-100), the per-trial quantities are the properties of :class:`TrialScores`:

* multi-attempt: ``k > 1``;
* improvement: ``s_k - s_1``, defined only for multi-attempt trials;
* improved: ``s_k > s_1`` (strict), defined only for multi-attempt trials;
* ESR episode: multi-attempt **and** improved;
* degraded (:func:`is_degraded`): the response contains a run of at least 5 identical consecutive
  whitespace-delimited words, the repeated word longer than 1 character.

Each metric of :data:`METRICS` is the mean of one per-trial value over one population of valid trials
(see :mod:`esr_analysis.metrics.trials` for validity and exclusions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Literal

DEGRADED_MIN_RUN = 5


def as_score(value: Any) -> float | None:
    """A judge score as a finite float, or ``None`` when it is null, NaN, boolean or not a number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def scored_attempts(grade: Mapping[str, Any] | None) -> list[float]:
    """Scores of the grade's attempts, in order, keeping only attempts whose ``score`` is a number.

    ``grade`` is a judge grade as a dict with ``attempts: [{..., "score": number | null}]`` (ours use
    ``text``, the authors' ``attempt_text``; only ``score`` is read).  A missing grade or missing attempts
    give ``[]``.
    """
    if not grade:
        return []
    attempts = grade.get("attempts") or []
    out: list[float] = []
    for attempt in attempts:
        score = as_score(attempt.get("score") if isinstance(attempt, Mapping) else None)
        if score is not None:
            out.append(score)
    return out


def first_score(scores: Sequence[float]) -> float | None:
    """``s_1``: the first scored attempt's score, ``None`` when there is no scored attempt."""
    return float(scores[0]) if len(scores) else None


def last_score(scores: Sequence[float]) -> float | None:
    """``s_k``: the last scored attempt's score, ``None`` when there is no scored attempt."""
    return float(scores[-1]) if len(scores) else None


@dataclass(frozen=True)
class TrialScores:
    """The numbers every metric needs from one valid trial, and the per-trial definitions on them.

    ``cluster`` is the latent (or a unique per-trial key when the trial has none); ``k``, ``s1``, ``sk`` as
    in the module docstring (``k >= 1``); ``degraded`` is ``None`` when the response text is unknown.
    """

    cluster: Any
    k: int
    s1: float
    sk: float
    degraded: bool | None = None

    @classmethod
    def from_scores(cls, scores: Sequence[float], cluster: Any = None) -> TrialScores | None:
        """The trial of a list of kept scores; ``None`` when the list is empty."""
        if not len(scores):
            return None
        return cls(cluster=cluster, k=len(scores), s1=float(scores[0]), sk=float(scores[-1]))

    @property
    def multi_attempt(self) -> bool:
        """More than one scored attempt (``k > 1``)."""
        return self.k > 1

    @property
    def improvement(self) -> float | None:
        """``s_k - s_1`` for a multi-attempt trial, else ``None``."""
        return self.sk - self.s1 if self.multi_attempt else None

    @property
    def improved(self) -> bool | None:
        """``s_k > s_1`` (strict) for a multi-attempt trial, else ``None``."""
        return self.sk > self.s1 if self.multi_attempt else None

    @property
    def esr(self) -> bool:
        """An ESR episode: multi-attempt and improved."""
        return bool(self.multi_attempt and self.improved)


def is_multi_attempt(scores: Sequence[float]) -> bool:
    """Multi-attempt: more than one scored attempt (``k > 1``)."""
    t = TrialScores.from_scores(scores)
    return t is not None and t.multi_attempt


def improvement(scores: Sequence[float]) -> float | None:
    """Improvement ``s_k - s_1``; defined only for multi-attempt trials (``None`` when ``k <= 1``)."""
    t = TrialScores.from_scores(scores)
    return None if t is None else t.improvement


def is_improved(scores: Sequence[float]) -> bool | None:
    """Improved: ``s_k > s_1`` (strict); defined only for multi-attempt trials (``None`` when ``k <= 1``)."""
    t = TrialScores.from_scores(scores)
    return None if t is None else t.improved


def is_esr(scores: Sequence[float]) -> bool:
    """ESR episode: ``k > 1`` and ``s_k > s_1`` (strict); ``False`` for single- or zero-attempt trials."""
    t = TrialScores.from_scores(scores)
    return t is not None and t.esr


def is_degraded(text: str | None, min_run: int = DEGRADED_MIN_RUN) -> bool:
    """Degraded output: at least ``min_run`` (5) identical consecutive whitespace-delimited words, where
    the repeated word is longer than 1 character.

    Words are ``text.split()`` (no case folding, punctuation kept), so ``"the the the the the"`` is
    degraded but ``"a a a a a a"`` is not, and a different word in between breaks the run.
    """
    if not text:
        return False
    return any(
        len(word) > 1 and sum(1 for _ in run) >= min_run for word, run in groupby(text.split())
    )


Kind = Literal["rate", "mean"]


@dataclass(frozen=True)
class MetricDefinition:
    """One metric: the mean of ``value(t)`` over the valid trials ``t`` with ``include(t)``.

    ``kind`` says whether it is a rate (0/1 values: Wilson interval) or a mean (Student-t interval);
    ``population`` names the denominator in reports.
    """

    name: str
    kind: Kind
    population: str
    include: Callable[[TrialScores], bool]
    value: Callable[[TrialScores], float]


def _improvement_or_zero(t: TrialScores) -> float:
    return t.improvement if t.improvement is not None else 0.0


METRICS: dict[str, MetricDefinition] = {
    m.name: m
    for m in (
        MetricDefinition("first_attempt_score", "mean", "valid trials", lambda t: True, lambda t: t.s1),
        MetricDefinition("last_attempt_score", "mean", "valid trials", lambda t: True, lambda t: t.sk),
        MetricDefinition("multi_attempt_rate", "rate", "valid trials", lambda t: True,
                         lambda t: float(t.multi_attempt)),
        MetricDefinition("mean_improvement", "mean", "multi-attempt trials", lambda t: t.multi_attempt,
                         _improvement_or_zero),
        MetricDefinition("mean_improvement_all", "mean", "valid trials (single-attempt = 0)", lambda t: True,
                         _improvement_or_zero),
        MetricDefinition("improvement_rate", "rate", "multi-attempt trials", lambda t: t.multi_attempt,
                         lambda t: float(bool(t.improved))),
        MetricDefinition("esr_rate", "rate", "valid trials", lambda t: True, lambda t: float(t.esr)),
        MetricDefinition("degraded_rate", "rate", "valid trials with a response", lambda t: t.degraded is not None,
                         lambda t: float(bool(t.degraded))),
    )
}
"""Each metric as (population filter, per-trial value); the estimate is the mean value over the population."""

SUMMARY_METRICS: tuple[str, ...] = (
    "first_attempt_score",
    "last_attempt_score",
    "multi_attempt_rate",
    "mean_improvement",
    "improvement_rate",
    "esr_rate",
    "degraded_rate",
)
