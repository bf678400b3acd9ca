"""Shared machinery of the experiments: per-latent prompts and seeds, manifests, and the trial loop.

* Prompts of a latent: ``k`` distinct prompts drawn with ``Random(h(seed, "prompts", latent))``; every
  experiment of a run uses the same prompts for a latent.
* Seed of a trial: ``h(seed, "trial", latent, prompt)`` with ``h`` = :func:`esr_analysis.seeds.derive_seed`
  (a SHA-256-derived integer in ``[0, 10^6)``); so exp 1, its no-steering baseline (exp 8) and the meta-prompting baseline share seeds.
* A spec's ``ablate`` latents are clamped to 0 at the steering layer over the config's scope
  (:class:`~esr_analysis.steering.interventions.AblateLatents`, SAE error term kept) in the same generation as its
  steering; they are part of the trial's key (exp 3 / exp 10, :mod:`esr_analysis.mechanisms.ablation`).
* :func:`run_trials` writes trials chunk by chunk (one batched generation and one grading call per chunk of
  ``batch_size`` rows) into a store run; trials already recorded (by content key) are skipped, so a killed
  run resumes without losing or duplicating trials.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esr_analysis.seeds import derive_seed


def latent_prompts(session: Any, latent: int) -> list[str]:
    """The ``n_prompts_per_latent`` distinct prompts of ``latent`` in this run."""
    c = session.config
    rng = random.Random(derive_seed(c.seed, "prompts", int(latent)))
    return rng.sample(session.prompts, c.n_prompts_per_latent)


def trial_seed(session: Any, latent: int | None, prompt: str) -> int:
    """The sampling seed of the trial of ``latent`` on ``prompt`` (shared across experiments)."""
    return derive_seed(session.config.seed, "trial", latent, prompt)


@dataclass
class TrialSpec:
    """One trial to run: ``prompt`` is what the model and the judge see; ``boost`` is in SAE units
    (``None``: no steering); ``base_prompt`` is the prompt before any meta-prompt suffix."""

    prompt: str
    latent: int | None
    boost: float | None
    seed: int
    condition: str
    base_prompt: str | None = None
    key_extra: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    ablate: tuple[int, ...] = ()


def manifest_for(session: Any, experiment: str, extra: dict[str, Any]) -> Any:
    """A store manifest for ``experiment`` in ``session`` (identity = model, SAE, layers, judge, config)."""
    from esr_analysis.store import Layers, RunConfig, RunManifest

    cfg = session.config.model_dump(mode="json")
    return RunManifest.collect(
        experiment=experiment, model_id=session.model_id.get("name"), model_revision=session.model_id.get("revision"),
        dtype=session.model_id.get("dtype"), sae_source=session.sae_identity,
        layers=Layers(steer=session.steer_layer, read=session.read_layer),
        judge_id=getattr(session.judge, "judge_id", None), rubric_hash=getattr(session.judge, "rubric_hash", None),
        config=RunConfig(experiment=experiment, pipeline=cfg, **extra),
    )


def spec_interventions(session: Any, spec: TrialSpec) -> list[Any]:
    """The interventions of a trial: its steering (if any), then its ablation (if any), at the steering layer."""
    ivs = [session.steer(spec.latent, spec.boost)] if (spec.boost is not None and spec.latent is not None) else []
    if spec.ablate:
        from esr_analysis.steering.interventions import AblateLatents

        ivs.append(AblateLatents(latents=tuple(spec.ablate), layer=session.steer_layer, scope=session.config.scope))
    return ivs


def _layers(session: Any, spec: TrialSpec) -> Any:
    from esr_analysis.store import Layers

    steered = spec.boost is not None and spec.latent is not None
    return Layers(steer=session.steer_layer if steered else None, ablate=session.steer_layer if spec.ablate else None)


def spec_key(session: Any, experiment: str, spec: TrialSpec) -> str:
    from esr_analysis.store import trial_key

    steered = spec.boost is not None and spec.latent is not None
    ablation = ([{"kind": "ablate_latents", "latents": sorted(spec.ablate), "layer": session.steer_layer,
                  "scope": session.config.scope}] if spec.ablate else None)
    return trial_key(experiment=experiment, condition=spec.condition, prompt=spec.prompt, latent=spec.latent,
                     boost=spec.boost if steered else 0.0, unit="sae", seed=spec.seed, scope=session.config.scope,
                     layers=_layers(session, spec), interventions=ablation, key_extra=spec.key_extra)


def run_trials(session: Any, run_dir: str | Path, experiment: str, specs: Sequence[TrialSpec],
               extra: dict[str, Any] | None = None) -> Path:
    """Generate, grade and store ``specs`` into the store run ``run_dir`` (created or resumed)."""
    from esr_analysis.store import open_run, trial_from_generation

    manifest = manifest_for(session, experiment, extra or {})
    with open_run(run_dir, manifest, resume=True) as writer:
        keyed = [(s, spec_key(session, experiment, s)) for s in specs]
        pending = [(s, k) for s, k in keyed if not writer.is_done(k)]
        first_of_key: dict[str, Any] = {}
        for s, k in pending:
            first_of_key.setdefault(k, (s, k))
        pending = list(first_of_key.values())
        settings = session.settings()
        step = session.config.batch_size
        from tqdm.auto import tqdm

        bar = tqdm(total=len(keyed), initial=len(keyed) - len(pending), desc=experiment, unit="trial",
                   disable=not session.progress)
        for lo in range(0, len(pending), step):
            chunk = pending[lo:lo + step]
            ivs = [spec_interventions(session, s) for s, _ in chunk]
            gens = session.generate([s.prompt for s, _ in chunk], ivs, [s.seed for s, _ in chunk], settings)
            labels = [session.label(s.latent) if s.latent is not None else "" for s, _ in chunk]
            flags = [s.boost is not None and s.latent is not None for s, _ in chunk]
            grades = session.grade([s.prompt for s, _ in chunk], [g.text for g in gens], labels, flags)
            for (s, k), g, gr, lab in zip(chunk, gens, grades, labels, strict=True):
                steered = s.boost is not None and s.latent is not None
                meta = {**s.meta, "base_prompt": s.base_prompt or s.prompt}
                trial = trial_from_generation(
                    g, experiment=experiment, condition=s.condition, grade=gr, trial_id=k, latent=s.latent,
                    latent_label=lab, boost=s.boost if steered else 0.0, unit="sae", scope=session.config.scope,
                    layers=_layers(session, s), key_extra=s.key_extra, meta=meta)
                writer.append(trial)
            bar.update(len(chunk))
        bar.close()
    return Path(run_dir)
