"""Plain-data records of a run: :class:`RunConfig`, :class:`Trial`, :class:`RunManifest`.

These models are self-contained: interventions and judge grades are stored as plain dicts, so this module
imports neither the judge nor nnsight.  Shapes:

* an intervention dict is ``model_dump()`` of a resolved intervention record (what was applied), e.g.
  ``{"kind": "add_latent", "latent": 3, "layer": 33, "scope": "all", "unit": "sae", "strength_given": 7.5,
  "strength_sae": 7.5, ...}`` or ``{"kind": "ablate_latents", "latents": [...], "layer": 33, "scope": "all"}``
  (a plain ``strength`` key is also understood);
* a grade dict is ``model_dump()`` of a judge ``Grade``: ``{"attempts": [{"text": str, "score": number|null}],
  "raw_response": str|null, "error": str|null, "judge_id": str, "rubric_hash": str}``.

A trial's ``trial_id`` is a deterministic **content key** of what defines the work item (see
:data:`KEY_FIELDS`), computed before generation so that a resumed experiment can skip finished trials.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ANALYSIS_PACKAGES",
    "KEY_FIELDS",
    "Layers",
    "RunConfig",
    "RunManifest",
    "Trial",
    "canonical_json",
    "fluency_record",
    "intervention_key",
    "trial_from_generation",
    "trial_key",
    "utcnow",
]

KEY_FIELDS: tuple[str, ...] = (
    "experiment",
    "condition",
    "prompt",
    "latent",
    "boost",
    "unit",
    "seed",
    "scope",
    "layers",
    "interventions",
    "key_extra",
)
"""Fields whose content defines a trial's identity (``trial_id``); outputs (response, grade, ...) are not."""

