"""Models: the registry of specs, loading (local, meta, remote), embedded offline models, tiny test models,
and chat formatting.

* :mod:`.registry`: :class:`ModelSpec`, the paper's models, :func:`get_spec`, :func:`validate_layer`.
* :mod:`.loading`: :func:`load_model`, :func:`spec_of`, :func:`meta_model_for`, :func:`load_remote_model`,
  :func:`load_model_config`.
* :mod:`.embedded`: the GGUF models shipped in pip packages, assembled, hash-checked and cached offline.
* :mod:`.tiny`: tiny random-init models and a locally trained tokenizer (:func:`load_tiny`).
* :mod:`.chat`: :func:`format_chat`, the one chat formatting of the toolkit.
* :mod:`.organisms`: model organisms (base model + shipped LoRA adapter), registered at import.
"""

from __future__ import annotations

from esr_analysis.models.chat import format_chat
from esr_analysis.models.embedded import EmbeddedModelError, embedded_gguf_path, ensure_hf_copy, hf_cache_dir
from esr_analysis.models.loading import (
    load_model,
    load_model_config,
    load_remote_model,
    meta_model_for,
    resolve_device,
    resolve_dtype,
    spec_of,
)
from esr_analysis.models.organisms import organism_spec, register_organisms
from esr_analysis.models.registry import (
    DEFAULT_MODEL,
    LLAMA_EXTRA_HEADER_IDS,
    ModelSpec,
    get_spec,
    list_models,
    register_spec,
    validate_layer,
)
from esr_analysis.models.tiny import load_tiny, tiny_hf_model, tiny_tokenizer

register_organisms()

__all__ = [
    "DEFAULT_MODEL",
    "LLAMA_EXTRA_HEADER_IDS",
    "EmbeddedModelError",
    "ModelSpec",
    "embedded_gguf_path",
    "ensure_hf_copy",
    "format_chat",
    "get_spec",
    "hf_cache_dir",
    "list_models",
    "load_model",
    "load_model_config",
    "load_remote_model",
    "load_tiny",
    "meta_model_for",
    "organism_spec",
    "register_organisms",
    "register_spec",
    "resolve_device",
    "resolve_dtype",
    "spec_of",
    "tiny_hf_model",
    "tiny_tokenizer",
    "validate_layer",
]
