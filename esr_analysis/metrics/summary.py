"""ESR metrics, with honest uncertainty and counted exclusions.

Definitions (McKenzie et al. 2026; ``docs/../shared/reference/esr-method.md`` §3)
-------------------------------------------------------------------------------
For one trial take the judge's attempts **in order** and keep those whose ``score`` is a number (null,
missing, NaN or non-numeric scores are dropped).  Let ``k`` be the number of kept attempts, ``s_1`` the
first kept score and ``s_k`` the last (0-100).

A trial is **valid** when it has no error (neither the trial's ``error`` nor the grade's ``error``), it
has been graded, and ``k >= 1``.  Every other trial is **excluded from every denominator** and counted by
reason: ``"error"``, ``"ungraded"``, ``"no_scored_attempts"`` (and ``"degraded"`` only when
``exclude_degraded=True``; the paper's headline numbers keep degraded outputs).

* first-attempt score: mean of ``s_1`` over valid trials.
* last-attempt score: mean of ``s_k`` over valid trials.
* multi-attempt rate: fraction of valid trials with ``k > 1``.
* improvement: ``s_k - s_1``, defined only for multi-attempt trials; the mean improvement averages it
  over multi-attempt trials (``single_attempt_as_zero=True`` gives the exp 8 variant: the mean over all
  valid trials with single-attempt trials counted as 0).
* improvement rate: among valid multi-attempt trials, the fraction with ``s_k > s_1`` (strict).
* ESR rate: fraction of **all** valid trials with ``k > 1`` and ``s_k > s_1``.
* degraded: the response contains a run of at least 5 identical consecutive whitespace-delimited words,
  the repeated word being longer than 1 character.  The degraded rate is over valid trials that carry a
  response text.
* relative reduction: ``(baseline - treated) / baseline`` of any metric above; ratio: ``treated / baseline``.

Uncertainty
-----------
Rates carry a **Wilson** score interval (no continuity correction; the authors' Wald interval is available as
:func:`wald_interval` to reproduce their figures) and means a Student-t interval
(``mean +- t_{n-1} * sd / sqrt(n)``, ddof 1).  Both treat trials as independent, which they are not:
each latent contributes several trials.  Every estimate therefore also carries a percentile **bootstrap
interval clustered by latent**: latents (not trials) are resampled with replacement, seeded, and the
estimate (a ratio of sums over the resampled latents' trials) is recomputed.  Trials without a latent are
their own cluster.  Comparisons (reductions, ratios) use the same cluster bootstrap, **paired** when the
two arms share latents (the union of latents is resampled jointly, so a latent drawn contributes its trials
in both arms) and independent per arm otherwise.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import groupby
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEGRADED_MIN_RUN",
    "EXCLUSION_REASONS",
    "METRICS",
    "ComparisonResult",
    "MeanResult",
    "RateResult",
    "SUMMARY_METRICS",
    "TrialScores",
    "ValidTrials",
    "cluster_bootstrap_interval",
    "degraded_rate",
    "esr_rate",
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

DEGRADED_MIN_RUN = 5
EXCLUSION_REASONS: tuple[str, ...] = ("error", "ungraded", "no_scored_attempts", "degraded")
_BOOT_CELLS = 2_000_000  # bootstrap draws are made in chunks of at most this many cluster indices


# --------------------------------------------------------------------------------------------------
# Per-trial definitions
# --------------------------------------------------------------------------------------------------


def _as_score(value: Any) -> float | None:
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
        score = _as_score(attempt.get("score") if isinstance(attempt, Mapping) else None)
        if score is not None:
            out.append(score)
    return out


def first_score(scores: Sequence[float]) -> float | None:
    """``s_1``: the first scored attempt's score, ``None`` when there is no scored attempt."""
    return float(scores[0]) if len(scores) else None


def last_score(scores: Sequence[float]) -> float | None:
    """``s_k``: the last scored attempt's score, ``None`` when there is no scored attempt."""
    return float(scores[-1]) if len(scores) else None


