"""Loading models: :func:`load_model`, :func:`spec_of`, meta models, remote models, shipped configs.

* :func:`load_model` returns an nnsight ``TransformersModel`` (eval mode, gradients off) of a registered
  model: embedded models from their offline HF copy (:mod:`esr_analysis.models.embedded`), Hub models with
  ``from_pretrained`` (failing at once offline when not cached).
* :func:`meta_model_for` and :func:`load_remote_model` build weightless (``meta`` device) models from the
  shipped ``data/model_configs`` JSON, for shape checks and NDIF runs.
* :func:`spec_of` maps a loaded model back to its :class:`~esr_analysis.models.registry.ModelSpec`.

Heavy libraries (torch, transformers) are imported inside functions only; nnsight only via
:mod:`esr_analysis.tracing`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from esr_analysis.models.loaded_specs import remember_spec, remembered_spec
from esr_analysis.models.registry import ModelSpec, get_spec
from esr_analysis.paths import hub_offline, model_configs_dir

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "load_model",
    "load_model_config",
    "load_remote_model",
    "meta_model_for",
    "resolve_device",
    "resolve_dtype",
    "spec_of",
]

logger = logging.getLogger(__name__)


def _hf_config(model: Any) -> Any:
    for getter in (
        lambda m: m.config,
        lambda m: m._module.config,
    ):
        try:
            cfg = getter(model)
        except Exception:  # noqa: BLE001 - nnsight envoys may raise anything on unknown attributes
            continue
        cfg = getattr(cfg, "text_config", None) or cfg  # multimodal configs nest the LM's config
        if hasattr(cfg, "num_hidden_layers") and hasattr(cfg, "hidden_size"):
            return cfg
    return None


def spec_of(model: Any) -> ModelSpec:
    """The :class:`ModelSpec` of a model returned by :func:`load_model`,
    :func:`~esr_analysis.models.tiny.load_tiny` or :func:`meta_model_for` (or the HF module inside it).

    For other models a spec is inferred from the HF config (``num_hidden_layers``, ``hidden_size``;
    default layers at the middle block, no SAE). Raises :class:`ValueError` if neither works.
    """
    if isinstance(model, ModelSpec):
        return model
    spec = remembered_spec(model)
    if spec is not None:
        return spec
    try:
        inner = model._module  # the HF module inside an nnsight wrapper
    except Exception:  # noqa: BLE001 - nnsight envoys may raise anything on unknown attributes
        inner = None
    if inner is not None and (found := remembered_spec(inner)) is not None:
        return found
    cfg = _hf_config(model)
    if cfg is None:
        raise ValueError(
            f"cannot tell which model {type(model).__name__} is: it was not loaded with "
            "esr_analysis.models.loading.load_model and has no HF config with num_hidden_layers/hidden_size"
        )
    n_layers = int(cfg.num_hidden_layers)
    mid = n_layers // 2
    name = getattr(cfg, "name_or_path", "") or getattr(cfg, "model_type", "unknown")
    return ModelSpec(
        name=str(name),
        hf_id=str(name),
        source="adhoc",
        family=str(getattr(cfg, "model_type", "unknown")),
        n_layers=n_layers,
        d_model=int(cfg.hidden_size),
        vocab_size=getattr(cfg, "vocab_size", None),
        steer_layer=mid,
        ablate_layer=mid,
        read_layer=mid,
        dtype="float32",
        notes="inferred from the HF config",
    )


# --------------------------------------------------------------------------------------------------
# configs and meta models


def load_model_config(name: str | ModelSpec) -> Any:
    """The transformers config of a registered model, built from its shipped ``data/model_configs`` JSON.

    No network: the JSON holds the public ``config.json`` facts. Raises :class:`FileNotFoundError` if
    the model has no shipped config.
    """
    from transformers import AutoConfig

    spec = get_spec(name)
    if spec.config_file is None:
        raise FileNotFoundError(f"no shipped config for {spec.name}")
    path = model_configs_dir() / spec.config_file
    if not path.is_file():
        raise FileNotFoundError(f"shipped config {path} is missing (is the repository checkout complete?)")
    data = json.loads(path.read_text())
    model_type = data.pop("model_type")
    return AutoConfig.for_model(model_type, **data)


def meta_model_for(name: str | ModelSpec) -> Any:
    """A weightless (``meta`` device) nnsight model of a registered model, built offline for shape checks.

    Uses the shipped config and keeps the real repo id (the NDIF remote key). There is no real
    Llama/Gemma tokenizer offline, so the tokenizer is :func:`esr_analysis.models.tiny.tiny_tokenizer`
    (a stand-in: token ids and sequence lengths differ from the real model's, hidden sizes do not).
    ``scan`` works on it; running it does not.
    """
    from esr_analysis.models.tiny import tiny_tokenizer
    from esr_analysis.tracing.core import meta_model

    spec = get_spec(name)
    config = load_model_config(spec)
    lm = meta_model(spec.hf_id, config, tiny_tokenizer())
    remember_spec(lm, spec)
    return lm


def load_remote_model(name: str | ModelSpec) -> Any:
    """An nnsight model for remote (NDIF) execution: weightless on ``meta``, with the model's real tokenizer.

    The shipped config builds the module tree (no weights are downloaded); the tokenizer comes from the
    Hugging Face Hub or its local cache. Pass ``remote=True`` to ``generate``/``replay`` with it. Offline,
    or without access to the (gated) repo, this fails at once with :class:`FileNotFoundError`.
    """
    from transformers import AutoTokenizer

    from esr_analysis.tracing.core import meta_model

    spec = get_spec(name)
    try:
        tok = AutoTokenizer.from_pretrained(spec.hf_id)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"remote runs of {spec.hf_id} need its tokenizer from the Hugging Face Hub (or its local cache): {exc}. "
            "Connect to the Hub (unset HF_HUB_OFFLINE) and accept the model's licence with your HF token."
        ) from exc
    lm = meta_model(spec.hf_id, load_model_config(spec), tok)
    remember_spec(lm, spec)
    return lm


# --------------------------------------------------------------------------------------------------
# loading


_DTYPES = ("float32", "bfloat16", "float16")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from a name (``float32``/``bfloat16``/``float16`` or an alias such as ``bf16``) or a dtype;
    ``ValueError`` for anything else."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    aliases = {
        "fp32": "float32",
        "bf16": "bfloat16",
        "fp16": "float16",
        "half": "float16",
        "float": "float32",
    }
    name = aliases.get(name, name)
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    return getattr(torch, name)


def resolve_device(device: str | None) -> str:
    """``device`` as given, or ``"cuda"`` when available, else ``"cpu"``."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _load_hub(spec: ModelSpec, *, device: str | None, dtype: torch.dtype) -> tuple[Any, Any]:
    """``(hf_model, tokenizer)`` of a Hub model via ``from_pretrained(hf_id)``; fails fast offline."""
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec.hf_id, "config.json")
        if not isinstance(cached, str):
            raise FileNotFoundError(
                f"{spec.hf_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
                "downloading it. Download it once with network access (e.g. `hf download "
                f"{spec.hf_id}`; Llama and Gemma need an accepted licence and HF token), use the "
                "embedded default model (load_model() / 'qwen2.5-coder-0.5b-instruct'), or run it remotely "
                "on NDIF (meta_model_for(...) plus remote=True)."
            )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device is None:
        device_map: str = "auto" if torch.cuda.is_available() else "cpu"
    else:
        device_map = device
    try:
        tok = AutoTokenizer.from_pretrained(spec.hf_id)
        hf = AutoModelForCausalLM.from_pretrained(spec.hf_id, dtype=dtype, device_map=device_map)
    except OSError as exc:
        raise FileNotFoundError(
            f"could not load {spec.hf_id} from the Hugging Face Hub or cache ({exc}). Check network access "
            "and that your HF token has accepted the model's licence."
        ) from exc
    return hf, tok


