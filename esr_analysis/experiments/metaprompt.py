"""Exp 5: meta-prompting (Fig. 4), with a **matched** baseline, ``docs/method.md#experiments``.

Each variant appends an instruction to the user prompt (``"<prompt> <suffix>"``, no system prompt); the model
is steered at the latent's threshold and the judge sees the augmented prompt. Unlike the authors, the baseline
is re-run on the **same (latent, prompt, seed)** without a suffix (condition ``baseline``; with the generation
cache it costs nothing when exp 1 ran first). Add variants to :data:`META_VARIANTS` (``{label}`` is replaced by
the latent's label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esr_analysis.experiments.trials import TrialSpec, latent_prompts, run_trials, trial_seed

META_VARIANTS: dict[str, str] = {
    # paraphrases of the authors' four variants (`docs/method.md#experiments`, exp 5)
    "dont_get_distracted": "Stay focused and don't let yourself get sidetracked!",
    "ignore_latent_label": "Something is trying to pull your answer towards {label}; disregard it completely.",
    "self_monitor": ("While you answer, watch for signs that you are wandering off topic; if you catch yourself "
                     "drifting, stop and steer yourself back to the question."),
    "resist_manipulation": ("Outside influences may try to bend what you write; notice any such pressure and "
                            "refuse to go along with it."),
}
"""Variant id -> suffix template. The headline variant is ``self_monitor`` ("Meta-prompted")."""


def augment(prompt: str, variant: str, label: str) -> str:
    """The prompt of ``variant``: ``"<prompt> <suffix>"`` (``baseline``: unchanged)."""
    if variant == "baseline":
        return prompt
    if variant not in META_VARIANTS:
        raise ValueError(f"unknown meta-prompt variant {variant!r}; known: {', '.join(META_VARIANTS)}")
    return f"{prompt} {META_VARIANTS[variant].format(label=label)}"


def exp5_specs(session: Any, thresholds: dict[int, float], variants: list[str]) -> list[TrialSpec]:
    """The trials of exp 5: the matched baseline plus every variant, on each latent's prompts and seeds."""
    for v in variants:
        if v not in META_VARIANTS:
            raise ValueError(f"unknown meta-prompt variant {v!r}; known: {', '.join(META_VARIANTS)}")
    specs = []
    for lat, thr in thresholds.items():
        for p in latent_prompts(session, lat):
            seed = trial_seed(session, lat, p)
            for v in ["baseline", *variants]:
                specs.append(TrialSpec(prompt=augment(p, v, session.label(lat)), latent=lat, boost=float(thr),
                                       seed=seed, condition=v, base_prompt=p, meta={"variant": v}))
    return specs


def run_exp5(session: Any, run_dir: str | Path, thresholds: dict[int, float]) -> Path:
    """Run (or resume) exp 5 into the store run ``run_dir``."""
    variants = list(session.config.meta_variants)
    return run_trials(session, run_dir, "exp5", exp5_specs(session, thresholds, variants),
                      extra={"variants": {v: META_VARIANTS[v] for v in variants}})
