"""Exp 1 (ESR rates at each latent's threshold) and exp 8 (no-steering baseline), ``docs/method.md#experiments``.

* **Exp 1**: for each latent, its ``n_prompts_per_latent`` distinct prompts, steered at the latent's
  calibrated threshold (SAE units, every position, the config's layer), graded with the latent's label.
* **Exp 8**: the same latents, prompts and seeds with no intervention; the label still goes to the judge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esr_analysis.experiments.trials import TrialSpec, latent_prompts, run_trials, trial_seed


def exp1_specs(session: Any, thresholds: dict[int, float]) -> list[TrialSpec]:
    """The trials of exp 1 for ``{latent: threshold}``."""
    return [TrialSpec(prompt=p, latent=lat, boost=float(thr), seed=trial_seed(session, lat, p), condition="steered")
            for lat, thr in thresholds.items() for p in latent_prompts(session, lat)]


def exp8_specs(session: Any, latents: list[int]) -> list[TrialSpec]:
    """The trials of exp 8: exp 1's latents, prompts and seeds, unsteered."""
    return [TrialSpec(prompt=p, latent=lat, boost=None, seed=trial_seed(session, lat, p), condition="no_steering")
            for lat in latents for p in latent_prompts(session, lat)]


def run_exp1(session: Any, run_dir: str | Path, thresholds: dict[int, float]) -> Path:
    """Run (or resume) exp 1 into the store run ``run_dir``."""
    return run_trials(session, run_dir, "exp1", exp1_specs(session, thresholds),
                      extra={"thresholds": {str(k): v for k, v in thresholds.items()}})


def run_exp8(session: Any, run_dir: str | Path, latents: list[int]) -> Path:
    """Run (or resume) exp 8 into the store run ``run_dir``."""
    return run_trials(session, run_dir, "exp8", exp8_specs(session, latents), extra={"latents": list(latents)})
