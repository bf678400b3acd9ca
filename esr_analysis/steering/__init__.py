"""Steering: interventions as plain data, steered generation, teacher-forced replay, residual reads,
sampling and directions.

* :mod:`.interventions`: :class:`AddLatent`, :class:`AddVector`, :class:`AblateLatents` (what, where, how
  strong, in which unit) and the resolved records stored with every result.
* :mod:`.generate`: :func:`generate`, one batched nnsight generate per chunk, per-row interventions and seeds.
* :mod:`.replay`: :func:`replay`, teacher-forced per-token latent activations.
* :mod:`.residuals`: :func:`read_residuals` (the one residual reader), the one attention-sink rule, the
  median residual norm behind relative units.
* :mod:`.resolve`: validation and resolution of interventions into layer plans (before any compute).
* :mod:`.results`, :mod:`.sampling`, :mod:`.directions`: typed results, the per-row seeded sampler,
  contrastive directions.
"""

from __future__ import annotations

from esr_analysis.steering.directions import contrastive_direction, mean_residual
from esr_analysis.steering.generate import generate
from esr_analysis.steering.interventions import (
    SCOPES,
    UNITS,
    AblateLatents,
    AddLatent,
    AddVector,
    Intervention,
    ResolvedIntervention,
    Scope,
    Unit,
)
from esr_analysis.steering.replay import replay
from esr_analysis.steering.residuals import (
    REFERENCE_TEXTS,
    SINK_NORM_FACTOR,
    SINK_PREFIX,
    median_residual_norm,
    ordinary_positions,
    ordinary_residuals,
    read_residuals,
    residual_batch,
)
from esr_analysis.steering.results import GenerationResult, LatentCapture, ReplayResult
from esr_analysis.steering.sampling import SamplingSettings, make_row_sampler

__all__ = [
    "REFERENCE_TEXTS",
    "SCOPES",
    "SINK_NORM_FACTOR",
    "SINK_PREFIX",
    "UNITS",
    "AblateLatents",
    "AddLatent",
    "AddVector",
    "GenerationResult",
    "Intervention",
    "LatentCapture",
    "ReplayResult",
    "ResolvedIntervention",
    "SamplingSettings",
    "Scope",
    "Unit",
    "contrastive_direction",
    "generate",
    "make_row_sampler",
    "mean_residual",
    "median_residual_norm",
    "ordinary_positions",
    "ordinary_residuals",
    "read_residuals",
    "replay",
    "residual_batch",
]
