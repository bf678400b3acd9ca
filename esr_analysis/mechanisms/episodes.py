"""Episodes of a recovery, and a baseline of plain on-topic answers, taken from stored runs.

Definitions
-----------
* A **recovery episode** is a valid graded trial (no ``error``, a response) whose judge grade has at least two
  scored attempts and whose last scored attempt scores strictly higher than the first: an ESR episode as
  defined once in :func:`esr_analysis.metrics.definitions.is_esr` (the paper's exp 9 kept exactly two attempts;
  ``max_attempts=2`` reproduces that).
* A **baseline episode** is a valid trial with exactly one scored attempt whose score is at least
  ``baseline_min_score`` (50, as the paper): a response that stayed on topic without restarting. Baseline
  episodes may come from any stored run (steered exp 1 or unsteered exp 8); at most ``n_baseline`` are kept,
  drawn with a seeded shuffle (:func:`esr_analysis.seeds.derive_seed`).

Every :class:`Episode` keeps what is needed to replay it exactly: the prompt, the model input ids and the
generated ids as stored, the sampling seed, the resolved interventions, the model name and the run it came
from. :func:`interventions_from_records` turns the stored intervention records back into intervention
objects (in SAE units, i.e. the strength that was applied).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from esr_analysis.metrics.definitions import is_esr, scored_attempts

EpisodeKind = Literal["recovery", "baseline"]


@dataclass(frozen=True)
class Episode:
    """One recovery or baseline episode (module docstring) with everything needed to replay it.

    ``attempts`` are the grade's ``(text, score)`` pairs in order (unscored ones included, score ``None``);
    ``scores`` the scored ones. ``input_ids``/``output_ids`` are ``None`` only for records that did not store
    tokens (then the prompt is re-rendered and the response re-tokenized on replay).
    """

    episode_id: str
    kind: EpisodeKind
    prompt: str
    response: str
    model: str | None
    seed: int | None
    interventions: list[dict[str, Any]] = field(default_factory=list)
    input_ids: list[int] | None = None
    output_ids: list[int] | None = None
    latent: int | None = None
    latent_label: str | None = None
    attempts: list[tuple[str, float | None]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    run: str | None = None
    experiment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (attempts as ``[text, score]`` lists)."""
        out = asdict(self)
        out["attempts"] = [list(a) for a in self.attempts]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Episode:
        """The inverse of :meth:`to_dict`."""
        d = dict(data)
        d["attempts"] = [(str(t), s) for t, s in d.get("attempts", [])]
        return cls(**d)

    def steering(self) -> list[Any]:
        """The episode's interventions as objects (:func:`interventions_from_records`)."""
        return interventions_from_records(self.interventions)


