"""The model folders a local NDIF serves: a tiny random Llama (written once to the cache) and the embedded
default model's offline HF copy. Client and server read the same folders, so a remote run can be compared
with a local one loaded from the very same files."""

from __future__ import annotations

from pathlib import Path

from esr_analysis.paths import cache_subdir

TINY_NAME = "tiny-llama"
EMBEDDED_NAME = "qwen2.5-coder-0.5b-instruct"


def tiny_model_folder() -> Path:
    """``<cache>/ndif-models/tiny-llama``: :func:`esr_analysis.models.tiny.tiny_hf_model` (llama, seed 0) saved
    with the toolkit's tiny tokenizer (fp32 safetensors, about 0.5 MB); written once."""
    from esr_analysis.files import atomic_directory
    from esr_analysis.models.tiny import tiny_hf_model, tiny_tokenizer

    folder = cache_subdir("ndif-models", create=True) / TINY_NAME
    if not (folder / "config.json").exists():
        with atomic_directory(folder) as tmp:
            tiny_hf_model("llama").save_pretrained(tmp)
            tiny_tokenizer().save_pretrained(tmp)
    return folder


def embedded_model_folder() -> Path:
    """The embedded default model's offline HF copy (built on first use, about a minute)."""
    from esr_analysis.models.embedded import ensure_hf_copy

    return ensure_hf_copy(EMBEDDED_NAME)


def served_models(*, embedded: bool = True) -> dict[str, str]:
    """``{name: folder}`` of what a local NDIF serves: the tiny model, and the embedded one with ``embedded``."""
    out = {TINY_NAME: str(tiny_model_folder())}
    if embedded:
        out[EMBEDDED_NAME] = str(embedded_model_folder())
    return out
