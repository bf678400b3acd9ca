"""Sampling settings and a per-row seeded sampler that makes each row independent of its batch.

Definition: with ``temperature > 0`` the next token of row ``b`` is drawn from
``softmax(logits_b / temperature)`` restricted to the top-p nucleus, using the Gumbel-max trick with a
``torch.Generator`` seeded by the row's own seed (one uniform draw per vocabulary entry per step). HF's
greedy search then takes the argmax, which is an exact sample from that distribution. Because each row
owns its generator, the same seed gives the same tokens whatever batch the row runs in, up to
floating-point differences between batched and single-row matrix products (none were seen in tests).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SamplingSettings(BaseModel):
    """Decoding settings; ``temperature == 0`` means greedy decoding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    max_new_tokens: int = Field(64, ge=1)
    min_new_tokens: int = Field(0, ge=0)

    @field_validator("temperature", "top_p", "repetition_penalty")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("sampling settings must be finite numbers")
        return v

    def check(self) -> None:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) > max_new_tokens ({self.max_new_tokens})")


def make_row_sampler(seeds: list[int], temperature: float, top_p: float):
    """A transformers ``LogitsProcessor`` implementing the per-row seeded sampler of this module."""
    import torch
    from transformers import LogitsProcessor

    class RowSeededSampler(LogitsProcessor):
        def __init__(self) -> None:
            self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def __call__(self, input_ids, scores):
            logits = scores.float() / temperature
            if top_p < 1.0:
                sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
                cum = sorted_logits.softmax(-1).cumsum(-1)
                drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p  # keep the token that crosses top_p
                drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
                logits = logits.masked_fill(drop, float("-inf"))
            u = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in self.generators])
            gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
            return logits + gumbel.to(logits.device)

    return RowSeededSampler()
