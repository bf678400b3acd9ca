"""Which trials count, and why not: validity, exclusions by reason, and the per-trial table.

A trial is **valid** when it has no error (neither the trial's ``error`` nor its grade's), it has been
graded, and it has at least one scored attempt. Every other trial is **excluded from every denominator**
and counted by reason (:data:`EXCLUSION_REASONS`): ``"error"``, ``"ungraded"``, ``"no_scored_attempts"``,
and ``"degraded"`` only with ``exclude_degraded=True`` (the paper's headline numbers keep degraded
outputs). See ``docs/method.md#metrics``.

Trials can come as a DataFrame from :func:`esr_analysis.store.load_run`, a list of
:class:`~esr_analysis.store.Trial` objects, or a list of dicts (ours or the authors' raw trial dicts).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from esr_analysis.metrics.definitions import (
    MetricDefinition,
    TrialScores,
    as_score,
    is_degraded,
    scored_attempts,
)

if TYPE_CHECKING:
    import pandas as pd

EXCLUSION_REASONS: tuple[str, ...] = ("error", "ungraded", "no_scored_attempts", "degraded")


@dataclass(frozen=True)
class ValidTrials:
    """Valid trials plus the count of excluded trials by reason (see :data:`EXCLUSION_REASONS`)."""

    trials: tuple[TrialScores, ...]
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def n_valid(self) -> int:
        return len(self.trials)

    @property
    def n_excluded(self) -> int:
        return sum(self.excluded.values())


TrialsLike = Any  # pandas.DataFrame | Iterable[Mapping | pydantic model] | ValidTrials


def is_missing(value: Any) -> bool:
    """None, NaN, or a pandas missing marker (``pd.NA``/``NaT``), without importing pandas."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def _truthy(value: Any) -> bool:
    """A flag that may be a Python/numpy bool or a pandas missing marker (missing counts as true)."""
    return True if is_missing(value) else bool(value)


