"""The Claude boundary annotator (the paper's exp 9 recipe, our own wording), on the project's Claude client.

Definitions
-----------
* One request per episode: a system prompt that makes Claude an annotator of self-corrections and a user
  message with the prompt (inside ``<prompt>`` tags) and the response (inside ``<response>`` tags). The reply
  holds, in a fenced ``json`` block (or as the first JSON object), ``off_topic_char_start``,
  ``correction_char_start``, ``on_topic_char_start`` (0-based character offsets into the response, -1 when
  unclear), ``correction_phrase`` and ``notes``. Cue phrases listed: "Wait", "Actually", "I made a mistake",
  "Let me try again", "I should clarify", "That's not right", "I apologize", "No, I'm just kidding", "To actually
  answer your question".
* **Re-anchoring.** Language models count characters badly. When the ``correction_phrase`` occurs in the
  response and the given correction offset does not point at it, the offset is moved to the occurrence nearest
  the given offset, and the note says so; the other offsets are kept.
* The result is :class:`~esr_analysis.mechanisms.boundaries.Boundaries` with ``source="claude:<model>"``; it is
  kept only when valid (ordered, non-negative, inside the response); otherwise, and on an API error or an
  unparseable reply, the boundaries are unclear (all -1) and ``notes`` says why.

Transport, retries, the key (``ANTHROPIC_API_KEY``, read at construction) and error classification are those of
:class:`esr_analysis.judge.claude.ClaudeJudge` (reused, not re-implemented); a fatal API answer (401/403/404)
raises :class:`~esr_analysis.judge.types.JudgeFatalError`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import Any

from esr_analysis.mechanisms.boundaries import Boundaries, unclear

DEFAULT_ANNOTATOR_MODEL = "claude-sonnet-4-5-20250929"
ANNOTATOR_VERSION = "anatomy-annotator-v1"

ANNOTATOR_SYSTEM = (
    "You annotate transcripts of a language model that sometimes drifts away from the user's question and then "
    "notices it and corrects itself. You locate, precisely, where the drift starts, where the self-correction "
    "starts and where the answer is back on topic."
)

CUE_PHRASES = ("Wait", "Actually", "I made a mistake", "Let me try again", "I should clarify", "That's not right",
               "I apologize", "No, I'm just kidding", "To actually answer your question")

ANNOTATOR_INSTRUCTIONS = """\
The response below was written for the prompt below. It goes off topic and later corrects itself.

Find three 0-based character offsets into the response text (the text between the <response> tags, without \
the surrounding newlines):
- off_topic_char_start: the first character of the off-topic text;
- correction_char_start: the first character of the self-correction, the words that signal it (cues such as \
{cues});
- on_topic_char_start: the first character of the text that answers the prompt again after the correction.
They must satisfy off_topic_char_start <= correction_char_start <= on_topic_char_start. If you cannot tell \
where any of them is, give -1 for all three.

Also copy the correction's first words exactly as correction_phrase, and add a short note.

Answer with a JSON object in a fenced block:
```json
{{"off_topic_char_start": <int>, "correction_char_start": <int>, "on_topic_char_start": <int>, \
"correction_phrase": "<text>", "notes": "<text>"}}
```

<prompt>
{prompt}
</prompt>
<response>
{response}
</response>"""

_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)
_KEYS = ("off_topic_char_start", "correction_char_start", "on_topic_char_start")


def annotator_message(prompt: str, response: str) -> str:
    """The user message of one annotation request."""
    cues = ", ".join(f'"{c}"' for c in CUE_PHRASES)
    return ANNOTATOR_INSTRUCTIONS.format(cues=cues, prompt=prompt, response=response)


def _json_object(text: str) -> dict[str, Any] | None:
    cands = [m.group(1) for m in _FENCED.finditer(text)]
    first, last = text.find("{"), text.rfind("}")
    if first != -1 and last > first:
        cands.append(text[first : last + 1])
    for c in cands:
        try:
            obj = json.loads(c)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def parse_annotation(text: str | None, response: str, source: str = "claude") -> Boundaries:
    """The boundaries in an annotator reply (module docstring), re-anchored and validated against ``response``."""
    obj = _json_object(text or "")
    if obj is None:
        return unclear(source, "no JSON object in the annotator's reply")
    try:
        off, corr, on = (int(obj[k]) for k in _KEYS)
    except (KeyError, TypeError, ValueError):
        return unclear(source, f"the reply lacks integer {', '.join(_KEYS)}")
    phrase = str(obj.get("correction_phrase") or "")
    notes = str(obj.get("notes") or "")
    if off == corr == on == -1:
        return unclear(source, notes or "the annotator could not tell")
    if phrase.strip() and not response.startswith(phrase.strip(), max(corr, 0)):
        hits = [m.start() for m in re.finditer(re.escape(phrase.strip()), response)]
        if hits:
            new = min(hits, key=lambda h: abs(h - corr))
            notes = f"{notes} [correction offset re-anchored {corr} -> {new} on correction_phrase]".strip()
            corr = new
    b = Boundaries(off, corr, on, source=source, phrase=phrase, notes=notes)
    if not b.is_valid(response):
        return unclear(source, f"invalid offsets ({off}, {corr}, {on}) for a response of {len(response)} chars")
    return b


class ClaudeAnnotator:
    """Annotate recoveries with Claude (module docstring).

    Args:
        model: Anthropic model id (default Claude Sonnet 4.5, as the paper's annotator).
        max_tokens: reply cap (1024, as the paper).
        concurrency: requests in flight.
        **client: passed to :class:`~esr_analysis.judge.claude.ClaudeJudge` (``base_url``, ``timeout``,
            ``max_retries``, ``temperature``, ...).
    """

    def __init__(self, model: str = DEFAULT_ANNOTATOR_MODEL, *, max_tokens: int = 1024, concurrency: int = 4,
                 **client: Any) -> None:
        from esr_analysis.judge.claude import ClaudeJudge

        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.client = ClaudeJudge(model, max_tokens=max_tokens, **client)
        self.model = self.client.model
        self.source = f"claude:{self.model}"
        self.concurrency = int(concurrency)

    async def annotate_one(self, prompt: str, response: str) -> Boundaries:
        """Boundaries of one (prompt, response)."""
        judge = self.client
        try:
            result = await judge._complete(judge._client_for_loop(), ANNOTATOR_SYSTEM,
                                           annotator_message(prompt, response))
        except judge._sdk_errors().APIError as exc:
            error = judge._classify(exc).error  # raises JudgeFatalError on 401/403/404
            return unclear(self.source, f"API error: {error}")
        return parse_annotation(result.text, response, self.source)

    async def _annotate_all(self, items: Sequence[tuple[str, str]]) -> list[Boundaries]:
        sem = asyncio.Semaphore(self.concurrency)

        async def one(prompt: str, response: str) -> Boundaries:
            async with sem:
                return await self.annotate_one(prompt, response)

        try:
            return list(await asyncio.gather(*(one(p, r) for p, r in items)))
        finally:
            await self.client.aclose()

    def annotate(self, items: Sequence[tuple[str, str]]) -> list[Boundaries]:
        """Boundaries of each ``(prompt, response)``, in order (synchronous; works inside Jupyter)."""
        from esr_analysis.judge.runner import run_sync

        return run_sync(self._annotate_all(list(items)))
