"""Chat formatting (:mod:`esr_analysis.models.chat`): no system turn unless asked, as in the paper."""

from __future__ import annotations

import pytest

from esr_analysis.models.chat import default_system_turn, format_chat


@pytest.fixture(scope="module")
def qwen_tokenizer():
    """The embedded Qwen2.5-Coder tokenizer (its template inserts 'You are Qwen, ...' by default)."""
    from transformers import AutoTokenizer

    from esr_analysis.models.embedded import ensure_hf_copy
    from esr_analysis.models.registry import DEFAULT_MODEL

    return AutoTokenizer.from_pretrained(ensure_hf_copy(DEFAULT_MODEL))


@pytest.mark.slow
def test_qwen_prompt_has_no_system_turn_by_default(qwen_tokenizer):
    tok = qwen_tokenizer
    im_start, im_end, nl = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "Ċ"])
    user, assistant = tok.encode("user", add_special_tokens=False), tok.encode("assistant", add_special_tokens=False)
    body = tok.encode("Hi", add_special_tokens=False)
    text, ids = format_chat(tok, "Hi")
    assert ids == [im_start, *user, nl, *body, im_end, nl, im_start, *assistant, nl]
    assert "system" not in text and "Qwen" not in text
    assert default_system_turn(tok).startswith("<|im_start|>system\nYou are Qwen")
    kept, kept_ids = format_chat(tok, "Hi", template_system_prompt=True)
    assert kept.startswith("<|im_start|>system\nYou are Qwen") and kept_ids[-len(ids):] == ids
    own, own_ids = format_chat(tok, "Hi", system_prompt="Be brief.")
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and own_ids[-len(ids):] == ids
    _, no_gen = format_chat(tok, "Hi", generation_prompt=False)
    assert no_gen == ids[: len(ids) - len(assistant) - 2]


def test_template_without_a_default_system_turn_is_unchanged():
    from esr_analysis.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    assert default_system_turn(tok) == ""
    text, _ = format_chat(tok, "Hi")
    assert text == "<bos><|user|>Hi<|end|><|assistant|>"
    assert format_chat(tok, "Hi", system_prompt="S")[0] == "<bos><|system|>S<|end|><|user|>Hi<|end|><|assistant|>"
    with pytest.raises(ValueError, match="needs chat"):
        format_chat(tok, "Hi", chat=False, system_prompt="S")
