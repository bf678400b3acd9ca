"""Notebook 09 (what drives a recovery) runs top to bottom on its SMALL setting (tiny random model and SAE), draws
its figure, leaves the committed notebooks untouched, and its .ipynb pair is in sync."""

from __future__ import annotations

from nbrun import check_pairing, execute_notebook, snapshot

NAME = "09_what_drives_recovery"


def test_notebook_09_pairing():
    check_pairing(NAME)


def test_notebook_09_runs_small(tmp_path):
    before = snapshot()
    nb = execute_notebook(NAME, tmp_path / "nb", env={"ESR_CACHE_DIR": str(tmp_path / "cache")})
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "09 drew no figure"
    text = "".join(o.get("text", "") for o in outputs)
    assert "top10_patch_effect" in text and "Spearman(AtP, patching)" in text
    assert snapshot() == before, "executing the notebook changed files under notebooks/"
