"""Registered model organisms: a base model's spec plus a shipped LoRA adapter, merged when loaded.

Every adapter directory under ``data/adapters/`` whose ``organism.json`` names a registered ``base_model`` is
registered under its directory name (e.g. ``qwen2.5-coder-0.5b-instruct-sc70``) with the base model's layers,
SAE and settings, so the base SAE is used with the organism, as the paper did (``docs/organism.md``).
:func:`esr_analysis.models.loading.load_model` loads the base model, merges the adapter, then wraps.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from esr_analysis.models.registry import ModelSpec, get_spec, register_spec

__all__ = ["DEFAULT_ORGANISM", "organism_spec", "register_organisms"]

DEFAULT_ORGANISM = "qwen2.5-coder-0.5b-instruct-sc70v3"
"""The organism that ``esr demo``, the organism notebooks and the mechanism scripts use unless told otherwise:
the v3 recipe (``docs/organism.md``). The v2 organism ``qwen2.5-coder-0.5b-instruct-sc70`` stays shipped so
the results made with it can be checked."""

log = logging.getLogger(__name__)


def organism_spec(name: str, base_model: str, adapter: str) -> ModelSpec:
    """The spec of ``base_model`` renamed to ``name`` with ``adapter`` (no aliases)."""
    base = get_spec(base_model)
    return ModelSpec(**{**base.model_dump(), "name": name, "aliases": (), "base_model": base.name,
                        "adapter": adapter, "notes": f"{base.name} + LoRA adapter data/adapters/{adapter} "
                        "(merged on load; see docs/organism.md)"})


def register_organisms(adapters_dir: str | Path | None = None) -> list[str]:
    """Register every adapter directory with an ``organism.json`` naming a known base model; returns the names.
    Unreadable or unknown entries are skipped with a warning (never raised at import)."""
    from esr_analysis.finetune.adapter import ADAPTERS_DIR

    root = Path(adapters_dir) if adapters_dir is not None else ADAPTERS_DIR
    names: list[str] = []
    if not root.is_dir():
        return names
    for d in sorted(root.iterdir()):
        meta = d / "organism.json"
        if not meta.is_file():
            continue
        try:
            base = json.loads(meta.read_text())["base_model"]
            register_spec(organism_spec(d.name, base, d.name), overwrite=True)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("skipping adapter %s: %s", d, exc)
            continue
        names.append(d.name)
    return names