def load_model(
    name: str | ModelSpec | None = None,
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
) -> Any:
    """Load a registered model as an nnsight ``TransformersModel`` (eval mode, gradients off).

    * ``name``: registry name/alias or a :class:`ModelSpec`; ``None`` loads :data:`DEFAULT_MODEL`.
    * ``device``: e.g. ``"cpu"``, ``"cuda"``; default CUDA when available, else CPU (Hub models on CUDA
      use ``device_map="auto"``).
    * ``dtype``: ``"float32"``/``"bfloat16"``/``"float16"`` or a torch dtype; default ``spec.dtype``.

    Organisms (specs with an ``adapter``) load their base model, then merge the shipped LoRA adapter
    (:func:`esr_analysis.finetune.adapter.merge_adapter`) before wrapping. Embedded models load offline from the
    cache's HF copy, building it on first use (a minute or two,
    logged). Hub models use ``from_pretrained(hf_id)`` and fail at once with a clear message when
    ``HF_HUB_OFFLINE=1`` and the model is not cached. :func:`spec_of` maps the result back to its spec.
    Unknown names and bad dtypes raise :class:`ValueError` before anything is loaded.
    """
    from esr_analysis.tracing.core import wrap_model

    spec = get_spec(name)
    if spec.source == "adhoc":
        raise ValueError(f"{spec.name} is an ad-hoc spec with no weights to load; use esr_analysis.models.tiny.load_tiny() for tests")
    torch_dtype = resolve_dtype(dtype if dtype is not None else spec.dtype)
    t0 = time.monotonic()
    base = get_spec(spec.base_model) if spec.adapter else spec
    if base.is_embedded:
        from esr_analysis.models.embedded import load_embedded_hf

        hf, tok = load_embedded_hf(base.name, dtype=torch_dtype, device=resolve_device(device))
    else:
        hf, tok = _load_hub(base, device=device, dtype=torch_dtype)
    if spec.adapter:  # a model organism: fold the LoRA into the weights before wrapping (module paths unchanged)
        from esr_analysis.finetune.adapter import merge_adapter

        hf = merge_adapter(hf, spec.adapter)
    hf.eval()
    hf.requires_grad_(False)
    lm = wrap_model(hf, tok)
    remember_spec(lm, spec)
    remember_spec(hf, spec)
    logger.info("loaded %s (%s) in %.1f s", spec.name, torch_dtype, time.monotonic() - t0)
    return lm
