"""Helpers of the notebook tests: execute a notebook's SMALL setting on a copy, read committed notebooks.

Execution goes through ``scripts/run_notebooks.py`` (the code ``make notebooks`` uses), but on a **copy** of the
``.py`` in a temporary directory that is also the kernel's working directory, so nothing the notebook writes
lands in the repository and the committed ``.ipynb`` (with its outputs) is never touched.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def runner() -> Any:
    """The ``scripts/run_notebooks.py`` module."""
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def execute_notebook(name: str, workdir: Path, *, timeout: int = 900, env: dict[str, str] | None = None) -> Any:
    """Copy ``notebooks/<name>.py`` into ``workdir`` and run it there with ``ESR_SMALL=1``; return the executed
    notebook. Any cell error fails with the cell's traceback."""
    workdir.mkdir(parents=True, exist_ok=True)
    copy = workdir / f"{name}.py"
    shutil.copyfile(NOTEBOOKS / f"{name}.py", copy)
    return runner().execute(copy, small=True, cwd=workdir, env=env, timeout=timeout)


def snapshot(directory: Path = NOTEBOOKS) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes (to check that a test changed nothing)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def check_pairing(name: str) -> None:
    """The committed ``.ipynb`` has exactly the cells (types and sources) of the ``.py`` source."""
    import jupytext
    import nbformat

    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    ipynb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in py.cells] == [(c.cell_type, c.source) for c in ipynb.cells], \
        f"{name}.ipynb is out of sync with {name}.py: run `make notebooks` (or jupytext --sync)"


def output_texts(nb: Any) -> list[str]:
    """Every text a notebook's outputs show: streams, tracebacks, and text/JSON representations (images left
    out), plus the notebook and cell metadata serialised."""
    import json

    texts = [json.dumps(nb.get("metadata", {}))]
    for cell in nb.cells:
        texts.append(json.dumps(cell.get("metadata", {})))
        for out in cell.get("outputs", []):
            if "text" in out:
                texts.append("".join(out["text"]))
            texts.extend(out.get("traceback", []))
            for mime, data in out.get("data", {}).items():
                if mime.startswith("text/") or mime == "application/json":
                    texts.append(data if isinstance(data, str) else json.dumps(data))
    return texts
