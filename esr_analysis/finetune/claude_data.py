"""Optional: self-correction examples written by Claude, following the paper's exp 4 recipe (needs a key).

The paper asked Claude Sonnet 4.5 (temperature 0.8) to answer each prompt by first veering onto an off-topic
subject for 2-4 sentences, then acknowledging the drift in one explicit sentence, then giving a correct 2-4
sentence answer. :func:`claude_self_correction` sends that request (our wording) once per (prompt, subject)
through the Anthropic Messages API and turns each reply into a self-correction example with the same loss
mask as the offline build (:mod:`esr_analysis.finetune.data`). The reply must be a JSON object
``{"off_topic": str, "acknowledgement": str, "answer": str}`` inside ``<json>`` tags; a reply that is not is
counted in ``failures`` and skipped. The key comes from ``ANTHROPIC_API_KEY``; ``base_url`` may point at a
proxy or a local test server.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

from esr_analysis.finetune.data import Example, self_correction_example

__all__ = ["DEFAULT_GENERATOR_MODEL", "claude_self_correction", "generator_request", "parse_generator_reply"]

DEFAULT_GENERATOR_MODEL = "claude-sonnet-4-5-20250929"

_SYSTEM = ("You write training data for a study of how language models notice and correct their own drift. "
           "Follow the format exactly.")
_JSON = re.compile(r"<json>(.*?)</json>", re.DOTALL)


def generator_request(prompt: str, subject: str) -> str:
    """The user message for one example (the prompt sits inside ``<prompt>`` tags)."""
    return (
        "Answer the user's prompt below as an assistant that first drifts off-topic and then catches itself.\n"
        f"1. Start with 2-4 fluent sentences about {subject}, written as if they were the answer.\n"
        "2. Then one sentence that explicitly notices the drift and returns to the question (vary the wording).\n"
        "3. Then a correct, helpful answer to the prompt in 2-4 sentences.\n"
        'Return only <json>{"off_topic": "...", "acknowledgement": "...", "answer": "..."}</json>.\n\n'
        f"<prompt>\n{prompt}\n</prompt>")


def parse_generator_reply(text: str) -> dict[str, str] | None:
    """The three fields of a reply, or ``None`` if it has no valid ``<json>`` object with non-empty strings."""
    m = _JSON.search(text or "")
    if not m:
        return None
    try:
        data = json.loads(m.group(1))
    except json.JSONDecodeError:
        return None
    fields = ("off_topic", "acknowledgement", "answer")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) and data[k].strip() for k in fields):
        return None
    return {k: data[k].strip() for k in fields}


def claude_self_correction(tokenizer: Any, prompts: Sequence[str], subjects: Sequence[str], *,
                           model: str = DEFAULT_GENERATOR_MODEL, temperature: float = 0.8, max_tokens: int = 1024,
                           base_url: str | None = None, api_key: str | None = None,
                           timeout: float = 60.0) -> tuple[list[Example], int]:
    """``(examples, failures)``: one example per ``(prompt, subject)`` pair in ``zip(prompts, subjects)``.

    Raises ``ValueError`` (before any request) when the lists differ in length or no key is available.
    """
    if len(prompts) != len(subjects):
        raise ValueError(f"got {len(prompts)} prompts but {len(subjects)} subjects (one subject per prompt)")
    key = api_key or os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        raise ValueError("the Claude generator needs ANTHROPIC_API_KEY (or api_key=...)")
    import anthropic

    client = anthropic.Anthropic(api_key=key, base_url=base_url, timeout=timeout, max_retries=3)
    examples: list[Example] = []
    failures = 0
    for prompt, subject in zip(prompts, subjects, strict=True):
        msg = client.messages.create(model=model, max_tokens=max_tokens, system=_SYSTEM,
                                     messages=[{"role": "user", "content": generator_request(prompt, subject)}],
                                     extra_body={"temperature": temperature})  # not a named argument in every SDK
        text = "".join(getattr(b, "text", "") or "" for b in msg.content if getattr(b, "type", "") == "text")
        parts = parse_generator_reply(text)
        if parts is None:
            failures += 1
            continue
        examples.append(self_correction_example(
            tokenizer, prompt, parts["off_topic"], parts["acknowledgement"], parts["answer"],
            meta={"prompt": prompt, "subject": subject, "generator": model, "temperature": temperature}))
    return examples, failures