def _as_mapping(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        return obj
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump()
    if hasattr(obj, "__dict__"):
        return vars(obj)
    raise TypeError(f"cannot read a trial from {type(obj).__name__}; pass dicts, Trials or a DataFrame")


def trial_rows(trials: Any) -> list[Mapping[str, Any]]:
    if hasattr(trials, "to_dict") and hasattr(trials, "columns"):  # a pandas DataFrame
        return trials.to_dict("records")
    if isinstance(trials, Mapping):
        raise TypeError("pass a list of trials or a DataFrame, not a single mapping")
    return [_as_mapping(t) for t in trials]


def score_trial(row: Mapping[str, Any]) -> tuple[str | None, list[float] | tuple[int, float, float] | None]:
    """Read one trial record: return ``(exclusion_reason, scores)``.

    Accepts, in order of preference: a ``grade`` dict (our :class:`~esr_analysis.store.Trial`), the
    authors' ``score`` dict, a ``scores`` list, or flattened ``n_attempts``/``first_score``/``last_score``
    columns (as produced by :func:`esr_analysis.store.load_run`; then ``scores`` is ``(k, s_1, s_k)``).
    ``exclusion_reason`` is ``None`` for a valid trial.
    """
    error = row.get("error")
    grade = row.get("grade")
    if not isinstance(grade, Mapping) and isinstance(row.get("score"), Mapping):
        grade = row["score"]  # the authors' raw trial dict
    if isinstance(grade, Mapping) and not is_missing(grade.get("error")) and grade.get("error") != "":
        error = error if not is_missing(error) and error != "" else grade.get("error")
    if not is_missing(error) and error != "":
        return "error", None
    if isinstance(grade, Mapping):
        scores: Any = scored_attempts(grade)
    elif "scores" in row and not is_missing(row.get("scores")):
        scores = [s for s in (as_score(v) for v in row["scores"]) if s is not None]
    elif "n_attempts" in row and _truthy(row.get("graded", True)) and not is_missing(row.get("n_attempts")):
        k = int(row["n_attempts"])
        s1, sk = as_score(row.get("first_score")), as_score(row.get("last_score"))
        if k < 1 or s1 is None or sk is None:
            return "no_scored_attempts", None
        return None, (k, s1, sk)
    else:
        return "ungraded", None
    if not scores:
        return "no_scored_attempts", None
    return None, scores


def _trial_scores(scores: list[float] | tuple[int, float, float], cluster: Any, degraded: bool | None
                  ) -> TrialScores:
    """A :class:`TrialScores` from :func:`score_trial`'s scores (a list, or a flattened ``(k, s_1, s_k)``)."""
    k, s1, sk = scores if isinstance(scores, tuple) else (len(scores), scores[0], scores[-1])
    return TrialScores(cluster=cluster, k=int(k), s1=float(s1), sk=float(sk), degraded=degraded)


def prepare_trials(
    trials: TrialsLike,
    *,
    exclude_degraded: bool = False,
    cluster_key: str = "latent",
    _arm: int = 0,
) -> ValidTrials:
    """Split trials into valid ones (as :class:`TrialScores`) and excluded counts by reason.

    ``trials`` may be a DataFrame from :func:`esr_analysis.store.load_run`, a list of
    :class:`~esr_analysis.store.Trial` objects, or a list of dicts.  The cluster of a trial is its
    ``cluster_key`` value (the latent); a trial without one is its own cluster.  With
    ``exclude_degraded=True``, degraded responses (:func:`is_degraded`) are excluded as ``"degraded"``.
    """
    if isinstance(trials, ValidTrials):
        return trials
    excluded: Counter[str] = Counter()
    out: list[TrialScores] = []
    for i, row in enumerate(trial_rows(trials)):
        reason, scores = score_trial(row)
        if reason is not None or scores is None:
            excluded[reason or "ungraded"] += 1
            continue
        text = row.get("response")
        degraded = is_degraded(text) if isinstance(text, str) else None
        if exclude_degraded and degraded:
            excluded["degraded"] += 1
            continue
        cluster = row.get(cluster_key)
        if is_missing(cluster):
            cluster = ("__trial__", _arm, i)
        out.append(_trial_scores(scores, cluster, degraded))
    return ValidTrials(trials=tuple(out), excluded=dict(excluded))


def per_trial(trials: TrialsLike, *, cluster_key: str = "latent") -> pd.DataFrame:
    """One row per input trial (same order) with the per-trial quantities behind every metric.

    Columns: ``cluster`` (the ``cluster_key`` value), ``excluded`` (the exclusion reason, or ``None`` for a
    valid trial), ``k``, ``s1``, ``sk``, ``multi_attempt`` (k > 1), ``improvement`` (s_k - s_1, multi-attempt
    only), ``improved`` (s_k > s_1, multi-attempt only), ``esr`` (k > 1 and s_k > s_1), ``degraded``
    (:func:`is_degraded`, ``None`` without a response).  Quantities are null for excluded trials.
    """
    import pandas as pd

    out = []
    for row in trial_rows(trials):
        reason, scores = score_trial(row)
        text = row.get("response")
        rec: dict[str, Any] = {
            "cluster": None if is_missing(row.get(cluster_key)) else row.get(cluster_key),
            "excluded": reason,
            "k": None, "s1": None, "sk": None, "multi_attempt": None, "improvement": None, "improved": None,
            "esr": None, "degraded": is_degraded(text) if isinstance(text, str) else None,
        }
        if reason is None and scores is not None:
            t = _trial_scores(scores, None, None)
            rec.update(k=t.k, s1=t.s1, sk=t.sk, multi_attempt=t.multi_attempt, improvement=t.improvement,
                       improved=t.improved, esr=t.esr)
        out.append(rec)
    df = pd.DataFrame(out, columns=["cluster", "excluded", "k", "s1", "sk", "multi_attempt", "improvement",
                                    "improved", "esr", "degraded"])
    df["k"] = df["k"].astype("Int64")
    for col in ("s1", "sk", "improvement"):
        df[col] = df[col].astype("float64")
    for col in ("multi_attempt", "improved", "esr", "degraded"):
        df[col] = df[col].astype("boolean")
    return df


def metric_population(valid: ValidTrials, metric: MetricDefinition) -> tuple[np.ndarray, list[Any]]:
    """The values ``metric.value(t)`` over its population of ``valid`` trials, and their clusters."""
    chosen = [t for t in valid.trials if metric.include(t)]
    return np.array([metric.value(t) for t in chosen], dtype=float), [t.cluster for t in chosen]
