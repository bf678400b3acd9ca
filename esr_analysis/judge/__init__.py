"""Judges that split a steered response into attempts and score each 0-100 (``docs/method.md#judge``).

Choose a judge with :func:`make_judge`; grade with :func:`grade_all` (sync, also in Jupyter) or
``await judge.grade(requests)``. Every grade records ``judge_id`` and ``rubric_hash`` and is cached by
content hash (:mod:`esr_analysis.judge.cache`). See ``docs/judging.md``.

Names understood by :func:`make_judge`:

==============================  =========================================================================
``"offline"``                   :class:`~esr_analysis.judge.offline.OfflineJudge` (no network, MiniLM)
``"claude"``                    Claude judge with the paper's model, ``claude-haiku-4-5-20251001``
``"claude:<model>"``            Claude judge with any Anthropic model id (also ``"anthropic:<model>"``)
``"claude-..."``                a bare Anthropic model id
``"openai:<model>"``            OpenAI API (``OPENAI_API_KEY``); with ``base_url=`` any compatible server
``"openrouter:<model>"``        OpenRouter (``OPENROUTER_API_KEY``); also a bare id containing ``"/"``
``"local:<model>"``             an OpenAI-compatible local server (vLLM, llama.cpp); needs ``base_url=``
``"gpt-..."``, ``"o1..."`` ...  a bare OpenAI model id
==============================  =========================================================================

Nothing heavy is imported here: the SDKs and sentence-transformers load when a judge is built or used.
"""

from __future__ import annotations

from typing import Any

from esr_analysis.judge.base import Judge
from esr_analysis.judge.cache import GradeCache
from esr_analysis.judge.runner import GradingReport, RunStats, grade_all, grade_async, run_grading
from esr_analysis.judge.types import (
    Attempt,
    BudgetExceededError,
    Grade,
    GradeRequest,
    JudgeConfigError,
    JudgeFatalError,
    TransientJudgeError,
)

__all__ = [
    "Attempt",
    "BudgetExceededError",
    "Grade",
    "GradeCache",
    "GradeRequest",
    "GradingReport",
    "Judge",
    "JudgeConfigError",
    "JudgeFatalError",
    "RunStats",
    "TransientJudgeError",
    "grade_all",
    "grade_async",
    "make_judge",
    "run_grading",
]

_OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-")
_LOCAL_PREFIXES = ("local", "vllm", "llamacpp", "llama.cpp")


def make_judge(name_or_model_id: str, **kwargs: Any) -> Judge:
    """Build a judge from a name or model id (table in the module docstring); ``kwargs`` go to the judge's
    constructor (e.g. ``gate=True``, ``base_url=...``, ``max_retries=...``, ``timeout=...``).

    Raises :class:`JudgeConfigError` for an unknown name or a missing API key, before any compute.
    """
    if not isinstance(name_or_model_id, str) or not name_or_model_id.strip():
        raise JudgeConfigError("make_judge needs a judge name or model id, e.g. 'offline' or 'claude'")
    name = name_or_model_id.strip()
    prefix, sep, rest = name.partition(":")
    prefix_l = prefix.lower()

    if name.lower() == "offline":
        from esr_analysis.judge.offline import OfflineJudge

        return OfflineJudge(**kwargs)

    from esr_analysis.judge.claude import ClaudeJudge
    from esr_analysis.judge.openai_compat import OpenAICompatJudge

    if name.lower() == "claude":
        return ClaudeJudge(**kwargs)
    if sep and rest:
        if prefix_l in ("claude", "anthropic"):
            return ClaudeJudge(rest, **kwargs)
        if prefix_l == "openai":
            provider = "local" if kwargs.get("base_url") else "openai"
            return OpenAICompatJudge(rest, provider=kwargs.pop("provider", provider), **kwargs)
        if prefix_l == "openrouter":
            return OpenAICompatJudge(rest, provider="openrouter", **kwargs)
        if prefix_l in _LOCAL_PREFIXES:
            return OpenAICompatJudge(rest, provider="local", **kwargs)
    elif not sep:
        low = name.lower()
        if low.startswith("claude-"):
            return ClaudeJudge(name, **kwargs)
        if "/" in name:
            return OpenAICompatJudge(name, provider="openrouter", **kwargs)
        if low.startswith(_OPENAI_PREFIXES):
            return OpenAICompatJudge(name, provider="openai", **kwargs)
    raise JudgeConfigError(
        f"unknown judge {name_or_model_id!r}: use 'offline', 'claude', 'claude:<model>', 'openai:<model>', "
        "'openrouter:<vendor/model>', 'local:<model>' (with base_url=...), or a bare 'claude-...'/'gpt-...' id"
    )
