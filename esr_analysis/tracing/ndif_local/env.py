"""The NDIF server's own Python 3.12 virtual environment (separate from the toolkit's), built once per machine.

The server package (``ndif`` 0.1.2, MIT) needs Python >= 3.12, < 3.14; the toolkit runs on 3.11 and talks to
it only over HTTP. The environment lives in ``<cache>/ndif-venv`` (:func:`esr_analysis.paths.cache_dir`) and
is *ready* when its stamp file holds the exact requirement list below; a half-built environment (no stamp)
is deleted and rebuilt. Measured here: cold build about 8 min and 5.5 GB (the torch wheel is most of it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from esr_analysis.files import file_lock
from esr_analysis.paths import cache_dir, cache_subdir

SERVER_REQUIREMENTS = (
    "ndif[api,ray]==0.1.2",
    "nnsight==0.8.1",
    "torch==2.13.0",
    "transformers>=5.24,<6",
    "moto[server]>=5,<6",
)
"""What the server environment installs: the server, the client's nnsight and torch versions (a version skew
breaks requests), and ``moto`` as the S3-compatible object store (ndif's default store is not on PyPI)."""

PYTHON_ENV_VAR = "ESR_NDIF_PYTHON"
"""Set to a Python 3.12/3.13 interpreter to choose the one the server environment is built with."""

STAMP_NAME = ".esr-ndif-requirements"


class NdifUnavailable(RuntimeError):
    """The local NDIF cannot run on this machine (no Python 3.12, no redis-server, no environment)."""


def venv_dir() -> Path:
    """Where the server environment lives: ``<cache>/ndif-venv``."""
    return cache_dir() / "ndif-venv"


def venv_python() -> Path:
    """The server environment's interpreter."""
    return venv_dir() / "bin" / "python"


def _version_ok(python: str) -> bool:
    try:
        out = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] >= (3, 12) and "
                              "sys.version_info[:2] < (3, 14))"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "True"


def find_server_python() -> str | None:
    """A Python 3.12/3.13 interpreter: ``$ESR_NDIF_PYTHON``, ``python3.12``/``python3.13`` on the ``PATH``, or a
    pyenv installation (``$PYENV_ROOT`` or ``~/.pyenv``); ``None`` when there is none."""
    candidates = []
    if os.environ.get(PYTHON_ENV_VAR):
        candidates.append(os.environ[PYTHON_ENV_VAR])
    candidates += [p for p in (shutil.which("python3.12"), shutil.which("python3.13")) if p]
    root = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser() / "versions"
    if root.is_dir():
        candidates += [str(p / "bin" / "python") for p in sorted(root.iterdir())
                       if p.name.startswith(("3.12", "3.13"))]
    return next((c for c in candidates if _version_ok(c)), None)


def venv_ready() -> bool:
    """Whether the server environment exists and was built with :data:`SERVER_REQUIREMENTS`."""
    stamp = venv_dir() / STAMP_NAME
    return venv_python().exists() and stamp.exists() and stamp.read_text() == "\n".join(SERVER_REQUIREMENTS)


def why_unavailable() -> str | None:
    """``None`` when a local NDIF can be built and started here, else the reason in one sentence."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian/Ubuntu: apt-get install -y redis-server)"
    if not venv_ready() and find_server_python() is None:
        return ("no Python 3.12 or 3.13 found for the NDIF server (install one, e.g. `pyenv install 3.12`, "
                f"or point {PYTHON_ENV_VAR} at it)")
    return None


def build_venv(*, quiet: bool = False) -> Path:
    """Build the server environment unless it is ready; return its interpreter. Raises
    :class:`NdifUnavailable` without a Python 3.12/3.13, ``CalledProcessError`` when pip fails."""
    if venv_ready():
        return venv_python()
    python = find_server_python()
    if python is None:
        raise NdifUnavailable(why_unavailable() or "no Python 3.12 for the NDIF server")
    with file_lock(cache_subdir("locks") / "ndif-venv.lock"):  # two builds at once would clobber each other
        if venv_ready():
            return venv_python()
        return _build(python, quiet)


def _build(python: str, quiet: bool) -> Path:
    target = venv_dir()
    if target.exists():  # a half-built environment: start again
        shutil.rmtree(target)
    print(f"building the NDIF server environment in {target} with {python} (about 8 min, 5.5 GB)",
          file=sys.stderr, flush=True)
    subprocess.run([python, "-m", "venv", str(target)], check=True)
    pip = [str(venv_python()), "-m", "pip", "install", *(["-q"] if quiet else []), *SERVER_REQUIREMENTS]
    subprocess.run(pip, check=True)
    (target / STAMP_NAME).write_text("\n".join(SERVER_REQUIREMENTS))
    return venv_python()
