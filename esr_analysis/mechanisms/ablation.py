"""Exp 3 (detector ablation) and exp 10 (random-latent ablation), paired with exp 1 (``docs/method.md#detectors``).

**Paired replay.** Each source trial of an exp 1 run (a steered trial: prompt, distractor latent, threshold in
SAE units, sampling seed) is generated again with the same prompt, latent, strength, seed, sampling settings and
scope, plus :class:`~esr_analysis.steering.interventions.AblateLatents` of the ablated set at the **steering
layer** over the same scope (every position with ``scope="all"``; the SAE error term is kept). It is graded by
the session's judge with the same label. The replayed trial records its source in ``key_extra`` and ``meta``
(``source_trial``), so every ablated trial has exactly one baseline partner.

**Resumable.** Each ablated set is one store run (``open_run(..., resume=True)``): trials already recorded are
skipped by content key, and the manifest records the ablated latents and a hash of the source trial ids, so a
run directory can never mix two sets or two subsets.

**Re-searched thresholds** (optional): the paired replay keeps each source trial's strength; with
``boosts`` (a threshold per latent, e.g. searched again with the detectors ablated,
:func:`~esr_analysis.experiments.calibration.calibrate` with ``ablate=``) each replay uses its latent's new
strength instead, and records the source strength in ``meta["source_boost"]``.

**Subset.** :func:`baseline_subset` draws a fixed, seeded subset of the source trials (the same for the detector
ablation and every random set), for machines where replaying every trial once per set is too slow.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from esr_analysis.seeds import derive_seed

DETECTOR_EXPERIMENT = "exp3"
NULL_EXPERIMENT = "exp10"


def source_trials(run: str | Path | Sequence[Any]) -> list[Any]:
    """The steered trials of an exp 1 store run (a directory or a list of :class:`~esr_analysis.store.Trial`)
    that can be replayed (a latent, a strength and a seed). ``ValueError`` if there is none."""
    from esr_analysis.store import read_trials

    trials = list(read_trials(run)[0]) if isinstance(run, str | Path) else list(run)
    kept = [t for t in trials if t.latent is not None and t.boost is not None and t.seed is not None
            and t.condition == "steered"]
    if not kept:
        raise ValueError(f"no replayable steered trials in {run if isinstance(run, str | Path) else 'the given trials'}"
                         " (an exp 1 run is needed)")
    return kept


def baseline_subset(trials: Sequence[Any], n: int | None, seed: int) -> list[Any]:
    """A fixed subset of ``n`` trials (all when ``n`` is ``None`` or not smaller): ``random.Random(derive_seed(
    seed, "detector-subset"))`` samples from the trials sorted by ``trial_id``; the result keeps that order."""
    ordered = sorted(trials, key=lambda t: t.trial_id)
    if n is None or n >= len(ordered):
        return ordered
    if n < 1:
        raise ValueError(f"the subset size must be >= 1, got {n}")
    picked = set(random.Random(derive_seed(seed, "detector-subset")).sample(range(len(ordered)), n))
    return [t for i, t in enumerate(ordered) if i in picked]


def subset_hash(trials: Sequence[Any]) -> str:
    """SHA-256 (first 16 hex digits) of the sorted source trial ids: the identity of a subset."""
    ids = "\n".join(sorted(t.trial_id for t in trials))
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def check_replay(session: Any, trials: Sequence[Any], latents: Sequence[int]) -> None:
    """Raise ``ValueError`` before any compute unless ``trials`` can be replayed by ``session`` with ``latents``
    ablated: same steering layer, scope and unit as the session, and valid latent indices."""
    from esr_analysis.sae.sliced import check_latents

    if not trials:
        raise ValueError("no source trials to replay")
    if not latents:
        raise ValueError("the ablated latent set is empty")
    check_latents(session.sae, list(latents))
    rubric = getattr(getattr(session, "judge", None), "rubric_hash", None)
    for t in trials:
        graded_with = (t.grade or {}).get("rubric_hash")
        if rubric is not None and graded_with is not None and graded_with != rubric:
            raise ValueError(f"trial {t.trial_id} was graded with rubric {graded_with[:12]}, the session's judge has "
                             f"{rubric[:12]}: a replay would be paired with a differently graded partner; regrade "
                             "the run first (`esr regrade SRC DST`)")
        steer = t.layers.steer
        if steer is not None and steer != session.steer_layer:
            raise ValueError(f"trial {t.trial_id} was steered at layer {steer}, the session steers at "
                             f"{session.steer_layer}: open the session of the run the trials came from")
        if (t.scope or "all") != session.config.scope or (t.unit or "sae") != "sae":
            raise ValueError(f"trial {t.trial_id} has scope {t.scope!r} / unit {t.unit!r}; the replay uses scope "
                             f"{session.config.scope!r} in SAE units")


def paired_specs(trials: Sequence[Any], latents: Sequence[int], condition: str,
                 key_extra: dict[str, Any] | None = None, boosts: Mapping[int, float] | None = None) -> list[Any]:
    """One :class:`~esr_analysis.experiments.trials.TrialSpec` per source trial: same prompt, latent, strength
    (``boosts[latent]`` instead when given) and seed, ``latents`` ablated, the source trial id in ``key_extra``
    and ``meta``."""
    from esr_analysis.experiments.trials import TrialSpec

    abl = tuple(sorted({int(i) for i in latents}))
    if boosts is not None:
        missing = sorted({t.latent for t in trials} - set(boosts))
        if missing:
            raise ValueError(f"no re-searched strength for latents {missing}")
    return [TrialSpec(prompt=t.prompt, latent=t.latent,
                      boost=float(t.boost if boosts is None else boosts[t.latent]), seed=int(t.seed),
                      condition=condition, base_prompt=(t.meta or {}).get("base_prompt"),
                      key_extra={**(key_extra or {}), "source_trial": t.trial_id},
                      meta={"source_trial": t.trial_id, "source_experiment": t.experiment,
                            **({"source_boost": float(t.boost)} if boosts is not None else {})}, ablate=abl)
            for t in trials]


def run_ablation(session: Any, run_dir: str | Path, trials: Sequence[Any], latents: Sequence[int], *,
                 experiment: str = DETECTOR_EXPERIMENT, condition: str = "detector_ablation",
                 key_extra: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                 boosts: Mapping[int, float] | None = None) -> Path:
    """Replay ``trials`` with ``latents`` ablated into the store run ``run_dir`` (created or resumed), at the
    source strengths or at ``boosts`` (per latent) when given."""
    from esr_analysis.experiments.trials import run_trials

    check_replay(session, trials, latents)
    abl = sorted({int(i) for i in latents})
    specs = paired_specs(trials, abl, condition, key_extra, boosts)
    info = {"ablated_latents": abl, "num_ablated_latents": len(abl), "n_source_trials": len(trials),
            "source_subset": subset_hash(trials),
            "strengths": "source" if boosts is None else {str(k): float(v) for k, v in sorted(boosts.items())},
            **(extra or {})}
    return run_trials(session, run_dir, experiment, specs, extra=info)


def run_random_sets(session: Any, root: str | Path, trials: Sequence[Any], sets: Sequence[Sequence[int]], *,
                    sampler: dict[str, Any] | None = None) -> list[Path]:
    """Exp 10: one paired ablation run per random set, ``<root>/set-00``, ``set-01``, ... (each resumable)."""
    for s in sets:
        check_replay(session, trials, s)
    out = []
    for i, s in enumerate(sets):
        out.append(run_ablation(session, Path(root) / f"set-{i:02d}", trials, s, experiment=NULL_EXPERIMENT,
                                condition="random_ablation", key_extra={"set": i},
                                extra={"set": i, "sampler": sampler or {}}))
    return out


def load_paired(run_dir: str | Path) -> list[Any]:
    """The trials of an ablation store run (each carrying ``meta["source_trial"]``)."""
    from esr_analysis.store import read_trials

    trials = list(read_trials(run_dir)[0])
    missing = [t.trial_id for t in trials if "source_trial" not in (t.meta or {})]
    if missing:
        raise ValueError(f"{run_dir}: trials without a source trial (not a paired ablation run): {missing[:3]}")
    return trials
