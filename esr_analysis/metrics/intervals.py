"""Intervals for rates and means: Wilson, Wald (the authors'), Student-t, and the latent-clustered bootstrap.

Rates carry a **Wilson** score interval (no continuity correction; the authors' Wald interval is available
as :func:`wald_interval` to reproduce their figures) and means a Student-t interval. Both treat trials as
independent, which they are not: each latent contributes several trials. Every estimate therefore also
carries a percentile **bootstrap interval clustered by latent** (:func:`cluster_bootstrap_interval`):
latents, not trials, are resampled with replacement (seeded) and the estimate, a ratio of sums over the
drawn latents' trials, is recomputed. Formulas: ``docs/method.md#intervals``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

_BOOT_CELLS = 2_000_000  # bootstrap draws are made in chunks of at most this many cluster indices


def z_quantile(confidence: float) -> float:
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
    z = z_quantile(confidence)
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
    half = z_quantile(confidence) * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for a mean: ``mean +- t_{n-1, (1+confidence)/2} * sd / sqrt(n)`` (sd with ddof 1).

    ``(nan, nan)`` when ``n < 2``; a zero-width interval when all values are equal.
    """
    x = np.asarray(values, dtype=float)
    n = x.size
    z_quantile(confidence)  # validates confidence
    if n < 2:
        return math.nan, math.nan
    from scipy.special import stdtrit  # lazy; the t quantile (scipy.stats itself is slow to import)

    mean = float(x.mean())
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * float(x.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def cluster_sums(clusters: Sequence[Any], values: np.ndarray, order: dict[Any, int]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.fromiter((order[c] for c in clusters), dtype=np.int64, count=len(clusters))
    sums = np.bincount(idx, weights=values, minlength=len(order))
    counts = np.bincount(idx, minlength=len(order)).astype(float)
    return sums, counts


def draw_ratio(
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


def percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float, int]:
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
    z_quantile(confidence)
    order = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    if len(order) < 2 or n_boot <= 0:
        return math.nan, math.nan
    sums, counts = cluster_sums(clusters, x, order)
    (stats,) = draw_ratio(np.random.default_rng(seed), n_boot, [(sums, counts)])
    low, high, _ = percentile_interval(stats, confidence)
    return low, high
