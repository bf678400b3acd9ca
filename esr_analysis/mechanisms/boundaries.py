"""Where a recovery turns: three character offsets per episode, the offline annotator, and chars -> tokens.

Definitions
-----------
* **Boundaries** of a recovery are three 0-based character offsets into the response:
  ``off_topic <= correction <= on_topic``. ``[off_topic, correction)`` is the off-topic text,
  ``[correction, on_topic)`` the correction (the restart language: "Wait, I made a mistake!"), and
  ``[on_topic, end)`` the recovered answer. All three are ``-1`` when the annotator cannot tell (*unclear*).
  Boundaries are **valid** when they are ordered, non-negative and inside the response
  (``on_topic < len(response)``), as the paper's annotator check.
* The **offline annotator** (:func:`offline_boundaries`) builds on the judge's attempt split: the judge's
  attempts are located in the response (:func:`esr_analysis.judge.gating.locate_attempts`; without stored
  attempts the offline judge's own split, :func:`esr_analysis.judge.offline.segment_attempts`). The last
  attempt is the recovered answer and the attempt before it the off-topic one. The **correction** starts at the
  sentence start of the restart phrase (:mod:`esr_analysis.judge.restart`; strong phrases first, weak markers
  otherwise) nearest the start of the last attempt, within :data:`SEARCH_WINDOW` characters after it and
  after the first attempt's start, extended back over directly preceding restart sentences ("Wait, that's not
  right. Let me try again." is one correction); the **on-topic** text starts at the next sentence that is not
  itself restart language; **off-topic** starts where the last attempt that starts before the correction
  starts. No phrase, or nothing after it: unclear.
  The off-topic start is the attempt's start, not the point where the text drifts (the judge does not split
  there), so the off-topic region may include an on-topic opening.
* **Characters to tokens.** :func:`token_char_spans` gives each response token its ``[start, end)`` span in the
  response text by decoding growing prefixes of the token ids (exact for byte-level tokenizers: a token that
  holds only part of a multi-byte character gets an empty span and the token completing it the character).
  :func:`char_to_token` is the token whose span holds a character; :func:`token_boundaries` adds the
  response's first position in the replayed sequence (the prompt with its chat template comes first). A stored
  text that differs from the decoded ids only by leading/trailing whitespace (a trimmed template newline) is
  aligned by that shift; any other difference raises ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

SEARCH_WINDOW = 150
"""Characters around the last attempt's start searched for the correction phrase."""

_SENTENCE_END = re.compile(r"[.!?…\n:;]")


@dataclass(frozen=True)
class Boundaries:
    """Three character offsets into a response (module docstring); ``source`` names the annotator."""

    off_topic: int
    correction: int
    on_topic: int
    source: str = ""
    phrase: str = ""
    notes: str = ""

    @property
    def unclear(self) -> bool:
        """All three offsets are -1."""
        return self.off_topic == self.correction == self.on_topic == -1

    def is_valid(self, response: str) -> bool:
        """Ordered, non-negative and inside ``response`` (the on-topic start is a character of it)."""
        return 0 <= self.off_topic <= self.correction <= self.on_topic < len(response)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unclear(source: str, notes: str = "") -> Boundaries:
    """The *unclear* boundaries (all -1) of annotator ``source``."""
    return Boundaries(-1, -1, -1, source=source, notes=notes)


def _next_sentence(text: str, pos: int) -> int:
    """Offset of the first non-space character after the sentence end at or after ``pos`` (``len(text)`` if
    none)."""
    m = _SENTENCE_END.search(text, pos)
    i = len(text) if m is None else m.end()
    while i < len(text) and (text[i].isspace() or text[i] in "\"“”')]*_"):
        i += 1
    return i


def _correction_match(response: str, lo: int, hi: int, anchor: int) -> tuple[Any, str] | None:
    from esr_analysis.judge.restart import find_restarts, find_weak_markers

    for kind, found in (("strong", find_restarts(response)), ("weak", find_weak_markers(response))):
        near = [m for m in found if lo < m.start < hi]
        if near:
            return min(near, key=lambda m: abs(m.start - anchor)), kind
    return None


