"""Notebooks 02-05 run top to bottom on their SMALL setting (tiny random model + random SAE + offline judge;
the shipped Qwen SAE is not used here) and their .ipynb pairs are in sync and output-free."""

from __future__ import annotations

import pytest
from nbrun import check_pairing, execute_notebook

NAMES = ["02_steered_generation", "03_esr_rates", "04_boost_sweep", "05_meta_prompting"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_pairing(name):
    check_pairing(name)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_small(name, tmp_path):
    execute_notebook(name, env={"ESR_CACHE_DIR": str(tmp_path / "cache")})
