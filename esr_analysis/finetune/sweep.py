"""The mix-ratio sweep (the paper's exp 4 / Fig. 7): organisms that differ only in the self-correction fraction
``p`` of their training mix, each evaluated like the default organism, side by side.

:func:`mix_sweep` reads each organism's ``organism.json`` (its recipe and mix) and ``eval.json`` (written by
``scripts/evaluate_organism.py``) from its adapter directory and returns one row per organism, sorted by ``p``:
the mix counts and, for the steered condition (``organism``: exp 1 on the ESR prompts) and the unsteered one
(``organism_no_steer``: exp 8), ``n``, the multi-attempt rate, the ESR rate (each with its Wilson 95 % interval)
and the mean first-attempt score (with its interval). The organisms must share everything but ``p``: the
recipe fields in :data:`SAME_RECIPE` and the evaluation settings in :data:`SAME_EVAL` are checked, and a
mismatch is an error (a sweep over different recipes would not be a sweep).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from esr_analysis.errors import ConfigError

SAME_RECIPE = ("base_model", "steer_in_training", "steer_scope", "training")
"""``organism.json`` fields every organism of a sweep must share."""
SAME_EVAL = ("latents", "judge", "max_new_tokens", "n_prompts_per_latent", "rubric_hash")
"""``eval.json`` ``_meta`` fields every organism of a sweep must share (those present)."""
CONDITION_FIELDS = ("n", "multi_attempt_rate", "multi_attempt_ci", "esr_rate", "esr_ci", "first_attempt_score",
                    "first_attempt_ci", "degenerate_share")


def _read(adapter: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    org_path, eval_path = adapter / "organism.json", adapter / "eval.json"
    for p in (org_path, eval_path):
        if not p.is_file():
            raise ConfigError(f"{p} is missing: build the organism (scripts/build_organism.py) and evaluate it "
                              "(scripts/evaluate_organism.py --only organism) first")
    return json.loads(org_path.read_text()), json.loads(eval_path.read_text())


def mix_sweep(adapters: Sequence[str | Path]) -> dict[str, Any]:
    """``{"rows": [...], "recipe": {...}, "evaluation": {...}}`` for the organisms in ``adapters`` (adapter
    directories); see the module docstring."""
    if len(adapters) < 2:
        raise ConfigError("a sweep needs at least two organisms")
    rows, recipe, evaluation = [], None, None
    for adapter in map(Path, adapters):
        org, ev = _read(adapter)
        if "organism" not in ev:
            raise ConfigError(f"{adapter / 'eval.json'} has no steered 'organism' condition")
        this_recipe = {k: org.get(k) for k in SAME_RECIPE}
        meta = ev.get("_meta", {})
        this_eval = {k: meta[k] for k in SAME_EVAL if k in meta}
        if recipe is None:
            recipe, evaluation = this_recipe, this_eval
        else:  # an eval field recorded by only one of them (older eval.json files) is not a difference
            diff = [k for k in SAME_RECIPE if this_recipe[k] != recipe[k]] + \
                [k for k in SAME_EVAL if k in this_eval and k in (evaluation or {})
                 and this_eval[k] != (evaluation or {})[k]]
            if diff:
                raise ConfigError(f"{adapter.name} differs from the first organism in {diff}: not one sweep")
        row: dict[str, Any] = {"name": org["name"], "fraction": float(org["fraction"]),
                               "mix": {k: org.get("mix", {}).get(k) for k in
                                       ("n_self_correction", "n_normal", "pool_self_correction", "pool_normal",
                                        "n_trained_tokens_per_epoch")},
                               "final_loss": (org.get("training_result") or {}).get("losses", [None])[-1]
                               if isinstance(org.get("training_result"), dict) else None}
        for cond in ("organism", "organism_no_steer"):
            if cond in ev:
                row[cond] = {k: ev[cond].get(k) for k in CONDITION_FIELDS}
        rows.append(row)
    rows.sort(key=lambda r: r["fraction"])
    fractions = [r["fraction"] for r in rows]
    if len(set(fractions)) != len(fractions):
        raise ConfigError(f"two organisms with the same fraction: {fractions}")
    return {"rows": rows, "recipe": recipe, "evaluation": evaluation}
