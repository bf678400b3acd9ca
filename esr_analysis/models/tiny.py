"""Tiny random-init models and a locally trained tokenizer, for tests and offline experiments (:func:`load_tiny`).

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in a few milliseconds on a
built-in text, and each model is built from a config with ~2 layers and hidden size 64. The models
have a chat template so the whole chat-formatting path runs as on a real instruct model.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

TinyArch = Literal["llama", "qwen2", "gemma2", "gemma3"]

TINY_HIDDEN = 64
TINY_LAYERS = 2

_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = """
Explain how to bake bread. Mix flour, water, salt and yeast; knead the dough; let it rise; bake it.
How do you calculate the area of a circle? Multiply pi by the square of the radius.
The ocean is deep and blue. Whales swim in the ocean and sing to each other across great distances.
To write a thank-you note, start with a greeting, thank the person for something specific, and sign off.
Wait, that's not right. Let me try again. Actually, I made a mistake in the previous answer.
def add(a, b):
    return a + b
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
Compound interest grows money: the balance is multiplied by one plus the rate every period.
Budgets list income and expenses so that spending stays below what comes in each month.
Volcanoes erupt when magma rises through the crust. Astronomy studies stars, planets and galaxies.
"""


@functools.lru_cache(maxsize=4)
def _trained_tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<bos>", "<eos>", "<|user|>", "<|assistant|>", "<|end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 512):
    """A fresh ``PreTrainedTokenizerFast`` (byte-level BPE, trained locally) with a chat template.

    A new object is returned on every call because nnsight mutates the tokenizer it wraps.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json(vocab_size)),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
    )
    tok.chat_template = _CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def tiny_config(arch: TinyArch = "llama", vocab_size: int = 512, n_layers: int = TINY_LAYERS):
    """A transformers config for a tiny model of the given family (hidden 64, 4 heads, 2 KV heads)."""
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=TINY_HIDDEN,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(**common)
    if arch == "gemma2":
        from transformers import Gemma2Config

        return Gemma2Config(**common, head_dim=16, sliding_window=32)
    if arch == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**common, head_dim=16, sliding_window=32)
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of llama, qwen2, gemma2, gemma3")


def tiny_hf_model(arch: TinyArch = "llama", seed: int = 0, n_layers: int = TINY_LAYERS):
    """A random-init HF causal LM (fp32, eval mode, gradients off) built from :func:`tiny_config`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(arch, n_layers=n_layers)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.eval().requires_grad_(False)
    # Random init gives tiny logits; scale the head so greedy decoding is far from ties.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


def tiny_multimodal_gemma3(seed: int = 0, n_layers: int = TINY_LAYERS):
    """A random-init ``Gemma3ForConditionalGeneration`` (fp32, eval, gradients off) with a tiny vision tower.

    Its text model (the :func:`tiny_config` Gemma 3 text config) sits at ``model.language_model``, as in the
    real multimodal Gemma 3 checkpoints; for tests of code that must find the text model under a wrapper.
    """
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    torch.manual_seed(seed)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=28, patch_size=14)
    cfg = Gemma3Config(text_config=tiny_config("gemma3", n_layers=n_layers).to_dict(),
                       vision_config=vision.to_dict(), mm_tokens_per_image=4)
    model = Gemma3ForConditionalGeneration(cfg)  # float32: torch's default dtype
    model.eval().requires_grad_(False)
    return model


def load_tiny(arch: str = "llama", *, seed: int = 0, n_layers: int = 2) -> Any:
    """A tiny random-init model (:func:`tiny_hf_model`), wrapped for nnsight, with an ad-hoc spec.

    The spec (``spec_of(model)``) is named ``tiny-<arch>``: ``n_layers`` blocks of width 64, default
    layers at ``n_layers // 2``, no SAE, repetition penalty 1.0, float32. For tests and notebooks.
    """
    from esr_analysis.models.loaded_specs import remember_spec
    from esr_analysis.models.registry import ModelSpec
    from esr_analysis.tracing.core import wrap_model

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
        notes=f"tiny random-init {arch} model (seed {seed}) from esr_analysis.models.tiny",
    )
    lm = wrap_model(hf, tiny_tokenizer())
    remember_spec(lm, spec)
    remember_spec(hf, spec)
    return lm
