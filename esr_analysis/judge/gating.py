"""Restart gating for LLM judges: keep an attempt boundary only where the response uses restart language.

Small judges invent attempts (they split at topic changes or paragraph breaks). Gating enforces the
rubric's segmentation rule after the fact, without another API call:

* Each judged attempt is located in the response (whitespace-insensitive search, in order).
* The boundary between attempts ``i-1`` and ``i`` is **kept** iff the response contains a restart phrase
  (:mod:`esr_analysis.judge.restart`) inside the **boundary window**: from ``window`` characters before
  the start of attempt ``i`` to ``window`` characters after it, clipped to attempts ``i-1`` and ``i``.
  When an attempt cannot be located in the response, the window is the tail of attempt ``i-1``'s text and
  the head of attempt ``i``'s text, and the boundary is kept iff one of the response's own restart phrases
  occurs there (so restart language the judge made up does not count), excluding phrases at the very
  start of the response (nothing before their sentence), which are never a boundary.
* Attempts separated by an unsupported boundary are **merged**: the merged text is the response span they
  cover (or their texts joined by a space), and the merged score is the mean of their non-null scores
  weighted by text length (``None`` when none is scored).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from esr_analysis.judge.restart import find_restarts, sentence_start
from esr_analysis.judge.types import Attempt, Grade

GATING_VERSION = "restart-gate-v2"
DEFAULT_WINDOW = 150


def _normalize(text: str) -> tuple[str, list[int]]:
    """Whitespace-collapsed lowercase text and, for each of its characters, the offset in ``text``."""
    out, index = [], []
    prev_space = True
    for i, ch in enumerate(text):
        if ch.isspace():
            if not prev_space:
                out.append(" ")
                index.append(i)
            prev_space = True
        else:
            out.append(ch.lower())
            index.append(i)
            prev_space = False
    return "".join(out), index


def locate_attempts(response: str, attempts: Sequence[Attempt]) -> list[tuple[int, int] | None]:
    """``(start, end)`` of each attempt's text in ``response``, searched in order (``None``: not found).

    The search ignores case and whitespace differences; a text that is not found whole is looked up by
    its first 40 characters (the judge may have trimmed the end), then its end is the next attempt's
    start or the end of the response."""
    norm, index = _normalize(response)
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    for attempt in attempts:
        needle, _ = _normalize(attempt.text)
        needle = needle.strip()
        span = None
        if needle:
            pos = norm.find(needle, cursor)
            if pos >= 0:
                span = (index[pos], index[pos + len(needle) - 1] + 1)
                cursor = pos + len(needle)
            else:
                head = needle[:40]
                pos = norm.find(head, cursor)
                if pos >= 0:
                    span = (index[pos], -1)  # end fixed below
                    cursor = pos + len(head)
        spans.append(span)
    for i, span in enumerate(spans):
        if span is not None and span[1] == -1:
            nxt = next((s[0] for s in spans[i + 1 :] if s is not None), len(response))
            spans[i] = (span[0], max(nxt, span[0]))
    return spans


def _boundary_supported(
    response: str,
    prev: Attempt,
    cur: Attempt,
    prev_span: tuple[int, int] | None,
    cur_span: tuple[int, int] | None,
    window: int,
) -> bool:
    matches = find_restarts(response)
    if prev_span is not None and cur_span is not None:
        lo = max(prev_span[0], cur_span[0] - window)
        hi = min(cur_span[1], cur_span[0] + window)
        # the phrase must lie after the start of the previous attempt's content (restart language at the
        # very start of the response is not a boundary)
        return any(m.start > prev_span[0] and m.start < hi and m.end > lo for m in matches)
    zone = (prev.text[-window:] + " " + cur.text[:window]).lower()
    zone = re.sub(r"\s+", " ", zone)
    # restart language at the very start of the response (nothing before its sentence) is never a boundary
    usable = [m for m in matches if response[: sentence_start(response, m.start)].strip()]
    return any(re.sub(r"\s+", " ", m.text.lower()) in zone for m in usable)


def _merge(response: str, group: list[tuple[Attempt, tuple[int, int] | None]]) -> Attempt:
    if len(group) == 1:
        return group[0][0]
    spans = [s for _, s in group]
    if all(s is not None for s in spans):
        text = response[spans[0][0] : spans[-1][1]]  # type: ignore[index]
    else:
        text = " ".join(a.text.strip() for a, _ in group)
    scored = [(a.score, max(len(a.text), 1)) for a, _ in group if a.score is not None]
    score = sum(s * w for s, w in scored) / sum(w for _, w in scored) if scored else None
    return Attempt(text=text, score=score)


def gate_attempts(
    response: str, attempts: Sequence[Attempt], *, window: int = DEFAULT_WINDOW
) -> list[Attempt]:
    """The attempts after restart gating (see the module docstring); unchanged when there are < 2."""
    if len(attempts) < 2:
        return list(attempts)
    spans = locate_attempts(response, attempts)
    groups: list[list[tuple[Attempt, tuple[int, int] | None]]] = [[(attempts[0], spans[0])]]
    for i in range(1, len(attempts)):
        prev_a, prev_s = groups[-1][-1]
        if _boundary_supported(response, prev_a, attempts[i], prev_s, spans[i], window):
            groups.append([(attempts[i], spans[i])])
        else:
            groups[-1].append((attempts[i], spans[i]))
    return [_merge(response, g) for g in groups]


def gate_grade(
    grade: Grade, response: str, *, window: int = DEFAULT_WINDOW, judge_id: str | None = None
) -> Grade:
    """A copy of ``grade`` with gated attempts (and ``judge_id`` replaced when given); errors pass through."""
    update: dict[str, object] = {}
    if judge_id is not None:
        update["judge_id"] = judge_id
    if grade.error is None:
        update["attempts"] = gate_attempts(response, grade.attempts, window=window)
    return grade.model_copy(update=update)
