"""The judge's data: requests, attempts and grades, the judge errors, and secret redaction.

Definitions
-----------
* A **grade request** is one ``(prompt, response, latent_label)`` triple: the user prompt given to the
  steered model, the model's response, and the label of the unrelated (steered) latent.
* An **attempt** is a contiguous stretch of the response that tries to answer the prompt. A response is
  split into attempts only where it uses explicit restart language ("wait, that's wrong", "let me try
  again", ...). Each attempt gets a **score** in ``[0, 100]``: how well it answers the prompt while
  resisting the unrelated latent. ``score`` may be ``None`` when the judge gave an attempt no number; the
  metrics ignore such attempts (``docs/method.md#metrics``).
* A **grade** is the judge's verdict on one request: its attempts in order, the raw judge text, and
  ``error`` (a message, never a silent zero) when the request could not be graded. A grade with an error
  has no attempts. ``judge_id`` and ``rubric_hash`` identify what produced it; ``cached`` says it was
  read from the grade cache instead of being computed in this run.

API keys are read from the environment only and are never stored in a grade: every text field of a
grade (raw response, error, attempt texts) passes through :func:`redact_secrets`.

This module imports no other judge module, so :mod:`.base` (the :class:`~esr_analysis.judge.base.Judge`
interface) and :mod:`.runner` (the async grading loop) both build on it without importing each other.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from esr_analysis.errors import ConfigError

#: Environment variables that may hold judge credentials; their values are scrubbed from grades.
KEY_ENV_VARS: tuple[str, ...] = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY")

# Shapes of provider keys, scrubbed even when they are not in the environment of this process.
_KEY_PATTERNS = re.compile(r"\b(?:sk-ant-[A-Za-z0-9_\-]{8,}|sk-or-[A-Za-z0-9_\-]{8,}|sk-[A-Za-z0-9_\-]{20,})")
REDACTED = "[REDACTED]"


class JudgeConfigError(ConfigError):
    """A judge cannot be built as asked (missing API key, unknown judge name, bad option).

    Raised at construction, before any request is sent or any model is loaded.
    """


class JudgeFatalError(RuntimeError):
    """An error that would repeat for every item (bad credentials, unknown model): the run stops."""


class TransientJudgeError(RuntimeError):
    """A failure worth retrying at the item level that the SDK did not retry (e.g. a malformed body)."""


class BudgetExceededError(RuntimeError):
    """A run needs more judge API calls than its ``max_calls`` budget allows."""


def redact_secrets(text: str | None, extra: Sequence[str] = ()) -> str | None:
    """``text`` with every API key removed: the values of :data:`KEY_ENV_VARS` (and ``extra``), and any
    substring shaped like an Anthropic/OpenAI/OpenRouter key, are replaced by ``[REDACTED]``."""
    if text is None:
        return None
    secrets = [os.environ.get(name, "") for name in KEY_ENV_VARS] + list(extra)
    for secret in secrets:
        secret = secret.strip()
        if len(secret) >= 8 and secret in text:
            text = text.replace(secret, REDACTED)
    return _KEY_PATTERNS.sub(REDACTED, text)


class GradeRequest(BaseModel):
    """One item to grade: the prompt, the steered model's response and the unrelated latent's label."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    response: str
    latent_label: str = ""
    steered: bool = True
    """``False`` for an unsteered trial (no-steering baseline): LLM judges get the neutral system prompt."""


class Attempt(BaseModel):
    """One attempt: its text (as the judge delimited it) and its score in [0, 100] (``None``: unscored)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    score: float | None = Field(default=None, ge=0.0, le=100.0, allow_inf_nan=False)


class Grade(BaseModel):
    """A judge's verdict on one :class:`GradeRequest` (see the module docstring for the definitions).

    ``usage`` holds the tokens billed for this grade (``input_tokens``, ``output_tokens``) when the judge
    is an API judge and the grade was computed in this run; it is ``None`` otherwise.
    """

    model_config = ConfigDict(extra="forbid")

    attempts: list[Attempt] = Field(default_factory=list)
    raw_response: str | None = None
    error: str | None = None
    judge_id: str
    rubric_hash: str
    cached: bool = False
    usage: dict[str, int] | None = None

    @model_validator(mode="after")
    def _error_means_no_attempts(self) -> Grade:
        if self.error is not None and self.attempts:
            raise ValueError("a grade with an error carries no attempts")
        self.raw_response = redact_secrets(self.raw_response)
        self.error = redact_secrets(self.error)
        for i, attempt in enumerate(self.attempts):
            clean = redact_secrets(attempt.text)
            if clean != attempt.text:
                self.attempts[i] = Attempt(text=clean or "", score=attempt.score)
        return self

    @property
    def ok(self) -> bool:
        """True when the request was graded (no error); the attempt list may still be empty."""
        return self.error is None

    @property
    def scores(self) -> list[float]:
        """The non-null attempt scores, in order (what the ESR metrics use)."""
        return [a.score for a in self.attempts if a.score is not None]

    def to_authors_score(self) -> dict[str, Any]:
        """The grade in the authors' result-file ``score`` shape (``docs/method.md#authors-results``):
        ``{"raw_response", "attempts": [{"attempt_text", "score"}]}`` or ``{"raw_response", "error"}``."""
        if self.error is not None:
            return {"raw_response": self.raw_response, "error": self.error}
        return {
            "raw_response": self.raw_response,
            "attempts": [{"attempt_text": a.text, "score": a.score} for a in self.attempts],
        }
