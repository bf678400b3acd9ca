"""Chat formatting: the one way the toolkit turns a prompt into model input (:func:`format_chat`).

What the chat template does: an instruct model was trained on conversations rendered as text with special
marker tokens (for Qwen2.5 ``<|im_start|>user\\n...<|im_end|>``, for Llama 3 ``<|start_header_id|>user
<|end_header_id|>...<|eot_id|>``, for Gemma ``<start_of_turn>user ...<end_of_turn>``). The tokenizer ships
that rendering as a Jinja template (``tokenizer.chat_template``); :func:`format_chat` renders one user turn
with no system prompt through it. Some templates add their own default system turn (Qwen2.5 does). With
the *generation prompt* the template also appends the opening of the assistant's turn (e.g.
``<|im_start|>assistant\\n``), so the model's next token starts its answer; without it the text ends after
the user turn (used to read latents over the prompt alone, as the authors' relevance filter did).
"""

from __future__ import annotations

from typing import Any

LLAMA3_EXTRA_HEADER = "<|start_header_id|>assistant<|end_header_id|>"


def format_chat(tokenizer: Any, prompt: str, *, chat: bool = True, generation_prompt: bool = True,
                llama_extra_header: bool = False, response: str | None = None) -> tuple[str, list[int]]:
    """Return ``(text, token_ids)`` of the model input for ``prompt``.

    With ``chat`` the prompt is one user turn rendered by the tokenizer's chat template (module docstring),
    followed by the generation prompt (the assistant header) unless ``generation_prompt=False``; the
    template supplies BOS and special tokens, so the text is tokenized without adding more. Without ``chat``
    the prompt is tokenized as raw text with the tokenizer's own special tokens. ``llama_extra_header``
    reproduces the ESR authors' Llama quirk: a second BOS plus ``<|start_header_id|>assistant<|end_header_id|>``
    appended after the template (off by default; only valid for Llama-3 tokenizers). ``response``, if given,
    is appended verbatim after the generation prompt (teacher forcing).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    if chat:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("this tokenizer has no chat template; pass chat=False to use raw text")
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=generation_prompt)
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
