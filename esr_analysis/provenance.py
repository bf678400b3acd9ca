"""Versions and commit recorded with every result, so any trial can be replayed."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

_PACKAGES = ("esr-analysis", "torch", "transformers", "nnsight", "sae-lens", "tokenizers", "anthropic", "openai")


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the distributions ``names`` (missing ones left out), read from their metadata
    without importing them."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Installed versions of the packages that affect results (plus Python), without importing them."""
    return {"python": platform.python_version(), **package_versions(_PACKAGES)}


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the esr_analysis checkout (with ``-dirty`` if modified), or ``None`` outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
