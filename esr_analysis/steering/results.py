"""Typed results of steered generation and teacher-forced replay, and what to capture.

Every :class:`GenerationResult` carries what is needed to replay its row exactly: the formatted input, the
seed, the resolved interventions (:class:`~esr_analysis.steering.interventions.ResolvedIntervention`), the
sampling settings, the model name and the library versions.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from esr_analysis.steering.interventions import ResolvedIntervention
from esr_analysis.steering.sampling import SamplingSettings


@dataclass(frozen=True)
class LatentCapture:
    """Record the activations of ``latents`` of the SAE at the output of block ``layer``."""

    latents: tuple[int, ...]
    layer: int


class GenerationResult(BaseModel):
    """One generated row: inputs, outputs, and everything needed to replay it.

    ``latent_acts[t][j]`` is the activation of ``captured_latents[j]`` at the position whose output is
    generated token ``t`` (the last prompt position for ``t = 0``).
    """

    model_config = ConfigDict(frozen=True)

    prompt: str
    chat_input: str
    input_ids: list[int]
    output_ids: list[int]
    text: str
    seed: int
    interventions: list[ResolvedIntervention]
    settings: SamplingSettings
    model: str
    versions: dict[str, str]
    stopped_by_eos: bool
    captured_latents: list[int] | None = None
    capture_layer: int | None = None
    latent_acts: list[list[float]] | None = None


class ReplayResult(BaseModel):
    """Teacher-forced activations: ``latent_acts[t][j]`` for token ``t`` of ``tokens`` and latent ``latents[j]``.

    ``response_start`` is the index of the first response token in ``tokens``.
    """

    model_config = ConfigDict(frozen=True)

    prompt: str
    response: str
    tokens: list[int]
    token_strings: list[str]
    response_start: int
    latents: list[int]
    layer: int
    latent_acts: list[list[float]]
