"""environment.yml lists the stack the conda way and agrees with pyproject.toml's pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_FORGE = ("jupyterlab", "matplotlib", "seaborn", "einops", "pandas", "scipy")
THROUGH_PIP = ("torch", "nnsight", "sae-lens")


def _pyproject_specs() -> dict[str, str]:
    """``{name: version spec}`` of every requirement in pyproject.toml (dependencies and extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    out = {}
    for req in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", req.strip())
        assert m, req
        out[m.group(1).lower()] = m.group(2).replace(" ", "")
    return out


def _split(spec: str) -> tuple[str, str]:
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec.strip())
    assert m, spec
    return m.group(1).lower(), m.group(2).replace(" ", "")


def test_environment_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    conda = dict(_split(d.replace("=", "==", 1) if re.fullmatch(r"python=[\d.]+", d) else d)
                 for d in deps if isinstance(d, str))
    specs = _pyproject_specs()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    assert conda["python"] == "==3.11" and project["requires-python"] == ">=3.11"
    assert "pip" in conda
    for name in CONDA_FORGE:
        assert name in conda, f"{name} should come from conda-forge"
        assert conda[name] == specs[name], f"{name}: environment.yml {conda[name]!r} != pyproject {specs[name]!r}"
    pip_specs = dict(_split(p) for p in pip if not p.startswith("-e"))
    for name in THROUGH_PIP:
        assert pip_specs.get(name) == specs[name], f"{name}: environment.yml pip {pip_specs.get(name)!r} != {specs[name]!r}"
    assert specs["torch"].startswith("==") and specs["nnsight"].startswith("==")  # the two exact pins
    assert any(re.fullmatch(r'-e\s+"?\.(\[dev\])?"?', p) for p in pip), "the package itself through pip -e"
    assert not set(conda) & set(pip_specs), "a package listed twice"
