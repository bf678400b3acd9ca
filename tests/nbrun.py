"""Execute a jupytext percent notebook (the paired ``.py``) on its small setting and check its pairing."""

from __future__ import annotations

import os
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute_notebook(name: str, *, timeout: int = 900, env: dict[str, str] | None = None):
    """Run ``notebooks/<name>.py`` top to bottom with ``ESR_SMALL=1``; return the executed notebook.

    Any cell error fails with the cell's traceback. The working directory is ``notebooks/`` so relative
    paths behave as in Jupyter.
    """
    import jupytext
    from nbclient import NotebookClient

    path = NOTEBOOKS / f"{name}.py"
    nb = jupytext.read(path)
    old = {k: os.environ.get(k) for k in ("ESR_SMALL", *(env or {}))}
    os.environ["ESR_SMALL"] = "1"
    os.environ.update(env or {})
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def check_pairing(name: str) -> None:
    """The committed ``.ipynb`` has the same cells as the ``.py`` source and carries no outputs."""
    import jupytext
    import nbformat

    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    ipynb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert [c.source for c in py.cells] == [c.source for c in ipynb.cells], f"{name}.ipynb is out of sync: run jupytext --sync"
    for c in ipynb.cells:
        if c.cell_type == "code":
            assert not c.get("outputs"), f"{name}.ipynb is committed with outputs"
