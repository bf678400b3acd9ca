"""Notebook 01 (shipped SAE, latents, steering on the embedded Qwen) runs on its SMALL setting on a copy."""

from __future__ import annotations

import pytest
from nbrun import execute_notebook, snapshot

NAME = "01_sae_and_latents"


@pytest.mark.slow
def test_notebook_01_runs_small(tmp_path):
    from esr_analysis.sae.loading import shipped_sae_names

    assert any(n.startswith("qwen2.5-coder-0.5b-instruct-l12") for n in shipped_sae_names()), \
        "the shipped SAE is missing from data/saes"
    before = snapshot()
    nb = execute_notebook(NAME, tmp_path / "run", timeout=600)
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "--- baseline" in out and "latent " in out
    assert snapshot() == before, "executing the notebook changed files under notebooks/"
