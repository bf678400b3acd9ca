"""Where the toolkit keeps user-level caches (never inside the repository), its shipped data, and whether
the Hugging Face Hub may be used.

The cache directory is ``$ESR_CACHE_DIR`` when set, else ``~/.cache/esr-analysis``. It holds, for
example, the assembled embedded GGUF files (``gguf/``), their converted Hugging Face copies
(``models/<name>/``) and lock files (``locks/``).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "ESR_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/esr-analysis")

# The repository's shipped data (model configs, small SAEs, ...): <repo>/data.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def cache_dir(create: bool = True) -> Path:
    """The user cache directory: ``$ESR_CACHE_DIR`` if set (and non-empty), else ``~/.cache/esr-analysis``.

    The path is expanded (``~``, environment variables) and made absolute; with ``create`` it is created.
    """
    raw = os.environ.get(CACHE_ENV_VAR, "").strip()
    path = Path(os.path.expandvars(raw)).expanduser() if raw else DEFAULT_CACHE_DIR.expanduser()
    path = path.absolute()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cache_subdir(*parts: str, create: bool = True) -> Path:
    """A sub-directory of :func:`cache_dir` (e.g. ``cache_subdir("models", "qwen")``), created on demand."""
    path = cache_dir(create=create).joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is switched off: ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to
    ``1``/``true``/``yes``/``on`` (case-insensitive). Loaders then fail at once instead of trying the network."""
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def model_configs_dir() -> Path:
    """The shipped ``data/model_configs/`` directory (public ``config.json`` facts of the big models)."""
    return DATA_DIR / "model_configs"
