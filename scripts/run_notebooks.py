"""Execute the notebooks (jupytext percent ``.py``) and write them, with their outputs, into the paired ``.ipynb``.

``make notebooks`` runs every ``notebooks/NN_*.py`` at its full setting (``ESR_SMALL=0``) on the embedded model
and rewrites the committed ``.ipynb`` so figures and tables are visible without running anything. The ``.py``
is the source: the ``.ipynb`` gets exactly its cells, so the pair stays in sync.

Outputs are scrubbed of machine-specific text before writing (the repository path becomes ``<repo>``, the home
directory ``~``, the temporary directory ``<tmp>``), and execution timings are not recorded. A cell error
stops the run with the cell's traceback and leaves that notebook's ``.ipynb`` as it was.

The tests use :func:`execute` on a copy in a temporary directory (``ESR_SMALL=1``) and never write here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def notebook_names() -> list[str]:
    """Every notebook of the repository (``notebooks/NN_*.py``), in order."""
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def execute(py: str | Path, *, small: bool, cwd: str | Path, env: Mapping[str, str] | None = None,
            timeout: int | None = None) -> Any:
    """Run the percent notebook ``py`` top to bottom in a fresh kernel whose working directory is ``cwd``;
    return the executed notebook (nothing is written). ``small`` sets ``ESR_SMALL``; ``env`` adds variables.
    Figures are drawn with the inline backend so they land in the outputs. ``timeout``: seconds per cell
    (``None``: no limit; a loaded 2-core machine can need many minutes for one batched generation)."""
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(Path(py))
    wanted = {"ESR_SMALL": "1" if small else "0", "MPLBACKEND": INLINE_BACKEND, **(env or {})}
    old = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def machine_strings() -> dict[str, str]:
    """Machine-specific strings and what replaces them in committed outputs (longest first)."""
    subs = {str(ROOT): "<repo>", str(Path.home()): "~", tempfile.gettempdir(): "<tmp>"}
    if Path(sys.prefix) != ROOT:
        subs[sys.prefix] = "<python>"
    subs = {k: v for k, v in subs.items() if len(k) > 1}
    return dict(sorted(subs.items(), key=lambda kv: -len(kv[0])))


def _scrub_text(text: str, subs: Mapping[str, str]) -> str:
    for old, new in subs.items():
        text = text.replace(old, new)
    return text


def scrub(nb: Any, subs: Mapping[str, str] | None = None) -> Any:
    """Replace :func:`machine_strings` in every text output of ``nb`` (in place) and drop execution timings."""
    subs = machine_strings() if subs is None else subs
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = _scrub_text("".join(out["text"]), subs)
            if "traceback" in out:
                out["traceback"] = [_scrub_text(t, subs) for t in out["traceback"]]
            for mime, data in out.get("data", {}).items():
                if mime.startswith("text/") or mime in ("application/json",):
                    if isinstance(data, list):
                        data = "".join(data)
                    if isinstance(data, str):
                        out["data"][mime] = _scrub_text(data, subs)
    return nb


def write_executed(name: str, *, timeout: int | None = None) -> float:
    """Execute ``notebooks/<name>.py`` at its full setting and write ``notebooks/<name>.ipynb`` atomically;
    return the wall time in seconds."""
    import nbformat

    from esr_analysis.files import atomic_write_text

    t0 = time.monotonic()
    nb = scrub(execute(NOTEBOOKS / f"{name}.py", small=False, cwd=NOTEBOOKS, timeout=timeout))
    atomic_write_text(NOTEBOOKS / f"{name}.ipynb", nbformat.writes(nb) + "\n")
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", help="notebooks to run (default: all), e.g. 03_esr_rates")
    ap.add_argument("--timeout", type=int, default=0, help="seconds per cell (0: no limit)")
    args = ap.parse_args(argv)
    names = args.names or notebook_names()
    unknown = [n for n in names if not (NOTEBOOKS / f"{n}.py").is_file()]
    if unknown:
        ap.error(f"no such notebook: {', '.join(unknown)} (have: {', '.join(notebook_names())})")
    total = time.monotonic()
    for name in names:
        print(f"{name}: executing ...", flush=True)
        print(f"{name}: written in {write_executed(name, timeout=args.timeout or None):.0f} s", flush=True)
    print(f"all {len(names)} notebook(s) in {time.monotonic() - total:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
