"""Steering directions that need no SAE: contrastive mean differences of residuals.

``contrastive_direction(model, positive, negative, layer)`` is the unit vector along
``mean(h | positive) - mean(h | negative)``, where each mean is over all ordinary positions (the first
``skip_first`` real positions of every text are left out: attention-sink outliers) of block ``layer``'s
output on the raw texts (no chat template).
"""

from __future__ import annotations

from collections.abc import Sequence


def mean_residual(model, texts: Sequence[str], layer: int, *, skip_first: int = 1):
    """Mean of block ``layer``'s output over ordinary positions of ``texts`` (``[d_model]`` float32)."""
    import torch

    from esr_analysis import tracing
    from esr_analysis.chat import format_chat
    from esr_analysis.generation import _pad

    if not texts:
        raise ValueError("mean_residual needs at least one text")
    ids, mask = _pad([format_chat(model.tokenizer, t, chat=False)[1] for t in texts], model.tokenizer)
    _, resid = tracing.forward_with_plan(model, ids, mask, [], tracing.step0_masks(mask),
                                         save_residual_layers=(layer,), stop_after_last=True)
    h = resid[layer].float()
    rows = [h[b, mask[b].nonzero().flatten()[skip_first:]] for b in range(h.shape[0])]
    return torch.cat(rows).mean(0)


def contrastive_direction(model, positive: Sequence[str], negative: Sequence[str], layer: int):
    """Unit vector from the negative texts' mean residual towards the positive texts' (see module doc)."""
    diff = mean_residual(model, positive, layer) - mean_residual(model, negative, layer)
    norm = float(diff.norm())
    if norm == 0.0:
        raise ValueError("positive and negative texts give the same mean residual")
    return diff / norm
