"""`make test` runs the linters (ruff + mypy) first, and mypy is configured for the package in pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _recipe(makefile: str, target: str) -> tuple[str, list[str]]:
    """``(prerequisites, recipe lines)`` of ``target`` in a Makefile."""
    m = re.search(rf"^{target}:([^\n]*)\n((?:\t[^\n]*\n)*)", makefile, flags=re.M)
    assert m, f"no {target} target"
    return m.group(1).strip(), [line.strip() for line in m.group(2).splitlines()]


def test_make_test_runs_ruff_and_mypy_first():
    makefile = (ROOT / "Makefile").read_text()
    prereq, _ = _recipe(makefile, "test")
    assert "lint" in prereq.split()
    _, lint = _recipe(makefile, "lint")
    assert any(line.split()[0].endswith("ruff") and "check" in line for line in lint)
    assert any(line.split()[0].endswith("mypy") for line in lint)


def test_mypy_checks_the_package_and_is_a_dev_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mypy = project["tool"]["mypy"]
    assert mypy["packages"] == ["esr_analysis"]
    assert not mypy.get("ignore_missing_imports"), "ignore missing imports per third-party module, not globally"
    assert not mypy.get("ignore_errors")
    assert any(dep.startswith("mypy") for dep in project["project"]["optional-dependencies"]["dev"])
