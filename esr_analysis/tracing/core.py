"""Importing nnsight safely, wrapping HF models, meta-device models, and shipping the trace kernels to NDIF.

This subpackage (:mod:`esr_analysis.tracing`) is the only part of the toolkit that imports nnsight, and it
does so only through :func:`import_nnsight`, inside functions.
"""

from __future__ import annotations

from typing import Any


def import_nnsight() -> Any:
    """Import nnsight safely and return it.

    nnsight mounts a ``.save`` attribute on every Python object at import. anyio (used by httpx and the
    judge SDKs) builds classes that reject unannotated attributes when its socket ABCs are first
    imported, so those must be imported *before* nnsight, or any later import of them fails. Every request
    payload is then checked for objects a remote server cannot import (:mod:`esr_analysis.tracing.payload`).
    """
    try:
        import anyio.abc  # noqa: F401
        from anyio.abc import SocketAttribute  # noqa: F401  (forces anyio's lazy socket module)
    except ImportError:  # pragma: no cover - anyio absent
        pass
    import nnsight

    from esr_analysis.tracing.payload import install_payload_guard

    install_payload_guard()
    return nnsight


def wrap_model(hf_model: Any, tokenizer: Any) -> Any:
    """Wrap a loaded HF causal LM as an nnsight ``TransformersModel`` (eval mode, gradients off)."""
    TransformersModel = import_nnsight().TransformersModel

    hf_model.eval()
    hf_model.requires_grad_(False)
    return TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation")


def hf_module(lm: Any) -> Any:
    """The underlying HF ``PreTrainedModel`` of a wrapped model (for dtype, config, plain-HF comparisons)."""
    return lm._module


def meta_model(repo_id: str, config: Any, tokenizer: Any) -> Any:
    """A weightless (meta-device) model for ``repo_id`` built from a local config: shapes and remote keys."""
    TransformersModel = import_nnsight().TransformersModel

    return TransformersModel(repo_id, config=config, tokenizer=tokenizer, task="text-generation")


def register_kernels() -> None:
    """Ship :mod:`esr_analysis.tracing.kernels` (only it, not the package) by value with remote requests:
    NDIF does not have ``esr_analysis`` installed. Idempotent."""
    from esr_analysis.tracing import kernels

    import_nnsight().register(kernels)
