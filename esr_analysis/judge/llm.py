"""Shared machinery of the API judges (Claude, OpenAI-compatible).

An API judge sends one request per grading: the rubric's system prompt and user message
(:mod:`esr_analysis.judge.rubric`) at temperature 0, then parses the reply
(:mod:`esr_analysis.judge.parsing`). HTTP-level retries (429 honouring ``retry-after``, 408/409, 5xx,
timeouts, connection errors) are done by the SDK's own retry machinery, bounded by ``max_retries`` with a
per-attempt ``timeout``. Around that, ``item_deadline_s`` bounds one grading's total time (so a huge
``retry-after`` cannot stall a run), and a malformed response body is raised as
:class:`~esr_analysis.judge.types.TransientJudgeError` for the runner's item-level retry.

Outcomes of one grading:

* a parsed verdict -> a grade with attempts;
* an unparseable verdict -> a grade with ``error`` and the ``raw_response`` kept (not retried);
* HTTP 401/403/404, or a 400 that rejects the ``temperature`` parameter ->
  :class:`~esr_analysis.judge.types.JudgeFatalError` (bad key, unknown model, unsupported parameter:
  every item would fail the same way);
* any other API failure (an SDK ``APIError``) after the SDK's retries -> a grade with ``error``;
* anything else (a bug, a wrong SDK version) propagates and stops the run.

API keys are read from the environment at construction (a missing key fails there, before any compute),
kept in a private attribute, and scrubbed from every grade.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from abc import abstractmethod
from typing import Any

from esr_analysis.judge.base import Judge
from esr_analysis.judge.gating import DEFAULT_WINDOW, GATING_VERSION, gate_grade
from esr_analysis.judge.parsing import parse_judge_output
from esr_analysis.judge.rubric import build_user_message, rubric_hash, system_prompt
from esr_analysis.judge.types import (
    Grade,
    GradeRequest,
    JudgeConfigError,
    JudgeFatalError,
    TransientJudgeError,
    redact_secrets,
)

FATAL_STATUS = frozenset({401, 403, 404})
SDK_INITIAL_RETRY_DELAY = 0.5  # the SDKs' exponential backoff: 0.5 s * 2**n, capped at 8 s
SDK_MAX_RETRY_DELAY = 8.0


def _sdk_retries(status: int) -> bool:
    """Whether the SDKs' retry policy retries an HTTP status (408, 409, 429, 5xx)."""
    return status in (408, 409, 429) or status >= 500


def item_deadline(timeout: float, max_retries: int, max_retry_wait: float) -> float:
    """Upper bound on one grading: ``max_retries + 1`` attempts of ``timeout`` seconds, plus for each
    retry the longer of ``max_retry_wait`` (the largest ``retry-after`` we wait out) and the SDK's backoff
    for that retry, plus 1 s of slack."""
    waits = sum(
        max(max_retry_wait, min(SDK_INITIAL_RETRY_DELAY * 2.0**n, SDK_MAX_RETRY_DELAY))
        for n in range(max_retries)
    )
    return timeout * (max_retries + 1) + waits + 1.0


class CompletionResult:
    """The judge text of one API call, its token usage and whether it was cut at ``max_tokens``."""

    __slots__ = ("text", "usage", "truncated", "http_requests")

    def __init__(
        self, text: str | None, usage: dict[str, int] | None, truncated: bool, http_requests: int
    ) -> None:
        self.text, self.usage, self.truncated, self.http_requests = text, usage, truncated, http_requests


async def parse_raw(raw: Any) -> Any:
    """``raw.parse()`` of an SDK raw response (sync in some SDK versions, a coroutine in others); a body
    that is not valid JSON becomes :class:`TransientJudgeError`."""
    try:
        parsed = raw.parse()
        if inspect.isawaitable(parsed):
            parsed = await parsed
    except ValueError as exc:  # json.JSONDecodeError and pydantic validation errors
        raise TransientJudgeError(f"malformed response body: {exc}") from None
    return parsed


