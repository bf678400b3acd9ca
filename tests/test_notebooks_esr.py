"""Notebooks 02-05, 07 and 08 run top to bottom on their SMALL setting (02-05 and 07: embedded model, shipped SAE,
offline judge, two latents, short generations; 08: a tiny model and a scripted run) on a copy in a temporary
directory, and leave the committed notebooks untouched."""

from __future__ import annotations

import pytest
from nbrun import execute_notebook, snapshot

NAMES = ["02_steered_generation", "03_esr_rates", "04_boost_sweep", "05_meta_prompting", "07_off_topic_detectors",
         "08_anatomy_of_a_recovery"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_small(name, tmp_path):
    before = snapshot()
    nb = execute_notebook(name, tmp_path / "run", env={"ESR_CACHE_DIR": str(tmp_path / "cache")})
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no figure"
    text = "".join(o.get("text", "") for o in outputs)
    assert "ATTEMPT 1 (score" in text, f"{name} printed no transcript"
    assert snapshot() == before, "executing the notebook changed files under notebooks/"