def interventions_from_records(records: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Intervention objects for stored resolved records (``ResolvedIntervention.model_dump()`` dicts).

    ``add_latent`` becomes :class:`~esr_analysis.steering.interventions.AddLatent` with the applied strength in
    SAE units (``strength_sae``, else a plain ``strength`` of unit ``sae``), so replay adds exactly the vector
    generation added; ``ablate_latents`` becomes :class:`~esr_analysis.steering.interventions.AblateLatents`.
    An ``add_vector`` record does not store its vector and raises ``ValueError``.
    """
    from esr_analysis.steering.interventions import AblateLatents, AddLatent

    out: list[Any] = []
    for r in records:
        kind = r.get("kind")
        if kind == "add_latent":
            strength = r.get("strength_sae")
            if strength is None:
                if r.get("unit", "sae") != "sae":
                    raise ValueError(f"record {dict(r)} has no strength_sae and a {r.get('unit')!r} strength")
                strength = r.get("strength", r.get("strength_given"))
            if strength is None:
                raise ValueError(f"add_latent record without a strength: {dict(r)}")
            out.append(AddLatent(latent=int(r["latent"]), strength=float(strength), layer=int(r["layer"]),
                                 scope=r.get("scope") or "all", unit="sae"))
        elif kind == "ablate_latents":
            out.append(AblateLatents(latents=tuple(int(i) for i in r["latents"]), layer=int(r["layer"]),
                                     scope=r.get("scope") or "all"))
        else:
            raise ValueError(f"cannot replay a {kind!r} intervention record (its vector is not stored)")
    return out


def _attempts(grade: Mapping[str, Any] | None) -> list[tuple[str, float | None]]:
    from esr_analysis.experiments.transcripts import attempts_of

    return attempts_of(grade)


def _episode(trial: Any, kind: EpisodeKind, model: str | None, run: str | None) -> Episode:
    return Episode(
        episode_id=str(trial.trial_id), kind=kind, prompt=trial.prompt, response=trial.response or "",
        model=(trial.meta or {}).get("model") or model, seed=trial.seed,
        interventions=[dict(i) for i in trial.interventions or []],
        input_ids=list(trial.input_ids) if trial.input_ids else None,
        output_ids=list(trial.output_ids) if trial.output_ids else None,
        latent=trial.latent, latent_label=trial.latent_label, attempts=_attempts(trial.grade),
        scores=scored_attempts(trial.grade), run=run, experiment=trial.experiment,
    )


def classify_trial(trial: Any, *, baseline_min_score: float = 50.0, max_attempts: int | None = None
                   ) -> EpisodeKind | None:
    """``"recovery"``, ``"baseline"`` or ``None`` for one stored trial (module docstring)."""
    if trial.error or not (trial.response or "").strip() or not trial.grade:
        return None
    scores = scored_attempts(trial.grade)
    if is_esr(scores) and (max_attempts is None or len(scores) <= max_attempts):
        return "recovery"
    if len(scores) == 1 and scores[0] >= baseline_min_score:
        return "baseline"
    return None


def extract_episodes(trials: Iterable[Any], *, model: str | None = None, run: str | None = None,
                     baseline_min_score: float = 50.0, max_attempts: int | None = None,
                     n_baseline: int | None = 50, seed: int = 42) -> tuple[list[Episode], list[Episode]]:
    """``(recoveries, baseline)`` of stored :class:`~esr_analysis.store.schema.Trial` records.

    Recoveries keep the input order; the baseline is a seeded draw of at most ``n_baseline`` (all when
    ``None``) of the qualifying trials. ``model`` is used for trials whose ``meta`` names no model.
    """
    rec: list[Episode] = []
    base: list[Episode] = []
    for t in trials:
        kind = classify_trial(t, baseline_min_score=baseline_min_score, max_attempts=max_attempts)
        if kind == "recovery":
            rec.append(_episode(t, kind, model, run))
        elif kind == "baseline":
            base.append(_episode(t, kind, model, run))
    return rec, sample_baseline(base, n_baseline, seed)


def sample_baseline(episodes: Sequence[Episode], n: int | None, seed: int = 42) -> list[Episode]:
    """At most ``n`` of ``episodes``: a shuffle seeded by ``derive_seed("anatomy-baseline", seed)`` over the
    episodes sorted by id (so the draw does not depend on input order), then the first ``n``."""
    from esr_analysis.seeds import derive_seed

    ordered = sorted(episodes, key=lambda e: e.episode_id)
    if n is None or n >= len(ordered):
        return ordered
    random.Random(derive_seed("anatomy-baseline", seed)).shuffle(ordered)
    return ordered[:n]


def episodes_from_runs(recovery_runs: Sequence[str | Path], baseline_runs: Sequence[str | Path] | None = None, *,
                       baseline_min_score: float = 50.0, max_attempts: int | None = None,
                       n_baseline: int | None = 50, seed: int = 42) -> tuple[list[Episode], list[Episode]]:
    """Recoveries from the run directories ``recovery_runs`` and a baseline from ``baseline_runs`` (default: the
    same runs). Each run's manifest supplies the model name; all runs must be of one model."""
    from esr_analysis.store.read import read_manifest, read_trials

    def load(dirs: Sequence[str | Path]) -> list[tuple[Any, str | None, str]]:
        out: list[tuple[Any, str | None, str]] = []
        for d in dirs:
            manifest = read_manifest(d)
            trials, _ = read_trials(d)
            out.extend((t, manifest.model_id, str(d)) for t in trials)
        return out

    rec_rows = load(recovery_runs)
    base_rows = rec_rows if baseline_runs is None else load(baseline_runs)
    models = {m for _, m, _ in rec_rows + base_rows if m}
    if len(models) > 1:
        raise ValueError(f"runs of several models given ({sorted(models)}); episodes must share one model")
    recoveries = [_episode(t, "recovery", m, r) for t, m, r in rec_rows
                  if classify_trial(t, baseline_min_score=baseline_min_score, max_attempts=max_attempts) == "recovery"]
    base = [_episode(t, "baseline", m, r) for t, m, r in base_rows
            if classify_trial(t, baseline_min_score=baseline_min_score, max_attempts=max_attempts) == "baseline"]
    return recoveries, sample_baseline(base, n_baseline, seed)
