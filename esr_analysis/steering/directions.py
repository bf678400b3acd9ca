"""Steering directions that need no SAE: contrastive mean differences of residuals.

``contrastive_direction(model, positive, negative, layer)`` is the unit vector along
``mean(h | positive) - mean(h | negative)``, where each mean is over the ordinary positions (the one
attention-sink rule, :func:`esr_analysis.steering.residuals.ordinary_positions`) of block ``layer``'s output
on the raw texts (no chat template).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def mean_residual(model: Any, texts: Sequence[str], layer: int) -> Any:
    """Mean of block ``layer``'s output over the ordinary positions of ``texts`` (``[d_model]`` float32)."""
    from esr_analysis.steering.residuals import ordinary_residuals

    if not texts:
        raise ValueError("mean_residual needs at least one text")
    return ordinary_residuals(model, list(texts), layer, chat=False).mean(0)


def contrastive_direction(model: Any, positive: Sequence[str], negative: Sequence[str], layer: int) -> Any:
    """Unit vector from the negative texts' mean residual towards the positive texts' (see module doc)."""
    diff = mean_residual(model, positive, layer) - mean_residual(model, negative, layer)
    norm = float(diff.norm())
    if norm == 0.0:
        raise ValueError("positive and negative texts give the same mean residual")
    return diff / norm
