"""Probabilistic bisection for a noisy root (Waeber, Frazier & Henderson 2013), as the ESR threshold search.

Definitions (``docs/method.md#calibration``)
--------------------------------
The unknown root ``x*`` (the boost at which the first-attempt score falls to the target) carries a
posterior on a regular grid of ``grid_size`` points over ``[lower, upper]``, starting from a Gaussian
``N(prior_mean, prior_std)`` truncated to the interval. Each step queries the posterior **median** ``x``
and observes a normalised score ``s`` in ``[0, 1]`` (mean first-attempt score / 100 over the step's
samples). Scores fall as the boost grows, so

* direction ``y = +1`` ("the root is above x, boost more") when ``s >= target``, else ``y = -1``;
* confidence ``p = P(B lies on the side of the target that y claims)`` with
  ``B ~ Beta(0.5 + c*s, 0.5 + c*(1-s))`` (``c = 5`` in the authors' code); if ``p < 0.5`` then ``y`` is
  flipped and ``p`` replaced by ``1 - p``;
* update: the density on the claimed side of ``x`` is multiplied by ``p``, the other side by ``1 - p``,
  and the grid cell holding ``x`` by ``sqrt(p (1 - p))``; then renormalised.

After the last step the estimate is the posterior median (the authors round it to 2 decimals).
Everything here is pure numpy/scipy: no model, no judge.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class BisectionStep:
    """One query of the search: the point, the observed normalised score, the direction and confidence."""

    step: int
    x: float
    score: float | None
    y: int | None = None
    p: float | None = None
    samples: list[float | None] = field(default_factory=list)
    note: str | None = None
    degenerate: list[bool] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "x": self.x, "score": self.score, "y": self.y, "p": self.p,
                "samples": self.samples, "degenerate": self.degenerate, "note": self.note}


class ProbabilisticBisection:
    """The posterior of one search (see the module docstring for the definitions)."""

    def __init__(self, *, lower: float, upper: float, prior_mean: float, prior_std: float, target: float,
                 grid_size: int = 10_000, confidence_scale: float = 5.0) -> None:
        if not upper > lower:
            raise ValueError(f"upper bound {upper} must exceed lower bound {lower}")
        if prior_std <= 0:
            raise ValueError(f"prior_std must be > 0, got {prior_std}")
        if not 0.0 <= target <= 1.0:
            raise ValueError(f"target must be a normalised score in [0, 1], got {target}")
        if grid_size < 3:
            raise ValueError("grid_size must be >= 3")
        self.lower, self.upper, self.target = float(lower), float(upper), float(target)
        self.confidence_scale = float(confidence_scale)
        self.grid = np.linspace(self.lower, self.upper, int(grid_size))
        dens = np.exp(-0.5 * ((self.grid - prior_mean) / prior_std) ** 2)
        if not np.isfinite(dens).all() or dens.sum() <= 0:
            dens = np.ones_like(self.grid)  # prior mass entirely outside the bounds: fall back to uniform
        self.density = dens / dens.sum()
        self.history: list[BisectionStep] = []

    def median(self) -> float:
        """The posterior median: the first grid point where the cumulative mass reaches 1/2."""
        idx = int(np.searchsorted(np.cumsum(self.density), 0.5))
        return float(self.grid[min(idx, len(self.grid) - 1)])

    def confidence(self, score: float) -> tuple[int, float]:
        """``(y, p)`` for a normalised score (direction and its probability, ``p >= 0.5``)."""
        from scipy.stats import beta

        s = min(max(float(score), 0.0), 1.0)
        c = self.confidence_scale
        dist = beta(0.5 + c * s, 0.5 + c * (1.0 - s))
        y = 1 if s >= self.target else -1
        p = float(dist.sf(self.target)) if y == 1 else float(dist.cdf(self.target))
        if p < 0.5:
            y, p = -y, 1.0 - p
        return y, min(max(p, 1e-12), 1.0 - 1e-12)

    def update(self, x: float, score: float | None, *, samples: list[float | None] | None = None,
               note: str | None = None, degenerate: list[bool] | None = None) -> BisectionStep:
        """Apply one observation at ``x`` (``score=None`` records the step without updating); ``samples`` and
        ``degenerate`` (per-sample flags) are recorded with it."""
        step = BisectionStep(step=len(self.history), x=float(x), score=score, samples=list(samples or []), note=note,
                             degenerate=list(degenerate or []))
        if score is not None and math.isfinite(score):
            y, p = self.confidence(score)
            cell = int(np.argmin(np.abs(self.grid - x)))
            right = np.arange(len(self.grid)) > cell
            left = np.arange(len(self.grid)) < cell
            w = np.empty_like(self.density)
            w[right] = p if y == 1 else 1.0 - p
            w[left] = 1.0 - p if y == 1 else p
            w[cell] = math.sqrt(p * (1.0 - p))
            dens = self.density * w
            self.density = dens / dens.sum()
            step.y, step.p = y, p
        self.history.append(step)
        return step

    def estimate(self, decimals: int | None = 2) -> float:
        """The posterior median, rounded to ``decimals`` (``None``: unrounded)."""
        m = self.median()
        return round(m, decimals) if decimals is not None else m


def find_root(score_fn: Callable[[float, random.Random], float], *, n_steps: int, rng: random.Random,
              **kwargs: Any) -> tuple[float, ProbabilisticBisection]:
    """Run a whole search against ``score_fn(x, rng) -> normalised score`` (sequential; for tests and
    synthetic checks). ``kwargs`` go to :class:`ProbabilisticBisection`. Returns (estimate, search)."""
    pb = ProbabilisticBisection(**kwargs)
    for _ in range(n_steps):
        x = pb.median()
        pb.update(x, score_fn(x, rng))
    return pb.estimate(None), pb