def offline_boundaries(response: str, attempts: Sequence[str] | None = None, *, window: int = SEARCH_WINDOW
                       ) -> Boundaries:
    """Boundaries of a recovery from its attempt split and restart language (module docstring).

    ``attempts`` are the judge's attempt texts in order (e.g. ``Episode.attempts``' texts); ``None`` or fewer
    than two located attempts fall back to the offline judge's split of ``response``.
    """
    from esr_analysis.judge.gating import locate_attempts
    from esr_analysis.judge.offline import segment_attempts
    from esr_analysis.judge.restart import find_restarts, find_weak_markers, sentence_start
    from esr_analysis.judge.types import Attempt

    source = "offline"
    spans: list[tuple[int, int]] = []
    if attempts:
        located = locate_attempts(response, [Attempt(text=t) for t in attempts])
        spans = [s for s in located if s is not None]
    if len(spans) < 2:
        located = locate_attempts(response, [Attempt(text=t) for t in segment_attempts(response)])
        spans = [s for s in located if s is not None]
        source = "offline(judge split)"
    if len(spans) < 2:
        return unclear(source, "fewer than two attempts located in the response")
    first_start, last_start = spans[0][0], spans[-1][0]
    found = _correction_match(response, first_start, last_start + window, last_start)
    if found is None:
        return unclear(source, "no restart language near the last attempt")
    match, kind = found
    restarts = find_restarts(response) + find_weak_markers(response)
    starts = {sentence_start(response, m.start) for m in restarts}
    correction = sentence_start(response, match.start)
    while True:  # a chain of restart sentences ("Wait, that's not right. Let me try again.") is one correction
        j = correction - 1
        while j > 0 and response[j].isspace():
            j -= 1
        prev = sentence_start(response, j) if j > 0 else 0
        if 0 < prev < correction and prev in starts:
            correction = prev
        else:
            break
    before = [s for s, _ in spans if s < correction]
    if not before:
        return unclear(source, "no attempt before the correction")
    # a phrase may end with its sentence's end mark ("Wait, I made a mistake!"): look for the end from its last
    # character, so the sentence after it is the on-topic start
    on_topic = _next_sentence(response, max(match.start, match.end - 1))
    while on_topic < len(response) and on_topic in starts:
        nxt = next(m for m in restarts if sentence_start(response, m.start) == on_topic)
        on_topic = _next_sentence(response, max(nxt.start, nxt.end - 1))
    if on_topic >= len(response):
        return unclear(source, "nothing follows the correction")
    return Boundaries(max(before), correction, on_topic, source=source, phrase=match.text,
                      notes=f"{kind} restart phrase")


# --------------------------------------------------------------------------------------- chars -> tokens


def token_char_spans(tokenizer: Any, ids: Sequence[int], text: str | None = None, *,
                     skip_special_tokens: bool = True) -> list[tuple[int, int]]:
    """``[start, end)`` of each of ``ids`` in ``text`` (default: the decoded ids), by prefix decoding (module
    docstring). Special tokens (e.g. a final end-of-turn) get empty spans at the end."""
    ids = [int(t) for t in ids]
    full = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    ends: list[int] = []
    prev = 0
    for i in range(len(ids)):
        p = tokenizer.decode(ids[: i + 1], skip_special_tokens=skip_special_tokens)
        if not full.startswith(p):
            p = p.rstrip("\ufffd")
            k = 0
            while k < min(len(p), len(full)) and p[k] == full[k]:
                k += 1
            p = p[:k]
        prev = max(prev, len(p))
        ends.append(prev)
    spans = [(ends[i - 1] if i else 0, ends[i]) for i in range(len(ids))]
    if text is None or text == full:
        return spans
    if text.strip() != full.strip():
        raise ValueError("the stored response is not the decoding of its token ids (beyond surrounding "
                         f"whitespace): {text[:60]!r} vs {full[:60]!r}")
    shift = (len(full) - len(full.lstrip())) - (len(text) - len(text.lstrip()))
    n = len(text)
    return [(min(max(a - shift, 0), n), min(max(b - shift, 0), n)) for a, b in spans]


def char_to_token(spans: Sequence[tuple[int, int]], offset: int) -> int:
    """Index of the token whose span holds character ``offset`` (-1 for -1); ``ValueError`` when no token
    holds it."""
    if offset == -1:
        return -1
    for i, (a, b) in enumerate(spans):
        if a <= offset < b:
            return i
    raise ValueError(f"character {offset} is in no token span (text of {spans[-1][1] if spans else 0} chars)")


@dataclass(frozen=True)
class TokenBoundaries:
    """Boundaries as token indices into the replayed sequence (prompt + response); -1 when unclear.

    ``end`` is one past the last response token, ``response_start`` the first response token."""

    off_topic: int
    correction: int
    on_topic: int
    response_start: int
    end: int

    @property
    def unclear(self) -> bool:
        return self.correction == -1

    def regions(self) -> dict[str, tuple[int, int]]:
        """``{"before": [off, corr), "during": [corr, on), "after": [on, end)}`` (empty dict when unclear)."""
        if self.unclear:
            return {}
        return {"before": (self.off_topic, self.correction), "during": (self.correction, self.on_topic),
                "after": (self.on_topic, self.end)}


def token_boundaries(b: Boundaries, spans: Sequence[tuple[int, int]], response_start: int) -> TokenBoundaries:
    """Map character boundaries onto the replayed sequence: the token of each offset plus ``response_start``.

    The correction and on-topic tokens are those holding the first character of those regions; if the
    correction's first token also holds the last off-topic character it still counts as correction."""
    end = response_start + len(spans)
    if b.unclear:
        return TokenBoundaries(-1, -1, -1, response_start, end)
    toks = [char_to_token(spans, o) + response_start for o in (b.off_topic, b.correction, b.on_topic)]
    return TokenBoundaries(toks[0], toks[1], toks[2], response_start, end)
