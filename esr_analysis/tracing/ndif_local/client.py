"""The client side of a local NDIF: point nnsight at it and build weightless models whose remote key is a
model the local server serves from a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esr_analysis.tracing.core import import_nnsight


def point_client_at(url: str) -> str:
    """Send ``remote=True`` requests to ``url`` (``http://`` = no TLS); returns the previous host."""
    nnsight = import_nnsight()
    previous = str(nnsight.CONFIG.API.HOST)
    nnsight.CONFIG.API.HOST = url
    return previous


def folder_model(folder: str | Path) -> Any:
    """A weightless (``meta``) nnsight model of the HF model in ``folder``, with its tokenizer: its remote
    key names the folder, which a local NDIF started on the same disk serves (no Hub look-up)."""
    from transformers import AutoConfig, AutoTokenizer

    from esr_analysis.tracing.core import meta_model

    import_nnsight()
    from nnsight.modeling import huggingface

    path = str(Path(folder).resolve())
    huggingface._ID_CACHE[path] = path  # the repo id is a local path: skip the Hub's canonical-id query
    return meta_model(path, AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path))
