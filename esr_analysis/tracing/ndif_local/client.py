"""The client side of a local NDIF: point nnsight at it, build weightless models whose remote key is a model the
local server serves from a folder, and mark requests untrusted (the server's sandboxed path)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def untrusted_requests() -> Iterator[None]:
    """Inside this block, every request asks the server for its sandboxed (untrusted) path: the envelope
    carries ``"trusted": false``. A local NDIF without authentication honours it (``ndif``'s
    ``validate_request``) and runs the traced block in a fresh runner process instead of the model actor; the
    public service decides trust from the API key, so this is for testing against a local server. nnsight
    0.8.1's envelope has no ``trusted`` field, so its JSON is extended here."""
    import_nnsight()
    from nnsight.schema.request import RequestModel

    plain = RequestModel.metadata

    def untrusted_metadata(self: Any) -> str:
        return json.dumps({**json.loads(plain(self)), "trusted": False})

    RequestModel.metadata = untrusted_metadata
    try:
        yield
    finally:
        RequestModel.metadata = plain
