"""Chat formatting through the tokenizer's chat template (one user turn, no system prompt)."""

from __future__ import annotations

from typing import Any

LLAMA3_EXTRA_HEADER = "<|start_header_id|>assistant<|end_header_id|>"


def format_chat(tokenizer: Any, prompt: str, *, chat: bool = True, llama_extra_header: bool = False,
                response: str | None = None) -> tuple[str, list[int]]:
    """Return ``(text, token_ids)`` of the model input for ``prompt``.

    With ``chat`` the prompt is one user turn rendered by the tokenizer's chat template with the
    generation prompt (the assistant header) appended; the template supplies BOS and special tokens, so
    the text is tokenized without adding more. ``llama_extra_header`` reproduces the ESR authors' Llama
    quirk: a second BOS plus ``<|start_header_id|>assistant<|end_header_id|>`` appended after the
    template (off by default; only valid for Llama-3 tokenizers). ``response``, if given, is appended
    verbatim after the generation prompt (teacher forcing).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    if chat:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("this tokenizer has no chat template; pass chat=False to use raw text")
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if llama_extra_header:
            if tokenizer.bos_token_id is None or "<|start_header_id|>" not in tokenizer.get_vocab():
                raise ValueError("llama_extra_header needs a Llama-3 tokenizer (<|start_header_id|> missing)")
            extra = [tokenizer.bos_token_id] + list(
                tokenizer(LLAMA3_EXTRA_HEADER, add_special_tokens=False)["input_ids"])
            ids += extra
            text += tokenizer.decode(extra)
    else:
        text = prompt
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if response is not None:
        ids += list(tokenizer(response, add_special_tokens=False)["input_ids"])
        text += response
    return text, ids
