"""What a trace does at one layer, as plain tensors: sliced-SAE parameters, layer plans, position masks.

Nothing here imports nnsight. These dataclasses are the client-side form; before a trace is entered they are
turned into plain dicts (:meth:`LayerPlan.as_kernel`) for the maths of :mod:`esr_analysis.tracing.kernels`,
the only code that runs inside a trace (locally or on NDIF).

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

    def as_kernel(self) -> dict[str, Any]:
        """The plain-dict *slice* that :mod:`esr_analysis.tracing.kernels` takes inside a trace."""
        return {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self.W_dec, "b_dec": self.b_dec,
                "threshold": self.threshold, "apply_b_dec_to_input": bool(self.apply_b_dec_to_input)}

    def as_encoder_kernel(self) -> dict[str, Any]:
        """The *encoder* format: the slice without ``W_dec`` (a read only encodes, so a remote read of ``k``
        latents ships ``D x k`` floats, not twice that)."""
        return {key: value for key, value in self.as_kernel().items() if key != "W_dec"}


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

    def as_kernel(self) -> dict[str, Any]:
        """The plain-dict *layer plan* that :mod:`esr_analysis.tracing.kernels` takes inside a trace (built
        before the trace is entered: nothing of this package is constructed inside one)."""
        return {
            "layer": int(self.layer),
            "adds": dict(self.adds),
            "ablations": [(scope, p.as_kernel(), mask) for scope, p, mask in self.ablations],
            "read": None if self.read is None else self.read.as_encoder_kernel(),
        }


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
