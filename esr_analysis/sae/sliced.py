"""SAEs: sliced subsets of latents that are exact for ReLU/JumpReLU SAEs, and checks against a model.

A *sliced SAE* keeps, for a chosen list of latents, their encoder columns, decoder rows, encoder biases
and (JumpReLU) thresholds, plus the decoder bias. For ReLU and JumpReLU SAEs a latent's activation
depends only on its own encoder column, so the slice gives exactly the activations and decoder
contributions of those latents in the full SAE. TopK/BatchTopK SAEs cannot be sliced (a latent's
activation depends on all others) and are rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from esr_analysis.tracing.plans import SliceParams

SLICEABLE_ARCHITECTURES = ("standard", "jumprelu")


def sae_architecture(sae: Any) -> str:
    """The sae-lens architecture name of ``sae`` ("standard", "jumprelu", "topk", ...)."""
    cfg = sae.cfg
    arch = cfg.architecture() if callable(getattr(cfg, "architecture", None)) else getattr(cfg, "architecture", "")
    return str(arch)


def sae_width(sae: Any) -> tuple[int, int]:
    """``(d_in, d_sae)`` of an sae-lens SAE or a :class:`SlicedSAE` (then ``d_sae`` is the full width)."""
    if isinstance(sae, SlicedSAE):
        return sae.d_in, sae.d_sae
    return int(sae.cfg.d_in), int(sae.cfg.d_sae)


def check_latents(sae: Any, latents: Sequence[int]) -> None:
    """Raise ``ValueError`` if any latent index is outside ``[0, d_sae)``."""
    _, d_sae = sae_width(sae)
    bad = [int(i) for i in latents if not 0 <= int(i) < d_sae]
    if bad:
        raise ValueError(f"latent index out of range: {bad} (the SAE has {d_sae} latents, 0..{d_sae - 1})")


def check_sae_fits_model(sae: Any, d_model: int) -> None:
    """Raise ``ValueError`` if the SAE's input width differs from the model's residual width."""
    d_in, _ = sae_width(sae)
    if d_in != d_model:
        raise ValueError(f"SAE width d_in={d_in} does not match the model's hidden size {d_model}")


@dataclass
class SlicedSAE:
    """An exact subset of an SAE's latents (see module docstring).

    ``latents[j]`` is the full-SAE index of column ``j``. ``W_enc`` is ``[d_in, k]``, ``W_dec`` ``[k, d_in]``.
    """

    latents: tuple[int, ...]
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    threshold: torch.Tensor | None
    apply_b_dec_to_input: bool
    d_in: int
    d_sae: int
    source: str = ""

    @classmethod
    def from_sae(cls, sae: Any, latents: Sequence[int], source: str = "") -> SlicedSAE:
        """Slice an sae-lens SAE (or re-slice a :class:`SlicedSAE`) to ``latents`` (order kept)."""
        import torch

        latents = tuple(int(i) for i in latents)
        if not latents:
            raise ValueError("a sliced SAE needs at least one latent")
        check_latents(sae, latents)
        if isinstance(sae, SlicedSAE):
            pos = {lat: j for j, lat in enumerate(sae.latents)}
            missing = [i for i in latents if i not in pos]
            if missing:
                raise ValueError(f"latents {missing} are not in this sliced SAE")
            idx = torch.tensor([pos[i] for i in latents])
            return cls(latents, sae.W_enc[:, idx].clone(), sae.b_enc[idx].clone(), sae.W_dec[idx].clone(),
                       sae.b_dec.clone(), None if sae.threshold is None else sae.threshold[idx].clone(),
                       sae.apply_b_dec_to_input, sae.d_in, sae.d_sae, source or sae.source)
        arch = sae_architecture(sae)
        if arch not in SLICEABLE_ARCHITECTURES:
            raise ValueError(
                f"cannot slice a {arch!r} SAE exactly: only ReLU ('standard') and JumpReLU SAEs have latents "
                "that depend on their own encoder column alone"
            )
        norm = getattr(sae.cfg, "normalize_activations", "none")
        if norm not in (None, "none"):
            raise ValueError(
                f"SAE uses normalize_activations={norm!r}; fold the scaling factor into the weights first "
                "(sae.fold_activation_norm_scaling_factor(...)) so raw residuals can be encoded exactly"
            )
        idx = torch.tensor(latents)
        with torch.no_grad():
            thr = sae.threshold[idx].detach().clone() if arch == "jumprelu" else None
            return cls(
                latents=latents,
                W_enc=sae.W_enc[:, idx].detach().clone(),
                b_enc=sae.b_enc[idx].detach().clone(),
                W_dec=sae.W_dec[idx].detach().clone(),
                b_dec=sae.b_dec.detach().clone(),
                threshold=thr,
                apply_b_dec_to_input=bool(getattr(sae.cfg, "apply_b_dec_to_input", True)),
                d_in=int(sae.cfg.d_in),
                d_sae=int(sae.cfg.d_sae),
                source=source,
            )

    @property
    def k(self) -> int:
        return len(self.latents)

    def params(self, dtype: torch.dtype | None = None, device: Any = None) -> SliceParams:
        """Plain tensors for :mod:`esr_analysis.tracing` (cast to the model's dtype/device)."""
        from esr_analysis.tracing.plans import SliceParams

        def cv(t):
            return None if t is None else t.to(device=device, dtype=dtype or t.dtype)

        return SliceParams(cv(self.W_enc), cv(self.b_enc), cv(self.W_dec), cv(self.b_dec), cv(self.threshold),
                           self.apply_b_dec_to_input)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Activations ``[..., k]`` of the sliced latents for residuals ``x [..., d_in]``."""
        from esr_analysis.tracing.kernels import encode_slice

        return encode_slice(x.to(self.W_enc.dtype), self.params().as_kernel())

    def decoder_row(self, latent: int) -> torch.Tensor:
        """Raw decoder direction ``d_i`` (row of ``W_dec``) of full-SAE latent ``latent``."""
        try:
            j = self.latents.index(int(latent))
        except ValueError:
            raise ValueError(f"latent {latent} is not in this sliced SAE") from None
        return self.W_dec[j]