def is_multi_attempt(scores: Sequence[float]) -> bool:
    """Multi-attempt: more than one scored attempt (``k > 1``)."""
    return len(scores) > 1


def improvement(scores: Sequence[float]) -> float | None:
    """Improvement ``s_k - s_1``; defined only for multi-attempt trials (``None`` when ``k <= 1``)."""
    return float(scores[-1]) - float(scores[0]) if len(scores) > 1 else None


def is_improved(scores: Sequence[float]) -> bool | None:
    """Improved: ``s_k > s_1`` (strict); defined only for multi-attempt trials (``None`` when ``k <= 1``)."""
    return bool(scores[-1] > scores[0]) if len(scores) > 1 else None


def is_esr(scores: Sequence[float]) -> bool:
    """ESR episode: ``k > 1`` and ``s_k > s_1`` (strict); ``False`` for single- or zero-attempt trials."""
    return len(scores) > 1 and scores[-1] > scores[0]


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


# --------------------------------------------------------------------------------------------------
# Normalising trials
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialScores:
    """The numbers every metric needs from one valid trial.

    ``cluster`` is the latent (or a unique per-trial key when the trial has none); ``k``, ``s1``, ``sk``
    as defined in the module docstring; ``degraded`` is ``None`` when the response text is unknown.
    """

    cluster: Any
    k: int
    s1: float
    sk: float
    degraded: bool | None


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


def _missing(value: Any) -> bool:
    """None, NaN, or a pandas missing marker (``pd.NA``/``NaT``), without importing pandas."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def _truthy(value: Any) -> bool:
    """A flag that may be a Python/numpy bool or a pandas missing marker (missing counts as true)."""
    return True if _missing(value) else bool(value)


def _as_mapping(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        return obj
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump()
    if hasattr(obj, "__dict__"):
        return vars(obj)
    raise TypeError(f"cannot read a trial from {type(obj).__name__}; pass dicts, Trials or a DataFrame")


def _rows(trials: Any) -> list[Mapping[str, Any]]:
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
    if isinstance(grade, Mapping) and not _missing(grade.get("error")) and grade.get("error") != "":
        error = error if not _missing(error) and error != "" else grade.get("error")
    if not _missing(error) and error != "":
        return "error", None
    if isinstance(grade, Mapping):
        scores: Any = scored_attempts(grade)
    elif "scores" in row and not _missing(row.get("scores")):
        scores = [s for s in (_as_score(v) for v in row["scores"]) if s is not None]
    elif "n_attempts" in row and _truthy(row.get("graded", True)) and not _missing(row.get("n_attempts")):
        k = int(row["n_attempts"])
        s1, sk = _as_score(row.get("first_score")), _as_score(row.get("last_score"))
        if k < 1 or s1 is None or sk is None:
            return "no_scored_attempts", None
        return None, (k, s1, sk)
    else:
        return "ungraded", None
    if not scores:
        return "no_scored_attempts", None
    return None, scores


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
    for i, row in enumerate(_rows(trials)):
        reason, scores = score_trial(row)
        if reason is not None or scores is None:
            excluded[reason or "ungraded"] += 1
            continue
        if isinstance(scores, tuple):
            k, s1, sk = scores
        else:
            k, s1, sk = len(scores), scores[0], scores[-1]
        text = row.get("response")
        degraded = is_degraded(text) if isinstance(text, str) else None
        if exclude_degraded and degraded:
            excluded["degraded"] += 1
            continue
        cluster = row.get(cluster_key)
        if _missing(cluster):
            cluster = ("__trial__", _arm, i)
        out.append(TrialScores(cluster=cluster, k=int(k), s1=float(s1), sk=float(sk), degraded=degraded))
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
    for row in _rows(trials):
        reason, scores = score_trial(row)
        text = row.get("response")
        rec: dict[str, Any] = {
            "cluster": None if _missing(row.get(cluster_key)) else row.get(cluster_key),
            "excluded": reason,
            "k": None, "s1": None, "sk": None, "multi_attempt": None, "improvement": None, "improved": None,
            "esr": None, "degraded": is_degraded(text) if isinstance(text, str) else None,
        }
        if reason is None and scores is not None:
            k, s1, sk = scores if isinstance(scores, tuple) else (len(scores), scores[0], scores[-1])
            rec.update(k=int(k), s1=float(s1), sk=float(sk), multi_attempt=k > 1,
                       improvement=(sk - s1) if k > 1 else None, improved=(sk > s1) if k > 1 else None,
                       esr=bool(k > 1 and sk > s1))
        out.append(rec)
    df = pd.DataFrame(out, columns=["cluster", "excluded", "k", "s1", "sk", "multi_attempt", "improvement",
                                    "improved", "esr", "degraded"])
    df["k"] = df["k"].astype("Int64")
    for col in ("s1", "sk", "improvement"):
        df[col] = df[col].astype("float64")
    for col in ("multi_attempt", "improved", "esr", "degraded"):
        df[col] = df[col].astype("boolean")
    return df


# --------------------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------------------


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``count / n`` (no continuity correction).

    ``centre = (p + z^2/(2n)) / (1 + z^2/n)``, ``half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2))``
    with ``p = count / n`` and ``z`` the normal quantile for ``confidence``.  ``(nan, nan)`` when ``n == 0``.
    """
    if n < 0 or count < 0 or count > n:
        raise ValueError(f"need 0 <= count <= n, got count={count}, n={n}")
    if n == 0:
        return math.nan, math.nan
    z = _z(confidence)
    p = count / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    # exact endpoints at the boundaries (avoid 1e-17 round-off excluding p itself)
    if count == 0:
        low = 0.0
    if count == n:
        high = 1.0
    return low, high


