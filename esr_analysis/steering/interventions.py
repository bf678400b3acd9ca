"""Interventions as plain data: what is changed, where (layer, positions), how strong, in which unit.

Definitions
-----------
Let ``h`` be the output of decoder block ``layer`` (the residual stream after that block).

* :class:`AddLatent` adds ``v * d_i`` where ``d_i`` is row ``i`` of the SAE decoder ``W_dec`` (raw, not
  normalised) and ``v`` is the strength in **SAE latent units** (the paper's unit). With
  ``unit="relative"`` the given strength ``r`` is converted so that ``||v * d_i|| = r * m`` where ``m`` is the
  median residual norm at that layer over ordinary (non-sink) positions
  (:func:`esr_analysis.steering.residuals.median_residual_norm`); both values are recorded.
* :class:`AddVector` adds ``strength * vector`` (any direction, e.g. a mean difference).
* :class:`AblateLatents` removes the chosen latents' contribution while keeping the SAE error term:
  ``h' = h - sum_i f_i(h) * d_i``, which equals "encode, clamp the latents to zero, decode, add the error".
  ``f_i`` is the SAE encoder's activation of latent ``i`` on ``h`` (before any addition at the same layer).

At one layer the order is: ablate (activations read from the incoming ``h``), then add, then read.

Position scopes (the same definition in generation and in teacher-forced replay):

* ``all``: every prompt position at the prefill step and every decode step (the paper's setting).
* ``prompt``: every prompt position at the prefill step only; decode steps are untouched (the steered
  prompt still acts through the KV cache).
* ``generated``: every position that predicts a new token: the last prompt position at the prefill step,
  then every decode step. In replay: the last prompt position and every response position.

Padding positions are never edited.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Scope = Literal["all", "prompt", "generated"]
Unit = Literal["sae", "relative"]
SCOPES: tuple[str, ...] = ("all", "prompt", "generated")
UNITS: tuple[str, ...] = ("sae", "relative")


class _Base(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("scope", mode="before", check_fields=False)
    @classmethod
    def _check_scope(cls, v: object) -> object:
        if v not in SCOPES:
            raise ValueError(f"unknown scope {v!r}; choose one of {', '.join(SCOPES)}")
        return v

    @field_validator("strength", check_fields=False)
    @classmethod
    def _check_strength(cls, v: float) -> float:
        return _finite("strength", v)

    @field_validator("layer", check_fields=False)
    @classmethod
    def _check_layer(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"layer must be >= 0, got {v}")
        return v


def _finite(name: str, v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return v


class AddLatent(_Base):
    """Add ``strength`` (in ``unit``) times SAE decoder row ``latent`` at ``layer`` over ``scope``."""

    kind: Literal["add_latent"] = "add_latent"
    latent: int = Field(ge=0)
    strength: float
    layer: int
    scope: Scope = "all"
    unit: Unit = "sae"

    @field_validator("unit", mode="before")
    @classmethod
    def _check_unit(cls, v: object) -> object:
        if v not in UNITS:
            raise ValueError(f"unknown strength unit {v!r}; choose one of {', '.join(UNITS)}")
        return v


class AddVector(_Base):
    """Add ``strength * vector`` at ``layer`` over ``scope``; ``name`` identifies the vector in records."""

    kind: Literal["add_vector"] = "add_vector"
    vector: tuple[float, ...]
    strength: float = 1.0
    layer: int
    scope: Scope = "all"
    name: str = "vector"

    @field_validator("vector")
    @classmethod
    def _check_vector(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("vector is empty")
        if not all(math.isfinite(x) for x in v):
            raise ValueError("vector contains NaN or inf")
        return v


class AblateLatents(_Base):
    """Remove SAE latents ``latents`` at ``layer`` over ``scope``, keeping the SAE error term."""

    kind: Literal["ablate_latents"] = "ablate_latents"
    latents: tuple[int, ...]
    layer: int
    scope: Scope = "all"

    @field_validator("latents")
    @classmethod
    def _check_latents(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("AblateLatents needs at least one latent")
        if any(i < 0 for i in v):
            raise ValueError(f"latent indices must be >= 0, got {v}")
        return tuple(dict.fromkeys(v))


Intervention = Annotated[AddLatent | AddVector | AblateLatents, Field(discriminator="kind")]


class ResolvedIntervention(BaseModel):
    """What was actually applied, as recorded with every result (enough to replay the trial).

    ``strength_sae`` is the multiplier of the raw decoder row (SAE units); ``strength_relative`` is
    ``||strength_sae * d|| / median_norm`` when the median residual norm at the layer is known.
    ``delta_norm`` is the L2 norm of the added vector (0 for ablations).
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    layer: int
    scope: Scope
    latent: int | None = None
    latents: tuple[int, ...] | None = None
    vector_name: str | None = None
    unit: Unit | None = None
    strength_given: float | None = None
    strength_sae: float | None = None
    strength_relative: float | None = None
    delta_norm: float | None = None
    median_residual_norm: float | None = None
    sae: str | None = None
