"""Notebook 06 (model organism) runs top to bottom on its SMALL setting (the whole recipe on a tiny random
model) and its .ipynb pair is in sync and output-free."""

from __future__ import annotations

from nbrun import check_pairing, execute_notebook


def test_notebook_06_pairing():
    check_pairing("06_model_organism")


def test_notebook_06_runs_small(tmp_path):
    execute_notebook("06_model_organism", tmp_path / "nb", env={"ESR_CACHE_DIR": str(tmp_path / "cache")})