class LLMJudge(Judge):
    """Base of the API judges. See the module docstring for the behaviour.

    Args:
        model: the provider's model id (any id is accepted and sent as is).
        base_url: API root to use instead of the provider default (proxies, local servers, tests).
        timeout: seconds per HTTP attempt.
        max_retries: SDK retries per grading (each waits ``retry-after`` when the server sends it, else
            exponential backoff from 0.5 s).
        max_tokens: cap on the judge's reply.
        gate: apply restart gating (:mod:`esr_analysis.judge.gating`) to every grade.
        judge_id: identity to record instead of ``"<provider>:<model>"``.
        concurrency: default number of requests in flight.
        max_retry_wait: the longest ``retry-after`` a grading is allowed to wait out (sets the deadline).
    """

    provider: str = "api"
    key_env: str | None = None  # environment variable holding the key
    key_required: bool = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        max_tokens: int = 4096,
        gate: bool = False,
        gate_window: int = DEFAULT_WINDOW,
        judge_id: str | None = None,
        concurrency: int = 16,
        max_retry_wait: float = 60.0,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise JudgeConfigError("model must be a non-empty model id string")
        if timeout <= 0:
            raise JudgeConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if not 0 <= max_retries <= 20:
            raise JudgeConfigError(f"max_retries must be in 0..20, got {max_retries}")
        if max_tokens < 16:
            raise JudgeConfigError(f"max_tokens must be >= 16, got {max_tokens}")
        if concurrency < 1:
            raise JudgeConfigError(f"concurrency must be >= 1, got {concurrency}")
        if max_retry_wait < 0:
            raise JudgeConfigError(f"max_retry_wait must be >= 0 seconds, got {max_retry_wait}")
        self.model = model.strip()
        self.base_url = base_url
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_tokens = int(max_tokens)
        self.gate = bool(gate)
        self.gate_window = int(gate_window)
        self.default_concurrency = int(concurrency)
        self._api_key = self._read_key()
        self._base_id = judge_id or f"{self.provider}:{self.model}"
        self.judge_id = self._base_id + (f"+{GATING_VERSION}" if self.gate else "")
        self.rubric_hash = rubric_hash()
        self.item_deadline_s = item_deadline(self.timeout, self.max_retries, max_retry_wait)
        self.http_requests = 0  # HTTP requests sent by this judge (including SDK retries), all runs
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- credentials and clients ---------------------------------------------------------------------

    def _read_key(self) -> str | None:
        if self.key_env is None:
            return None
        key = os.environ.get(self.key_env, "").strip()
        if not key and self.key_required:
            raise JudgeConfigError(
                f"{type(self).__name__} ({self.provider}) needs an API key in the environment variable "
                f"{self.key_env}; keys are read only from the environment. Set it (e.g. `export "
                f"{self.key_env}=...`), or use make_judge('offline') for the offline judge."
            )
        return key or None

    @property
    def cache_id(self) -> str:
        return self._base_id

    @abstractmethod
    def _make_client(self) -> Any:
        """A new SDK async client."""

    @abstractmethod
    async def _complete(self, client: Any, system: str, user: str) -> CompletionResult:
        """Send one grading request; SDK exceptions propagate."""

    @abstractmethod
    def _sdk_errors(self) -> Any:
        """The SDK module whose ``APIStatusError``/``APITimeoutError``/``APIConnectionError`` we classify."""

    def _client_for_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = self._make_client()
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, loop = self._client, self._client_loop
        self._client, self._client_loop = None, None
        if client is not None and loop is asyncio.get_running_loop():
            await client.close()

    # -- grading -------------------------------------------------------------------------------------

    def _grade(self, **fields: Any) -> Grade:
        return Grade(judge_id=self._base_id, rubric_hash=self.rubric_hash, **fields)

    def _classify(self, exc: Exception) -> Grade:
        sdk = self._sdk_errors()
        msg = redact_secrets(str(exc), [self._api_key or ""]) or ""
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            if status in FATAL_STATUS:
                raise JudgeFatalError(
                    f"{self.provider} API answered HTTP {status} for model {self.model!r} (bad API key, no "
                    f"access, or unknown model); stopping the run: {msg}"
                ) from None
            if status == 400 and "temperature" in msg.lower():
                raise JudgeFatalError(
                    f"model {self.model!r} rejects the temperature parameter; build the judge with "
                    f"temperature=None: {msg}"
                ) from None
            if _sdk_retries(status):
                return self._grade(error=f"API error HTTP {status} after {self.max_retries} retries: {msg}")
            return self._grade(error=f"API error HTTP {status} (not retried): {msg}")
        if isinstance(exc, sdk.APITimeoutError):
            return self._grade(
                error=f"API timeout ({self.timeout:g} s per attempt, {self.max_retries} retries)"
            )
        if isinstance(exc, sdk.APIConnectionError):
            return self._grade(error=f"API connection error after {self.max_retries} retries: {msg}")
        return self._grade(error=f"{type(exc).__name__}: {msg}")

    async def grade_one(self, request: GradeRequest) -> Grade:
        client = self._client_for_loop()
        user = build_user_message(request.prompt, request.response, request.latent_label)
        try:
            result = await self._complete(client, system_prompt(request.steered), user)
        except TransientJudgeError:
            self.http_requests += 1
            raise
        except self._sdk_errors().APIError as exc:
            status = getattr(exc, "status_code", None)
            # the SDK does not report its retries on failure: count what its policy implies
            retried = status is None or _sdk_retries(status)
            self.http_requests += self.max_retries + 1 if retried else 1
            return self._classify(exc)
        self.http_requests += result.http_requests
        parsed = parse_judge_output(result.text)
        error = parsed.error
        if error is not None and result.truncated:
            error += f" (the judge's reply was cut at max_tokens={self.max_tokens})"
        return self._grade(
            attempts=parsed.attempts if error is None else [],
            raw_response=result.text,
            error=error,
            usage=result.usage,
        )

    def finalize(self, grade: Grade, request: GradeRequest) -> Grade:
        """Restart gating when ``gate`` is on (recorded under the gated ``judge_id``)."""
        if not self.gate:
            return grade
        return gate_grade(grade, request.response, window=self.gate_window, judge_id=self.judge_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(judge_id={self.judge_id!r}, base_url={self.base_url!r})"
