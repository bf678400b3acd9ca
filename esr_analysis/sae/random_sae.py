"""Seeded random SAEs for development, tests and benchmarks (their latents mean nothing).

Source strings ``random:<d_sae>[:<seed>]`` (accepted by the experiment configs' ``sae`` field) name them:
:func:`random_sae` builds a ReLU sae-lens SAE of the model's width whose encoder columns are Gaussian with
variance ``1/d_in``, decoder rows Gaussian then scaled to unit norm, encoder biases uniform in
``[-0.5, 0]`` and decoder bias zero, all drawn from one ``torch.Generator`` seeded with ``seed``.
"""

from __future__ import annotations

from typing import Any

RANDOM_PREFIX = "random:"


def random_sae(d_in: int, d_sae: int, seed: int = 0) -> Any:
    """A seeded random ReLU sae-lens SAE (decoder rows of unit norm), tagged ``random:<d_sae>:<seed>``."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig

    g = torch.Generator().manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        dec = torch.randn(d_sae, d_in, generator=g)
        sae.W_dec.copy_(dec / dec.norm(dim=1, keepdim=True))
        sae.b_enc.copy_(-0.5 * torch.rand(d_sae, generator=g))
        sae.b_dec.zero_()
    sae.esr_source = f"{RANDOM_PREFIX}{d_sae}:{seed}"
    return sae


def parse_random_source(source: str) -> tuple[int, int]:
    """``(d_sae, seed)`` of ``"random:<d_sae>[:<seed>]"``; ``ValueError`` naming the expected form otherwise."""
    parts = source.removeprefix(RANDOM_PREFIX).split(":")
    try:
        d_sae = int(parts[0])
        seed = int(parts[1]) if len(parts) > 1 else 0
    except (IndexError, ValueError):
        raise ValueError(f"bad random SAE source {source!r}; use random:<d_sae>[:<seed>]") from None
    if d_sae < 1:
        raise ValueError(f"bad random SAE source {source!r}: d_sae must be >= 1")
    return d_sae, seed
