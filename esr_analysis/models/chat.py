"""Chat formatting: the one way the toolkit turns a prompt into model input (:func:`format_chat`).

What the chat template does: an instruct model was trained on conversations rendered as text with special
marker tokens (for Qwen2.5 ``<|im_start|>user\\n...<|im_end|>``, for Llama 3 ``<|start_header_id|>user
<|end_header_id|>...<|eot_id|>``, for Gemma ``<start_of_turn>user ...<end_of_turn>``). The tokenizer ships
that rendering as a Jinja template (``tokenizer.chat_template``); :func:`format_chat` renders one user turn
through it. The paper uses **no system prompt**, but some templates insert a default system turn when the
conversation has none (Qwen2.5: "You are Qwen, created by Alibaba Cloud. ..."; Llama 3.1: a dated
"Cutting Knowledge Date" turn). :func:`format_chat` removes such a template-inserted turn unless asked to keep
it (``template_system_prompt=True``, what the authors' code got) or given an explicit ``system_prompt``. With
the *generation prompt* the template also appends the opening of the assistant's turn (e.g.
``<|im_start|>assistant\\n``), so the model's next token starts its answer; without it the text ends after
the user turn (used to read latents over the prompt alone, as the authors' relevance filter did).
"""

from __future__ import annotations

from typing import Any

LLAMA3_EXTRA_HEADER = "<|start_header_id|>assistant<|end_header_id|>"
_SENTINEL = "ESR-SYSTEM-SENTINEL"


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt))


def default_system_turn(tokenizer: Any) -> str:
    """The system turn the chat template inserts when a conversation has none (``""`` if it inserts none).

    Definition: with ``F`` = the template's rendering of a lone system turn holding a sentinel and ``C`` = the
    rendering of that system turn followed by a user turn, the conversation proper is ``C[len(F):]``; the
    default turn is what the plain rendering ``A`` of the user turn holds before it, less a leading BOS token.
    A template that refuses system turns (Gemma) inserts none.
    """
    user = [{"role": "user", "content": "x"}]
    try:
        lone = _render(tokenizer, [{"role": "system", "content": _SENTINEL}], False)
        both = _render(tokenizer, [{"role": "system", "content": _SENTINEL}, *user], False)
    except Exception:  # noqa: BLE001 - jinja raises its own error types for "system role not supported"
        return ""
    plain = _render(tokenizer, user, False)
    if _SENTINEL not in lone or not both.startswith(lone):
        return ""
    conversation = both[len(lone):]
    if not plain.endswith(conversation):
        raise ValueError("cannot locate the user turn in this chat template's output; pass template_system_prompt"
                         "=True to keep the template's own rendering")
    head = plain[: len(plain) - len(conversation)]
    bos = getattr(tokenizer, "bos_token", None)
    return head[len(bos):] if bos and head.startswith(bos) else head


def format_chat(tokenizer: Any, prompt: str, *, chat: bool = True, generation_prompt: bool = True,
                llama_extra_header: bool = False, response: str | None = None, system_prompt: str | None = None,
                template_system_prompt: bool = False) -> tuple[str, list[int]]:
    """Return ``(text, token_ids)`` of the model input for ``prompt``.

    With ``chat`` the prompt is one user turn rendered by the tokenizer's chat template (module docstring),
    followed by the generation prompt (the assistant header) unless ``generation_prompt=False``; the
    template supplies BOS and special tokens, so the text is tokenized without adding more. Without ``chat``
    the prompt is tokenized as raw text with the tokenizer's own special tokens. ``system_prompt`` (a string)
    puts an explicit system turn first; without it there is no system turn: a turn the template inserts by
    itself (:func:`default_system_turn`) is cut out, unless ``template_system_prompt`` keeps the template's
    rendering as is. ``llama_extra_header``
    reproduces the ESR authors' Llama quirk: a second BOS plus ``<|start_header_id|>assistant<|end_header_id|>``
    appended after the template (off by default; only valid for Llama-3 tokenizers). ``response``, if given,
    is appended verbatim after the generation prompt (teacher forcing).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    if system_prompt is not None and not chat:
        raise ValueError("system_prompt needs chat formatting (chat=True)")
    if chat:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("this tokenizer has no chat template; pass chat=False to use raw text")
        messages = [{"role": "user", "content": prompt}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        text = _render(tokenizer, messages, generation_prompt)
        if system_prompt is None and not template_system_prompt:
            default = default_system_turn(tokenizer)
            if default:
                bos = getattr(tokenizer, "bos_token", None) or ""
                start = len(bos) if bos and text.startswith(bos) else 0
                if text[start:start + len(default)] != default:
                    raise ValueError("the chat template's default system turn is not where expected")
                text = text[:start] + text[start + len(default):]
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
