"""Plain-data records of a run: :class:`RunConfig`, :class:`Trial`, :class:`RunManifest`.

These models are self-contained: interventions and judge grades are stored as plain dicts, so this module
imports neither the judge nor nnsight.  Shapes:

* an intervention dict is ``model_dump()`` of an :mod:`esr_analysis.interventions` record, e.g.
  ``{"kind": "add_latent", "latent": 3, "strength": 7.5, "layer": 33, "scope": "all", "unit": "sae"}``;
* a grade dict is ``model_dump()`` of a judge ``Grade``: ``{"attempts": [{"text": str, "score": number|null}],
  "raw_response": str|null, "error": str|null, "judge_id": str, "rubric_hash": str}``.

A trial's ``trial_id`` is a deterministic **content key** of what defines the work item (see
:data:`KEY_FIELDS`), computed before generation so that a resumed experiment can skip finished trials.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_VERSION_PACKAGES",
    "KEY_FIELDS",
    "Layers",
    "RunConfig",
    "RunManifest",
    "Trial",
    "canonical_json",
    "current_git_commit",
    "library_versions",
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

DEFAULT_VERSION_PACKAGES: tuple[str, ...] = (
    "esr-analysis", "torch", "transformers", "nnsight", "sae-lens", "numpy", "pandas", "pydantic",
    "anthropic", "openai", "sentence-transformers",
)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no whitespace, no NaN: the byte-stable form hashed into keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def trial_key(**fields: Any) -> str:
    """Deterministic trial id: ``"t-"`` + the first 32 hex digits of SHA-256 over the canonical JSON of the
    :data:`KEY_FIELDS` (missing ones count as null; ``layers`` as a dict of steer/ablate/read)."""
    unknown = set(fields) - set(KEY_FIELDS)
    if unknown:
        raise ValueError(f"trial_key got non-key fields {sorted(unknown)}; key fields are {KEY_FIELDS}")
    payload = {}
    for name in KEY_FIELDS:
        value = fields.get(name)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        elif name == "boost" and value is not None:
            value = float(value)
        payload[name] = value
    payload["layers"] = payload["layers"] or Layers().model_dump(mode="json")
    payload["interventions"] = payload["interventions"] or []
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
    excluded from every metric).  ``key_extra`` holds any extra identity (e.g. a replicate index or the
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
    def collect(cls, *, repo: str | Path | None = None, packages: tuple[str, ...] = DEFAULT_VERSION_PACKAGES,
                **fields: Any) -> RunManifest:
        """A manifest with provenance filled in: git commit of ``repo`` (default: this package's checkout),
        installed versions of ``packages`` and ``started_at`` = now; ``fields`` are the rest."""
        fields.setdefault("git_commit", current_git_commit(repo))
        fields.setdefault("versions", library_versions(packages))
        fields.setdefault("started_at", utcnow())
        return cls(**fields)


def library_versions(packages: tuple[str, ...] = DEFAULT_VERSION_PACKAGES) -> dict[str, str]:
    """Installed distribution versions of ``packages`` (missing ones are left out); imports nothing."""
    out: dict[str, str] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def current_git_commit(repo: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of ``repo`` (default: the checkout holding this package), with ``+dirty``
    appended when tracked files have uncommitted changes; ``None`` outside a git checkout."""
    cwd = Path(repo) if repo is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


def _dump(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json") if callable(dump) else obj


def trial_from_generation(
    generation: Any,
    *,
    experiment: str,
    condition: str = "steered",
    grade: Any = None,
    error: str | None = None,
    **fields: Any,
) -> Trial:
    """Build a :class:`Trial` from a ``GenerationResult`` (read by attribute, not imported).

    Copies ``prompt, chat_input, input_ids, output_ids, text`` (as ``response``), ``seed``, ``settings`` and
    ``interventions`` (as dicts).  When exactly one ``add_latent`` intervention is present and ``latent``,
    ``boost``, ``unit``, ``scope`` or ``layers`` are not given, they are taken from it.  ``grade`` may be a
    judge ``Grade`` or a dict; a grade's ``error`` is also copied to the trial's ``error`` unless given.
    """
    interventions = [_dump(i) for i in (getattr(generation, "interventions", None) or [])]
    adds = [i for i in interventions if isinstance(i, dict) and i.get("kind") == "add_latent"]
    ablates = [i for i in interventions if isinstance(i, dict) and i.get("kind") == "ablate_latents"]
    if len(adds) == 1:
        add = adds[0]
        fields.setdefault("latent", add.get("latent"))
        fields.setdefault("boost", add.get("strength"))
        fields.setdefault("unit", add.get("unit"))
        fields.setdefault("scope", add.get("scope"))
        if "layers" not in fields:
            fields["layers"] = Layers(steer=add.get("layer"), ablate=ablates[0].get("layer") if ablates else None)
    grade_dict = _dump(grade) if grade is not None else None
    if error is None and isinstance(grade_dict, dict):
        error = grade_dict.get("error")
    return Trial(
        experiment=experiment,
        condition=condition,
        prompt=generation.prompt,
        chat_input=getattr(generation, "chat_input", None),
        input_ids=list(getattr(generation, "input_ids", None) or []) or None,
        output_ids=list(getattr(generation, "output_ids", None) or []) or None,
        response=getattr(generation, "text", None),
        seed=getattr(generation, "seed", None),
        settings=_dump(getattr(generation, "settings", None)),
        interventions=interventions,
        grade=grade_dict,
        error=error,
        **fields,
    )
