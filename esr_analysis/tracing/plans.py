"""What a trace does at one layer, as plain tensors: sliced-SAE parameters, layer plans, position masks.

Nothing here imports nnsight: the maths of an edit (:func:`encode_slice`, :func:`edit_delta`) is plain torch,
so it runs the same inside a local trace, inside an NDIF request (``remote=True``) and in tests.

Definitions
-----------
* Batches are **left-padded** (:func:`left_pad`): row ``b`` of ``[B, T]`` ids holds its tokens at the right
  end and pad ids before them; ``attention_mask`` is 1 on real tokens. So the last position of every row is
  a real token (the one whose output predicts the next token).
* A **scope mask** is a ``[B, T, 1]`` float tensor, 1 where an edit of that scope applies (see
  :mod:`esr_analysis.steering.interventions` for the scopes); ``None`` means the scope is inactive at this
  step. :func:`step0_masks` gives the masks of the prefill step of generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

STEP0_SCOPES = ("all", "prompt", "generated")


@dataclass
class SliceParams:
    """Plain tensors of a sliced SAE encoder/decoder for ``k`` latents (see
    :class:`esr_analysis.sae.sliced.SlicedSAE`)."""

    W_enc: torch.Tensor  # [D, k]
    b_enc: torch.Tensor  # [k]
    W_dec: torch.Tensor  # [k, D]
    b_dec: torch.Tensor  # [D]
    threshold: torch.Tensor | None  # [k] for JumpReLU, else None
    apply_b_dec_to_input: bool


@dataclass
class LayerPlan:
    """Everything done at the output of one decoder block, in this order: ablate, add, read.

    ``adds`` maps a scope to a ``[B, D]`` addend (already ``strength * direction``, summed per row).
    ``ablations`` holds ``(scope, params, row_mask[B, k])``: latents with mask 1 are removed in that row.
    ``read`` is the sliced SAE whose activations are captured after the edits, if any.
    """

    layer: int
    adds: dict[str, torch.Tensor] = field(default_factory=dict)
    ablations: list[tuple[str, SliceParams, torch.Tensor]] = field(default_factory=list)
    read: SliceParams | None = None


def encode_slice(h: torch.Tensor, p: SliceParams) -> torch.Tensor:
    """Activations ``f(h)`` of the sliced latents: ReLU, or JumpReLU when ``p.threshold`` is set."""
    import torch

    x = h - p.b_dec if p.apply_b_dec_to_input else h
    pre = x @ p.W_enc + p.b_enc
    acts = torch.relu(pre)
    if p.threshold is not None:
        acts = acts * (pre > p.threshold).to(pre.dtype)
    return acts


def edit_delta(h: torch.Tensor, lp: LayerPlan, masks: dict[str, Any]) -> torch.Tensor | None:
    """The total change ``h' - h`` at one layer given the per-scope position masks (``None`` = scope inactive).

    Ablating latents ``S`` subtracts ``sum_{i in S} f_i(h) d_i`` (activations read from the incoming ``h``);
    adding contributes ``addend * mask``. ``None`` when nothing applies.
    """
    delta = None
    for scope, params, row_mask in lp.ablations:
        m = masks[scope]
        if m is None:
            continue
        f = encode_slice(h, params) * row_mask[:, None, :]
        d = -(f @ params.W_dec) * m
        delta = d if delta is None else delta + d
    for scope, addend in lp.adds.items():
        m = masks[scope]
        if m is None:
            continue
        d = addend[:, None, :] * m
        delta = d if delta is None else delta + d
    return delta


def step0_masks(attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Position masks ``[B, T, 1]`` of each scope for the prefill step of a left-padded batch."""
    import torch

    real = attention_mask.to(torch.float32)[:, :, None]
    last = torch.zeros_like(real)
    last[:, -1] = 1.0
    return {"all": real, "prompt": real, "generated": last}


def left_pad(id_lists: Sequence[Sequence[int]], tokenizer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``[B, T]`` long, of token lists left-padded to the longest.

    The pad id is the tokenizer's ``pad_token_id`` (0 when it has none); padding never reaches an edit or a
    read because every mask is zero there.
    """
    import torch

    if not id_lists:
        raise ValueError("left_pad needs at least one token list")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    T = max(len(x) for x in id_lists)
    ids = torch.full((len(id_lists), T), pad, dtype=torch.long)
    mask = torch.zeros((len(id_lists), T), dtype=torch.long)
    for b, x in enumerate(id_lists):
        if len(x):
            ids[b, T - len(x):] = torch.tensor(list(x), dtype=torch.long)
            mask[b, T - len(x):] = 1
    return ids, mask