def wald_interval(count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wald (normal-approximation) interval ``p +- z * sqrt(p(1-p)/n)``, **unclipped**: the authors'
    interval, provided only to reproduce their figures (it collapses to zero width at 0 % and 100 % and
    undercovers near them; prefer :func:`wilson_interval`).  ``(nan, nan)`` when ``n == 0``."""
    if n < 0 or count < 0 or count > n:
        raise ValueError(f"need 0 <= count <= n, got count={count}, n={n}")
    if n == 0:
        return math.nan, math.nan
    p = count / n
    half = _z(confidence) * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for a mean: ``mean +- t_{n-1, (1+confidence)/2} * sd / sqrt(n)`` (sd with ddof 1).

    ``(nan, nan)`` when ``n < 2``; a zero-width interval when all values are equal.
    """
    x = np.asarray(values, dtype=float)
    n = x.size
    _z(confidence)  # validates confidence
    if n < 2:
        return math.nan, math.nan
    from scipy.special import stdtrit  # lazy; the t quantile (scipy.stats itself is slow to import)

    mean = float(x.mean())
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * float(x.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def _cluster_sums(clusters: Sequence[Any], values: np.ndarray, order: dict[Any, int]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.fromiter((order[c] for c in clusters), dtype=np.int64, count=len(clusters))
    sums = np.bincount(idx, weights=values, minlength=len(order))
    counts = np.bincount(idx, minlength=len(order)).astype(float)
    return sums, counts


def _draw_ratio(
    rng: np.random.Generator, n_boot: int, arms: Sequence[tuple[np.ndarray, np.ndarray]]
) -> list[np.ndarray]:
    """Resample clusters jointly for all ``arms`` (aligned per-cluster sums/counts); ratio of sums per arm."""
    n_clusters = len(arms[0][0])
    out = [np.empty(n_boot) for _ in arms]
    chunk = max(1, _BOOT_CELLS // max(1, n_clusters))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n_clusters, size=(stop - start, n_clusters))
        for j, (sums, counts) in enumerate(arms):
            with np.errstate(invalid="ignore", divide="ignore"):
                out[j][start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    return out


def _percentile(stats: np.ndarray, confidence: float) -> tuple[float, float, int]:
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return math.nan, math.nan, 0
    alpha = 1 - confidence
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), int(finite.size)


def cluster_bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[Any],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (or a proportion, with 0/1 values), clustered.

    Each replicate draws as many clusters as there are, uniformly with replacement (``numpy`` generator
    seeded with ``seed``), and recomputes ``sum(values) / count`` over all trials of the drawn clusters
    (a cluster drawn twice counts twice).  Returns the ``(1-confidence)/2`` and ``(1+confidence)/2``
    quantiles; ``(nan, nan)`` for ``n_boot == 0`` or fewer than 2 clusters (one cluster says nothing
    about between-latent variation).  With one trial per cluster this is the ordinary iid bootstrap.
    """
    x = np.asarray(values, dtype=float)
    if x.size != len(clusters):
        raise ValueError(f"values ({x.size}) and clusters ({len(clusters)}) differ in length")
    _z(confidence)
    order = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    if len(order) < 2 or n_boot <= 0:
        return math.nan, math.nan
    sums, counts = _cluster_sums(clusters, x, order)
    (stats,) = _draw_ratio(np.random.default_rng(seed), n_boot, [(sums, counts)])
    low, high, _ = _percentile(stats, confidence)
    return low, high


# --------------------------------------------------------------------------------------------------
# Metric registry
# --------------------------------------------------------------------------------------------------

Kind = Literal["rate", "mean"]


@dataclass(frozen=True)
class _Metric:
    name: str
    kind: Kind
    population: str
    include: Callable[[TrialScores], bool]
    value: Callable[[TrialScores], float]


METRICS: dict[str, _Metric] = {
    m.name: m
    for m in (
        _Metric("first_attempt_score", "mean", "valid trials", lambda t: True, lambda t: t.s1),
        _Metric("last_attempt_score", "mean", "valid trials", lambda t: True, lambda t: t.sk),
        _Metric("multi_attempt_rate", "rate", "valid trials", lambda t: True, lambda t: float(t.k > 1)),
        _Metric("mean_improvement", "mean", "multi-attempt trials", lambda t: t.k > 1, lambda t: t.sk - t.s1),
        _Metric(
            "mean_improvement_all",
            "mean",
            "valid trials (single-attempt = 0)",
            lambda t: True,
            lambda t: t.sk - t.s1 if t.k > 1 else 0.0,
        ),
        _Metric("improvement_rate", "rate", "multi-attempt trials", lambda t: t.k > 1, lambda t: float(t.sk > t.s1)),
        _Metric("esr_rate", "rate", "valid trials", lambda t: True, lambda t: float(t.k > 1 and t.sk > t.s1)),
        _Metric(
            "degraded_rate",
            "rate",
            "valid trials with a response",
            lambda t: t.degraded is not None,
            lambda t: float(bool(t.degraded)),
        ),
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


def _population(valid: ValidTrials, metric: _Metric) -> tuple[np.ndarray, list[Any]]:
    chosen = [t for t in valid.trials if metric.include(t)]
    return np.array([metric.value(t) for t in chosen], dtype=float), [t.cluster for t in chosen]


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


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


def _fmt_excluded(excluded: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(excluded.items()) if v)


def _estimate(
    trials: TrialsLike,
    name: str,
    *,
    exclude_degraded: bool,
    n_boot: int,
    seed: int,
    confidence: float,
) -> RateResult | MeanResult:
    metric = METRICS[name]
    valid = prepare_trials(trials, exclude_degraded=exclude_degraded)
    values, clusters = _population(valid, metric)
    n = int(values.size)
    boot_low, boot_high = cluster_bootstrap_interval(
        values, clusters, n_boot=n_boot, seed=seed, confidence=confidence
    )
    common = {
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


# --------------------------------------------------------------------------------------------------
# Public metric functions (one per definition)
# --------------------------------------------------------------------------------------------------


def first_attempt_score(
    trials: TrialsLike, *, exclude_degraded: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> MeanResult:
    """First-attempt score: the mean of ``s_1`` (0-100) over all valid trials."""
    return _estimate(trials, "first_attempt_score", exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def last_attempt_score(
    trials: TrialsLike, *, exclude_degraded: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> MeanResult:
    """Last-attempt score: the mean of ``s_k`` (0-100) over all valid trials."""
    return _estimate(trials, "last_attempt_score", exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def multi_attempt_rate(
    trials: TrialsLike, *, exclude_degraded: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> RateResult:
    """Multi-attempt rate: the fraction of valid trials with more than one scored attempt (``k > 1``)."""
    return _estimate(trials, "multi_attempt_rate", exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


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
    return _estimate(trials, name, exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def improvement_rate(
    trials: TrialsLike, *, exclude_degraded: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> RateResult:
    """Improvement rate: among valid multi-attempt trials (``k > 1``), the fraction with ``s_k > s_1``
    (strict; ties do not count)."""
    return _estimate(trials, "improvement_rate", exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def esr_rate(
    trials: TrialsLike, *, exclude_degraded: bool = False, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> RateResult:
    """ESR rate: the fraction of **all** valid trials with ``k > 1`` and ``s_k > s_1`` (strict)."""
    return _estimate(trials, "esr_rate", exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


def degraded_rate(
    trials: TrialsLike, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> RateResult:
    """Degraded rate: the fraction of valid trials with a response text whose response is degraded
    (:func:`is_degraded`: >= 5 identical consecutive whitespace-delimited words longer than 1 character)."""
    return _estimate(trials, "degraded_rate", exclude_degraded=False, n_boot=n_boot, seed=seed, confidence=confidence)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------------


def _compare(
    kind: Literal["relative_reduction", "ratio"],
    baseline: TrialsLike,
    treated: TrialsLike,
    metric: str,
    *,
    exclude_degraded: bool,
    n_boot: int,
    seed: int,
    confidence: float,
) -> ComparisonResult:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    _z(confidence)
    m = METRICS[metric]
    vb = prepare_trials(baseline, exclude_degraded=exclude_degraded, _arm=0)
    vt = prepare_trials(treated, exclude_degraded=exclude_degraded, _arm=1)
    xb, cb = _population(vb, m)
    xt, ct = _population(vt, m)

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
            sb, nb = _cluster_sums(cb, xb, order)
            st, nt = _cluster_sums(ct, xt, order)
            rb, rt = _draw_ratio(rng, n_boot, [(sb, nb), (st, nt)])
        else:
            ob = {c: i for i, c in enumerate(dict.fromkeys(cb))}
            ot = {c: i for i, c in enumerate(dict.fromkeys(ct))}
            (rb,) = _draw_ratio(rng, n_boot, [_cluster_sums(cb, xb, ob)])
            (rt,) = _draw_ratio(rng, n_boot, [_cluster_sums(ct, xt, ot)])
        low, high, n_valid = _percentile(combine(rb, rt), confidence)
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
    return _compare(
        "relative_reduction", baseline, treated, metric,
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
    return _compare(
        "ratio", baseline, treated, metric,
        exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence,
    )


# --------------------------------------------------------------------------------------------------
# Summary table
# --------------------------------------------------------------------------------------------------

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
) -> pd.DataFrame:
    """The report table: one row per metric (and per group of ``by`` columns, if given).

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
    rows = _rows(trials)
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"cannot group by {missing}: not a trial field")
        key = tuple(None if _missing(row.get(k)) else row.get(k) for k in keys)  # NaN != NaN: one null group
        groups.setdefault(key, []).append(row)
    if not groups:
        groups[tuple(None for _ in keys)] = []
    table: list[dict[str, Any]] = []
    for group_key, group_rows in groups.items():
        valid = prepare_trials(group_rows, exclude_degraded=exclude_degraded)
        for name in names:
            est = _estimate(
                valid, name, exclude_degraded=exclude_degraded, n_boot=n_boot, seed=seed, confidence=confidence
            )
            row = est.as_row()
            table.append({**dict(zip(keys, group_key, strict=True)), **{c: row[c] for c in SUMMARY_COLUMNS}})
    out = pd.DataFrame(table, columns=[*keys, *SUMMARY_COLUMNS])
    out["count"] = out["count"].astype("Int64")
    return out
