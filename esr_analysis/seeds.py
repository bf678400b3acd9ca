"""The one seed derivation of the toolkit: :func:`derive_seed`.

Definition
----------
``derive_seed(*parts)`` is ``int(h[:8], 16) mod 10**6`` where ``h`` is the hex SHA-256 of the UTF-8 bytes of
``json.dumps(list(parts), sort_keys=True, default=str)`` (json's default separators ``", "`` and ``": "``;
objects that are not JSON become their ``str``). It is deterministic across processes and machines (unlike
``hash()``), and it is the formula the earlier per-module helpers used, so every seed, cache key and stored
result made before the helpers were merged keeps its value.

Uses: a generated row's default seed (:func:`esr_analysis.steering.generate.generate`: prompt plus the
resolved interventions), the per-latent prompt draw and trial seeds of the experiments
(:mod:`esr_analysis.experiments.trials`), and the threshold search's per-latent RNG
(:mod:`esr_analysis.experiments.calibration`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SEED_RANGE = 10**6
"""Derived seeds lie in ``[0, SEED_RANGE)``."""


def derive_seed(*parts: Any) -> int:
    """A seed in ``[0, 10**6)`` from ``parts`` (see the module docstring for the exact formula)."""
    blob = json.dumps(list(parts), sort_keys=True, default=str)
    return int(hashlib.sha256(blob.encode("utf-8")).hexdigest()[:8], 16) % SEED_RANGE