ANALYSIS_PACKAGES: tuple[str, ...] = ("numpy", "scipy", "pandas", "pydantic")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no whitespace, no NaN: the byte-stable form hashed into keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def intervention_key(intervention: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of one intervention dict: what was *asked for*, so that a requested intervention
    (``AddLatent(...).model_dump()``: ``strength``) and its resolved record (``strength_given`` plus derived
    norms) give the same key.  Keys: kind, layer, scope, latent, latents (sorted), unit, strength, vector name."""
    strength = intervention.get("strength", intervention.get("strength_given"))
    latents = intervention.get("latents")
    return {
        "kind": intervention.get("kind"),
        "layer": intervention.get("layer"),
        "scope": intervention.get("scope"),
        "latent": intervention.get("latent"),
        "latents": sorted(latents) if latents is not None else None,
        "unit": intervention.get("unit"),
        "strength": float(strength) if strength is not None else None,
        "vector": intervention.get("vector_name", intervention.get("name")),
    }


def trial_key(**fields: Any) -> str:
    """Deterministic trial id: ``"t-"`` + the first 32 hex digits of SHA-256 over the canonical JSON of the
    :data:`KEY_FIELDS` (missing ones count as null; ``layers`` as a dict of steer/ablate/read;
    ``boost`` as a float; each intervention reduced by :func:`intervention_key`)."""
    unknown = set(fields) - set(KEY_FIELDS)
    if unknown:
        raise ValueError(f"trial_key got non-key fields {sorted(unknown)}; key fields are {KEY_FIELDS}")
    payload: dict[str, Any] = {}
    for name in KEY_FIELDS:
        value = fields.get(name)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        elif name == "boost" and value is not None:
            value = float(value)
        payload[name] = value
    payload["layers"] = payload["layers"] or Layers().model_dump(mode="json")
    payload["interventions"] = [
        intervention_key(i.model_dump(mode="json") if isinstance(i, BaseModel) else i)
        for i in payload["interventions"] or []
    ]
    payload["key_extra"] = payload["key_extra"] or {}
    return "t-" + hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:32]


class Layers(BaseModel):
    """Decoder-block indices (0-based) where the trial steers, ablates and reads latents (``None``: not used)."""

    model_config = ConfigDict(extra="forbid")

    steer: int | list[int] | None = None
    ablate: int | list[int] | None = None
    read: int | list[int] | None = None


class RunConfig(BaseModel):
    """Free-form experiment configuration (any JSON-serialisable keys), compared on resume."""

    model_config = ConfigDict(extra="allow")

    experiment: str | None = None

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical JSON of the whole config."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()


class Trial(BaseModel):
    """One generation (and its grade) of one experiment condition.

    ``boost`` is the steering strength in ``unit`` (``"sae"``: raw SAE latent units; ``"relative"``:
    multiples of the median residual norm); ``seed`` the sampling seed; ``scope`` the positions steered
    (``all``/``prompt``/``generated``).  ``error`` is a generation or grading failure (the trial is then
    excluded from every metric).  ``fluency`` is the response's
    :class:`~esr_analysis.metrics.fluency.FluencyMeasures` as a dict (with ``degenerate``) plus the rule's
    ``version``.  ``key_extra`` holds any extra identity (e.g. a replicate index or the
    source position of a foreign record); ``meta`` holds free-form non-identity data.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["esr.trial"] = "esr.trial"
    schema_version: Literal[1] = 1
    trial_id: str = ""
    experiment: str
    condition: str = "steered"
    prompt: str
    latent: int | None = None
    latent_label: str | None = None
    boost: float | None = None
    unit: str | None = "sae"
    seed: int | None = None
    scope: str | None = "all"
    layers: Layers = Field(default_factory=Layers)
    interventions: list[dict[str, Any]] = Field(default_factory=list)
    key_extra: dict[str, Any] = Field(default_factory=dict)
    chat_input: str | None = None
    response: str | None = None
    input_ids: list[int] | None = None
    output_ids: list[int] | None = None
    settings: dict[str, Any] | None = None
    grade: dict[str, Any] | None = None
    fluency: dict[str, Any] | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fill_trial_id(self) -> Trial:
        if not self.trial_id:
            self.trial_id = self.key()
        return self

    def key(self) -> str:
        """The content key of this trial's :data:`KEY_FIELDS` (equals ``trial_id`` unless it was given)."""
        return trial_key(**{name: getattr(self, name) for name in KEY_FIELDS})


class RunManifest(BaseModel):
    """What a run directory was produced with.  The fields of :meth:`identity` must match to resume."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["esr.run_manifest"] = "esr.run_manifest"
    schema_version: Literal[1] = 1
    experiment: str | None = None
    model_id: str | None = None
    model_revision: str | None = None
    dtype: str | None = None
    sae_source: dict[str, Any] | str | None = None
    layers: Layers = Field(default_factory=Layers)
    judge_id: str | None = None
    rubric_hash: str | None = None
    git_commit: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    config: RunConfig = Field(default_factory=RunConfig)
    history: list[dict[str, Any]] = Field(default_factory=list)

    IDENTITY_FIELDS: ClassVar[tuple[str, ...]] = (
        "experiment", "model_id", "model_revision", "dtype", "sae_source", "layers", "judge_id", "rubric_hash",
        "config",
    )

    def identity(self) -> dict[str, Any]:
        """The JSON form of the fields that define the run (everything except provenance and timestamps)."""
        dumped = self.model_dump(mode="json")
        return {name: dumped[name] for name in self.IDENTITY_FIELDS}

    def identity_diff(self, other: RunManifest) -> list[str]:
        """Names of identity fields whose values differ between ``self`` and ``other``."""
        a, b = self.identity(), other.identity()
        return [name for name in self.IDENTITY_FIELDS if canonical_json(a[name]) != canonical_json(b[name])]

    @classmethod
    def collect(cls, **fields: Any) -> RunManifest:
        """A manifest with provenance filled in (unless given): ``git_commit`` of this checkout and
        ``versions`` (:mod:`esr_analysis.provenance`, plus numpy/scipy/pandas/pydantic), ``started_at`` = now."""
        if "git_commit" not in fields:
            from ..provenance import git_commit

            fields["git_commit"] = git_commit()
        fields.setdefault("versions", _analysis_versions())
        fields.setdefault("started_at", utcnow())
        return cls(**fields)


def _analysis_versions() -> dict[str, str]:
    """Versions of the packages the pipeline's results depend on: those recorded by
    :func:`esr_analysis.provenance.library_versions` plus the analysis stack (imports nothing heavy)."""
    from ..provenance import library_versions

    out = dict(library_versions())
    for name in ANALYSIS_PACKAGES:
        try:
            out.setdefault(name, metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
    return out


def fluency_record(text: str | None) -> dict[str, Any] | None:
    """What a trial stores as ``fluency``: the measures of ``text`` and the rule's version (``None`` for no
    text)."""
    if text is None:
        return None
    from ..metrics.fluency import FLUENCY_VERSION, fluency_measures

    return {**fluency_measures(text).as_dict(), "version": FLUENCY_VERSION}


def _dump(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json") if callable(dump) else obj


def trial_from_generation(
    generation: Any,
    *,
    spec: Trial | None = None,
    experiment: str | None = None,
    grade: Any = None,
    error: str | None = None,
    **fields: Any,
) -> Trial:
    """Build a :class:`Trial` from a ``GenerationResult`` (read by attribute, not imported).

    Copies ``prompt, chat_input, input_ids, output_ids, text`` (as ``response``), ``seed``, ``settings`` and
    ``interventions`` (the resolved records, as dicts); ``model`` and ``stopped_by_eos`` go into ``meta``.
    ``grade`` may be a judge ``Grade`` or a dict; a grade's ``error`` is copied to the trial's ``error``
    unless ``error`` is given.

    With ``spec`` (the :class:`Trial` made before generating, whose id was checked with
    :meth:`RunWriter.is_done`): the identity fields and ``trial_id`` come from ``spec``; a generation
    whose prompt or seed differs from it raises ``ValueError``.  Without ``spec``, ``experiment`` is required
    and, when exactly one ``add_latent`` intervention is present, ``latent``, ``boost`` (its
    ``strength_given``, in its ``unit``), ``unit``, ``scope`` and ``layers`` default to its values.
    """
    interventions = [_dump(i) for i in (getattr(generation, "interventions", None) or [])]
    grade_dict = _dump(grade) if grade is not None else None
    if error is None and isinstance(grade_dict, dict):
        error = grade_dict.get("error")
    gen_meta = {n: getattr(generation, n) for n in ("model", "stopped_by_eos") if getattr(generation, n, None) is not None}
    outputs: dict[str, Any] = {
        "chat_input": getattr(generation, "chat_input", None),
        "input_ids": list(getattr(generation, "input_ids", None) or []) or None,
        "output_ids": list(getattr(generation, "output_ids", None) or []) or None,
        "response": getattr(generation, "text", None),
        "settings": _dump(getattr(generation, "settings", None)),
        "interventions": interventions,
        "grade": grade_dict,
        "fluency": fluency_record(getattr(generation, "text", None)),
        "error": error,
    }
    if spec is not None:
        gen_seed = getattr(generation, "seed", None)
        if generation.prompt != spec.prompt or (spec.seed is not None and gen_seed != spec.seed):
            raise ValueError(
                f"generation (prompt {generation.prompt[:40]!r}, seed {gen_seed}) does not match trial spec "
                f"{spec.trial_id} (prompt {spec.prompt[:40]!r}, seed {spec.seed})"
            )
        update = {**outputs, "seed": gen_seed, "meta": {**spec.meta, **gen_meta, **fields.pop("meta", {})}, **fields}
        return Trial.model_validate({**spec.model_dump(), **update, "trial_id": spec.trial_id})
    if experiment is None:
        raise ValueError("trial_from_generation needs spec= or experiment=")
    adds = [i for i in interventions if isinstance(i, dict) and i.get("kind") == "add_latent"]
    ablates = [i for i in interventions if isinstance(i, dict) and i.get("kind") == "ablate_latents"]
    if len(adds) == 1:
        add = adds[0]
        fields.setdefault("latent", add.get("latent"))
        fields.setdefault("boost", add.get("strength_given", add.get("strength")))
        fields.setdefault("unit", add.get("unit"))
        fields.setdefault("scope", add.get("scope"))
        if "layers" not in fields:
            fields["layers"] = Layers(steer=add.get("layer"), ablate=ablates[0].get("layer") if ablates else None)
    meta = {**gen_meta, **(fields.pop("meta", None) or {})}
    return Trial(experiment=experiment, prompt=generation.prompt, seed=getattr(generation, "seed", None),
                 meta=meta, **outputs, **fields)
