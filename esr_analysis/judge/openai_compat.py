"""OpenAI-compatible judge: the rubric through a chat-completions API (``openai`` SDK, async).

Providers (``provider=``):

* ``"openai"``: api.openai.com, key ``OPENAI_API_KEY`` (required);
* ``"openrouter"``: ``https://openrouter.ai/api/v1``, key ``OPENROUTER_API_KEY`` (required);
* ``"local"``: any OpenAI-compatible server given by ``base_url`` (vLLM, llama.cpp, ...); the key is
  ``OPENAI_API_KEY`` when set, else a placeholder (local servers usually ignore it).

Used for cross-judge validation (the paper's exp 7 re-grades with other judges).
"""

from __future__ import annotations

from typing import Any, Literal

from esr_analysis.judge.llm import CompletionResult, LLMJudge, parse_raw
from esr_analysis.judge.types import JudgeConfigError, TransientJudgeError

Provider = Literal["openai", "openrouter", "local"]

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
_KEY_ENV = {"openai": "OPENAI_API_KEY", "openrouter": "OPENROUTER_API_KEY", "local": "OPENAI_API_KEY"}
_LOCAL_PLACEHOLDER_KEY = "local-no-key"


class OpenAICompatJudge(LLMJudge):
    """LLM judge on an OpenAI-compatible chat-completions API.

    Args (besides :class:`~esr_analysis.judge.llm.LLMJudge`'s):
        provider: see the module docstring.
        temperature: sampling temperature (0); ``None`` omits it, for models that reject the parameter.
        max_tokens_param: the request field that caps the reply (``"max_completion_tokens"`` for OpenAI
            reasoning models).
    """

    def __init__(
        self,
        model: str,
        *,
        provider: Provider = "openai",
        base_url: str | None = None,
        temperature: float | None = 0.0,
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        **kwargs: Any,
    ) -> None:
        if provider not in _KEY_ENV:
            raise JudgeConfigError(f"provider must be one of {sorted(_KEY_ENV)}, got {provider!r}")
        if provider == "local" and not base_url:
            raise JudgeConfigError("provider 'local' needs base_url, e.g. 'http://127.0.0.1:8000/v1'")
        self.provider = provider
        self.key_env = _KEY_ENV[provider]
        self.key_required = provider != "local"
        if provider == "openrouter" and base_url is None:
            base_url = OPENROUTER_BASE_URL
        self.temperature = temperature
        self.max_tokens_param = max_tokens_param
        super().__init__(model, base_url=base_url, **kwargs)

    def _sdk_errors(self) -> Any:
        import openai

        return openai

    def _make_client(self) -> Any:
        import openai

        return openai.AsyncOpenAI(
            api_key=self._api_key or _LOCAL_PLACEHOLDER_KEY,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    async def _complete(self, client: Any, system: str, user: str) -> CompletionResult:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            self.max_tokens_param: self.max_tokens,
        }
        if self.temperature is not None:
            params["temperature"] = self.temperature
        raw = await client.chat.completions.with_raw_response.create(**params)
        completion = await parse_raw(raw)
        choices = getattr(completion, "choices", None)
        if not choices:
            raise TransientJudgeError("response body has no choices")
        choice = choices[0]
        text = getattr(getattr(choice, "message", None), "content", None)
        usage_obj = getattr(completion, "usage", None)
        usage = None
        if usage_obj is not None:
            usage = {
                "input_tokens": int(getattr(usage_obj, "prompt_tokens", 0) or 0),
                "output_tokens": int(getattr(usage_obj, "completion_tokens", 0) or 0),
            }
        truncated = getattr(choice, "finish_reason", None) == "length"
        return CompletionResult(text, usage, truncated, int(getattr(raw, "retries_taken", 0)) + 1)
