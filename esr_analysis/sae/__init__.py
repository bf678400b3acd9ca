"""SAEs: loading from one source string, exact slices of latents, latent labels, seeded random SAEs, and the
training pipeline of our shipped SAE.

* :mod:`.loading`: :func:`load_sae` (shipped, local directory, sae-lens release), content fingerprints.
* :mod:`.sliced`: :class:`SlicedSAE`, an exact subset of ReLU/JumpReLU latents; width and latent checks.
* :mod:`.labels`: latent labels and top contexts; ``describe_latent(i)``.
* :mod:`.random_sae`: seeded random SAEs (``random:<d_sae>[:<seed>]``) for development and tests.
* :mod:`.harvest` and :mod:`.training`: harvesting residuals into shards and training/measuring an SAE with
  sae-lens (used by ``scripts/``; see ``docs/sae.md``).
"""

from __future__ import annotations

from esr_analysis.sae.labels import LatentLabels, describe_latent, labels_for, latent_info
from esr_analysis.sae.loading import (
    SAEHubUnavailableError,
    load_sae,
    sae_fingerprint,
    sae_identity,
    sae_source_of,
    shipped_sae_names,
)
from esr_analysis.sae.random_sae import random_sae
from esr_analysis.sae.sliced import (
    SlicedSAE,
    check_latents,
    check_sae_fits_model,
    sae_architecture,
    sae_width,
)

__all__ = [
    "LatentLabels",
    "SAEHubUnavailableError",
    "SlicedSAE",
    "check_latents",
    "check_sae_fits_model",
    "describe_latent",
    "labels_for",
    "latent_info",
    "load_sae",
    "random_sae",
    "sae_architecture",
    "sae_fingerprint",
    "sae_identity",
    "sae_source_of",
    "sae_width",
    "shipped_sae_names",
]
