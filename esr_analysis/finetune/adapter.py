"""Shipped LoRA adapters: save (safetensors, half precision), content hash, load + ``merge_and_unload``.

An adapter directory (``data/adapters/<name>/``) holds

* ``adapter_model.safetensors`` and ``adapter_config.json`` (peft's layout, so ``PeftModel.from_pretrained``
  reads it);
* ``organism.json``: the model spec facts (name, base model), the training settings and result, the data recipe
  and ``content_sha256``, the SHA-256 of the safetensors file (checked on load).

Merging: the base model's weights get ``W + (alpha / r) * B A`` folded in by peft's ``merge_and_unload``
**before** the model is wrapped with nnsight (a ``PeftModel`` shifts module paths), so every tool sees an
ordinary transformers model with the base model's module names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from esr_analysis.files import atomic_directory, atomic_write_json, sha256_file
from esr_analysis.paths import DATA_DIR

__all__ = ["ADAPTERS_DIR", "adapter_dir", "list_adapters", "merge_adapter", "read_organism", "save_adapter"]

ADAPTERS_DIR = DATA_DIR / "adapters"
WEIGHTS = "adapter_model.safetensors"
META = "organism.json"


def adapter_dir(name_or_path: str | Path) -> Path:
    """The directory of a shipped adapter by name (under :data:`ADAPTERS_DIR`) or of a path."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    return ADAPTERS_DIR / str(name_or_path)


def list_adapters() -> list[str]:
    """Names of the shipped adapters (directories of :data:`ADAPTERS_DIR` with an ``organism.json``)."""
    if not ADAPTERS_DIR.is_dir():
        return []
    return sorted(d.name for d in ADAPTERS_DIR.iterdir() if (d / META).is_file())


def read_organism(name_or_path: str | Path) -> dict[str, Any]:
    """The ``organism.json`` of an adapter (``FileNotFoundError`` naming the path if missing)."""
    path = adapter_dir(name_or_path) / META
    if not path.is_file():
        raise FileNotFoundError(f"no adapter at {path.parent} (expected {META}); known: {', '.join(list_adapters())}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def save_adapter(peft_model: Any, directory: str | Path, metadata: dict[str, Any], *,
                 dtype: str = "float16") -> Path:
    """Write ``peft_model``'s LoRA weights (cast to ``dtype``), its peft config and ``organism.json``
    (``metadata`` plus ``content_sha256`` and ``dtype``) atomically to ``directory``; returns it."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    if dtype not in ("float16", "bfloat16", "float32"):
        raise ValueError(f"adapter dtype must be float16, bfloat16 or float32, got {dtype!r}")
    target = getattr(torch, dtype)
    state = {k: v.detach().to(target).contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        peft_model.peft_config["default"].save_pretrained(str(tmp))
        meta = dict(metadata)
        meta.update({"content_sha256": sha256_file(tmp / WEIGHTS), "dtype": str(target).removeprefix("torch."),
                     "n_parameters": int(sum(v.numel() for v in state.values()))})
        atomic_write_json(tmp / META, meta)
    return directory


def merge_adapter(hf_model: Any, name_or_path: str | Path, *, check_hash: bool = True) -> Any:
    """``hf_model`` with the adapter merged in (``PeftModel.from_pretrained`` then ``merge_and_unload``), in
    eval mode with gradients off. The safetensors hash is checked against ``organism.json`` first."""
    from peft import PeftModel

    directory = adapter_dir(name_or_path)
    meta = read_organism(directory)
    if check_hash:
        found = sha256_file(directory / WEIGHTS)
        if found != meta.get("content_sha256"):
            raise ValueError(f"adapter {directory} is corrupt: {WEIGHTS} has SHA-256 {found}, "
                             f"organism.json says {meta.get('content_sha256')}")
    dtype = next(hf_model.parameters()).dtype
    merged = PeftModel.from_pretrained(hf_model, str(directory), torch_dtype=dtype).merge_and_unload()
    merged = merged.to(dtype)
    merged.eval().requires_grad_(False)
    return merged
