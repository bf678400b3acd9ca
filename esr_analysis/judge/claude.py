"""The Claude judge: the rubric sent through the Anthropic Messages API (``anthropic`` SDK, async).

Default model ``claude-haiku-4-5-20251001``: the judge behind the paper's numbers (``docs/method.md#judge``; note
that the CLI alias "haiku" of the authors' code means a different, older model). Any model id is
accepted. Temperature is 0 (the authors left it at the provider default); the ``anthropic`` SDK (>= 1.0)
no longer takes sampling parameters as keyword arguments, so it travels in ``extra_body`` (the request on
the wire is the same). Newer models that reject sampling parameters need ``temperature=None`` (omitted).
The key comes from ``ANTHROPIC_API_KEY`` only; ``base_url`` may point at a proxy or a local test server.
"""

from __future__ import annotations

from typing import Any

from esr_analysis.judge.llm import CompletionResult, LLMJudge, parse_raw

DEFAULT_CLAUDE_MODEL = "claude-haiku-4-5-20251001"


class ClaudeJudge(LLMJudge):
    """LLM judge on the Anthropic Messages API (see :class:`~esr_analysis.judge.llm.LLMJudge` for args).

    ``temperature``: sampling temperature sent with each request (0); ``None`` omits it.
    """

    provider = "anthropic"
    key_env = "ANTHROPIC_API_KEY"

    def __init__(
        self, model: str = DEFAULT_CLAUDE_MODEL, *, temperature: float | None = 0.0, **kwargs: Any
    ) -> None:
        self.temperature = temperature
        super().__init__(model, **kwargs)

    def _sdk_errors(self) -> Any:
        import anthropic

        return anthropic

    def _make_client(self) -> Any:
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    async def _complete(self, client: Any, system: str, user: str) -> CompletionResult:
        raw = await client.messages.with_raw_response.create(
            model=self.model,
            max_tokens=self.max_tokens,
            system=system,
            messages=[{"role": "user", "content": user}],
            extra_body=None if self.temperature is None else {"temperature": self.temperature},
        )
        message = await parse_raw(raw)
        content = getattr(message, "content", None)
        if not isinstance(content, list):
            from esr_analysis.judge.types import TransientJudgeError

            raise TransientJudgeError("response body is not a Messages API message (no content list)")
        text = "".join(
            getattr(block, "text", "") or "" for block in content if getattr(block, "type", "") == "text"
        )
        usage_obj = getattr(message, "usage", None)
        usage = None
        if usage_obj is not None:
            usage = {
                "input_tokens": int(getattr(usage_obj, "input_tokens", 0) or 0),
                "output_tokens": int(getattr(usage_obj, "output_tokens", 0) or 0),
            }
        truncated = getattr(message, "stop_reason", None) == "max_tokens"
        return CompletionResult(text, usage, truncated, int(getattr(raw, "retries_taken", 0)) + 1)
