"""Exp 2: the boost sweep (Fig. 3), ``docs/method.md#experiments``.

Two level families, each on the same prompts (and seeds) of a latent at every level:

* ``sigma`` (the authors' definition): ``mu`` and ``sigma`` (population SD, ddof 0) of the thresholds of the
  run's latents; levels ``linspace(mu - r*sigma, mu + r*sigma, n_levels)`` clamped at 0 (clamped levels merge
  into one level 0); the **same absolute levels for every latent**. The condition is ``sigma:<z>`` with
  ``z = (level - mu) / sigma`` (the x-axis of Fig. 3). Unlike the authors, mu and sigma come from this run's
  thresholds, not from whatever a cache holds.
* ``multiple``: ``m * threshold_latent`` for each ``m`` in ``boost.multiples``; condition ``multiple:<m>``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from esr_analysis.experiments.trials import TrialSpec, latent_prompts, run_trials, trial_seed


def sigma_levels(thresholds: list[float], n_levels: int = 10, range_std: float = 3.0) -> tuple[list[float], float, float]:
    """``(levels, mu, sigma)``: evenly spaced levels over mu +- range_std*sigma, clamped at 0, deduplicated."""
    import numpy as np

    if not thresholds:
        raise ValueError("sigma levels need at least one threshold")
    mu = statistics.fmean(thresholds)
    sigma = statistics.pstdev(thresholds)
    raw = np.linspace(mu - range_std * sigma, mu + range_std * sigma, n_levels)
    levels: list[float] = []
    for v in raw:
        v = round(max(float(v), 0.0), 6)
        if v not in levels:
            levels.append(v)
    return levels, mu, sigma


def exp2_specs(session: Any, thresholds: dict[int, float]) -> tuple[list[TrialSpec], dict[str, Any]]:
    """The trials of exp 2 and a description of its levels."""
    b = session.config.boost
    specs: list[TrialSpec] = []
    info: dict[str, Any] = {}
    if "sigma" in b.modes:
        levels, mu, sigma = sigma_levels(list(thresholds.values()), b.n_levels, b.range_std)
        info.update({"sigma_levels": levels, "mu": mu, "sigma": sigma})
        for lat in thresholds:
            for p in latent_prompts(session, lat):
                for lv in levels:
                    z = (lv - mu) / sigma if sigma > 0 else 0.0
                    specs.append(TrialSpec(prompt=p, latent=lat, boost=lv, seed=trial_seed(session, lat, p),
                                           condition=f"sigma:{z:+.3f}", meta={"z": z, "mode": "sigma"}))
    if "multiple" in b.modes:
        info["multiples"] = list(b.multiples)
        for lat, thr in thresholds.items():
            for p in latent_prompts(session, lat):
                for m in b.multiples:
                    specs.append(TrialSpec(prompt=p, latent=lat, boost=round(m * thr, 6),
                                           seed=trial_seed(session, lat, p), condition=f"multiple:{m:g}",
                                           meta={"multiple": m, "mode": "multiple", "threshold": thr}))
    return specs, info


def run_exp2(session: Any, run_dir: str | Path, thresholds: dict[int, float]) -> Path:
    """Run (or resume) exp 2 into the store run ``run_dir``."""
    specs, info = exp2_specs(session, thresholds)
    return run_trials(session, run_dir, "exp2", specs,
                      extra={"levels": info, "thresholds": {str(k): v for k, v in thresholds.items()}})
