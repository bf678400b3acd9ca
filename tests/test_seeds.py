"""derive_seed: the one seed derivation, pinned to the values the three helpers it replaced produced."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from esr_analysis.seeds import SEED_RANGE, derive_seed


def _plain(*parts):
    blob = json.dumps(list(parts), sort_keys=True, default=str).encode("utf-8")
    return int(hashlib.sha256(blob).hexdigest()[:8], 16) % 10**6


def test_values_made_before_the_merge_are_kept():
    # computed with the old experiments.trials.derived_seed / calibration._row_seed / generation._default_seed
    assert derive_seed(0, "prompts", 3) == 125599
    rec = {"kind": "add_latent", "layer": 12, "scope": "all", "latent": 3, "latents": None, "vector_name": None,
           "unit": "sae", "strength_given": 4.0, "strength_sae": 4.0, "strength_relative": None,
           "delta_norm": 1.5, "median_residual_norm": None, "sae": "shipped:x"}
    assert derive_seed("How do you bake?", [rec]) == 835329
    assert derive_seed("How do you bake?", []) == 781876


@given(st.lists(st.one_of(st.integers(), st.text(), st.none(), st.floats(allow_nan=False)), max_size=4))
def test_matches_the_documented_formula(parts):
    s = derive_seed(*parts)
    assert s == _plain(*parts) and 0 <= s < SEED_RANGE


def test_key_order_of_dicts_does_not_matter_and_parts_do():
    assert derive_seed({"a": 1, "b": 2}) == derive_seed({"b": 2, "a": 1})
    assert derive_seed(0, "trial", 1, "p") != derive_seed(0, "trial", 2, "p")
