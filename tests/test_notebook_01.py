"""Notebook 01 (shipped SAE, latents, steering on the embedded Qwen) runs on its SMALL setting; pairing is in sync."""

from __future__ import annotations

import pytest
from nbrun import check_pairing, execute_notebook

NAME = "01_sae_and_latents"


def test_notebook_01_pairing():
    check_pairing(NAME)


@pytest.mark.slow
def test_notebook_01_runs_small():
    from esr_analysis.sae.loading import shipped_sae_names

    assert any(n.startswith("qwen2.5-coder-0.5b-instruct-l12") for n in shipped_sae_names()), \
        "the shipped SAE is missing from data/saes"
    nb = execute_notebook(NAME, timeout=600)
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "--- baseline" in out and "latent " in out
