"""The judge interface: requests, grades, and the :class:`Judge` base class.

Definitions
-----------
* A **grade request** is one ``(prompt, response, latent_label)`` triple: the user prompt given to the
  steered model, the model's response, and the label of the unrelated (steered) latent.
* An **attempt** is a contiguous stretch of the response that tries to answer the prompt. A response is
  split into attempts only where it uses explicit restart language ("wait, that's wrong", "let me try
  again", ...). Each attempt gets a **score** in ``[0, 100]``: how well it answers the prompt while
  resisting the unrelated latent. ``score`` may be ``None`` when the judge gave an attempt no number; the
  metrics ignore such attempts (esr-method.md §3).
* A **grade** is the judge's verdict on one request: its attempts in order, the raw judge text, and
  ``error`` (a message, never a silent zero) when the request could not be graded. A grade with an error
  has no attempts. ``judge_id`` and ``rubric_hash`` identify what produced it; ``cached`` says it was
  read from the grade cache instead of being computed in this run.

API keys are read from the environment only and are never stored in a grade: every text field of a
grade (raw response, error, attempt texts) passes through :func:`redact_secrets`.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from esr_analysis.errors import ConfigError

if TYPE_CHECKING:
    from esr_analysis.judge.runner import GradingReport

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
        """The grade in the authors' result-file ``score`` shape (esr-method.md §5):
        ``{"raw_response", "attempts": [{"attempt_text", "score"}]}`` or ``{"raw_response", "error"}``."""
        if self.error is not None:
            return {"raw_response": self.raw_response, "error": self.error}
        return {
            "raw_response": self.raw_response,
            "attempts": [{"attempt_text": a.text, "score": a.score} for a in self.attempts],
        }


class Judge(ABC):
    """A judge turns :class:`GradeRequest` items into :class:`Grade` objects.

    Subclasses set ``judge_id`` (stable, key-free identity, e.g. ``"anthropic:claude-haiku-4-5-20251001"``)
    and ``rubric_hash`` (sha256 of the exact grading instructions), and implement :meth:`grade_one`.

    * ``uses_api``: each :meth:`grade_one` costs an API call (counted against a run's budget).
    * ``supports_batch``: :meth:`grade_batch` is cheaper than many :meth:`grade_one` (offline judge).
    * ``cache_id``: the identity under which raw grades are cached. It differs from ``judge_id`` only when
      :meth:`finalize` post-processes grades (restart gating), so gated and ungated runs share API calls.
    * ``item_deadline_s``: an upper bound on one :meth:`grade_one` call including the SDK's retries.
    """

    judge_id: str
    rubric_hash: str
    uses_api: bool = True
    supports_batch: bool = False
    default_concurrency: int = 16
    item_deadline_s: float | None = None

    @property
    def cache_id(self) -> str:
        """Identity used in the grade cache key (see the class docstring)."""
        return self.judge_id

    @abstractmethod
    async def grade_one(self, request: GradeRequest) -> Grade:
        """Grade one request. Per-item failures come back as a grade with ``error``; only
        :class:`JudgeFatalError` and :class:`TransientJudgeError` are raised."""

    async def grade_batch(self, requests: Sequence[GradeRequest]) -> list[Grade]:
        """Grade several requests at once (default: one by one)."""
        return [await self.grade_one(r) for r in requests]

    def finalize(self, grade: Grade, request: GradeRequest) -> Grade:
        """Post-process a raw (possibly cached) grade; the default returns it unchanged."""
        return grade

    async def aclose(self) -> None:
        """Release network clients bound to the current event loop (a no-op by default)."""
        return None

    async def grade(self, items: Sequence[GradeRequest], **run_options: Any) -> list[Grade]:
        """Grade ``items`` with the async runner (:func:`esr_analysis.judge.runner.grade_async`);
        ``run_options`` are passed through (``cache``, ``concurrency``, ``max_calls``, ``progress``...)."""
        report = await self.grade_report(items, **run_options)
        return report.grades

    async def grade_report(self, items: Sequence[GradeRequest], **run_options: Any) -> GradingReport:
        """Like :meth:`grade`, also returning the run statistics."""
        from esr_analysis.judge.runner import grade_async

        return await grade_async(self, items, **run_options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(judge_id={self.judge_id!r})"
