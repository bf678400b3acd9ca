"""Explicit restart language: the phrase set used by the offline judge and by restart gating.

A **restart phrase** is an explicit signal that the writer abandons what came before and starts again.
The set (:data:`RESTART_PATTERNS`, case-insensitive regular expressions) covers

* interjections at the start of a sentence: "Wait," / "Wait!" / "No, wait" / "Hold on," / "Oops";
* admissions: "I made a mistake", "my mistake", "I misspoke", "I got that wrong", "I apologize",
  "sorry, I ...", "that's not right/correct/what you asked", "that was wrong";
* restarts: "let me try (that) again", "let's start over", "let me start over/again", "let me rephrase",
  "let me correct (that|myself)", "let me revise my answer", "I'd like to revise/correct my answer",
  "correction:", "scratch that", "never mind", "disregard/ignore (that|the above|what I said)";
* getting back on track: "I got/went off track/topic", "I got sidetracked", "back to your question",
  "to actually answer your question", "let me refocus", "I should clarify";
* "just kidding".

Ordinary uses of the same words do not match: "wait" must be an interjection (sentence-initial and
followed by punctuation), and "actually" alone is not a restart.

An **attempt boundary** produced by a phrase is placed at the start of the sentence that contains it
(after the previous ``.``, ``!``, ``?``, ``…`` or newline), so "Apple! No, wait! Orange" splits into
"Apple!" and "No, wait! Orange". Restart language at the very start of a text creates no boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENT = r"(?:^|(?<=[.!?…\n\"“”)\]])\s*)"  # strictly at a sentence start

RESTART_PATTERNS: tuple[str, ...] = (
    # interjections, sentence-initial and followed by punctuation
    _SENT + r"(?:(?:oh|no|hmm|um|uh|ah),?\s+)*wait\s*[,.!…—–-]",
    _SENT + r"(?:oh,?\s+)?hold on\s*[,.!…—–-]",
    _SENT + r"(?:oh\s+)?oops\b",
    _SENT + r"no,\s*no\b",
    # admissions
    r"\bi(?:'ve| have)? made (?:a|an|some) (?:mistake|error)s?\b",
    r"\bmy (?:mistake|bad|apologies)\b",
    r"\bi misspoke\b",
    r"\bi got (?:that|this|it) (?:wrong|mixed up)\b",
    r"\bi (?:was|am) wrong\b",
    r"\bi apologi[sz]e\b",
    r"\bsorry,?\s+(?:i|that|this|let me|my)\b",
    r"\b(?:that|this)(?:'s| is| was)(?: not|n't) (?:quite )?(?:right|correct|accurate|relevant|"
    r"what you asked|the answer|related)\b",
    r"\b(?:that|this)(?:'s| is| was) (?:wrong|incorrect|off[- ]topic|irrelevant)\b",
    # restarts
    r"\blet(?: me|'s| us) (?:try|start|do|begin)(?: (?:that|this|it))?(?: all)? (?:again|over|afresh)\b",
    r"\bi(?:'ll| will) try (?:that |this |it )?again\b",
    r"\blet me (?:rephrase|restart|reconsider|redo|re-do|refocus)\b",
    r"\blet me correct (?:that|this|myself|my)\b",
    r"\blet me (?:revise|fix|rewrite) (?:that|this|my)\b",
    r"\bi(?:'d| would) like to (?:revise|correct|change|fix) my (?:answer|response)\b",
    r"\b(?:correction|to correct myself)\s*:",
    r"\bscratch that\b",
    r"\bnever ?mind\b",
    r"\b(?:disregard|ignore) (?:that|this|the above|what i (?:just )?(?:said|wrote)|my (?:previous|last))\b",
    # back on track
    r"\bi (?:got|went|drifted|veered|strayed|wandered) (?:off[- ]?(?:track|topic|course)|sidetracked)\b",
    r"\bi(?:'m| am)? (?:getting|going|drifting) (?:off[- ]?(?:track|topic)|sidetracked)\b",
    r"\bi got distracted\b",
    r"\b(?:getting |going |let me get |let's get |let me go |to get )?back to (?:your|the|you?r original) "
    r"(?:question|topic|prompt|request)\b",
    r"\bto (?:actually|properly|really) answer (?:your|the) question\b",
    r"\bi should clarify\b",
    r"\bjust kidding\b",
)

_COMPILED = tuple(re.compile(p, re.IGNORECASE | re.MULTILINE) for p in RESTART_PATTERNS)
_SENTENCE_END = re.compile(r"[.!?…\n]")


@dataclass(frozen=True)
class RestartMatch:
    """One occurrence of restart language: ``[start, end)`` character offsets and the matched text."""

    start: int
    end: int
    text: str


def find_restarts(text: str) -> list[RestartMatch]:
    """Every restart phrase occurrence in ``text``, sorted by start offset (overlaps merged)."""
    spans: list[tuple[int, int]] = []
    for pat in _COMPILED:
        for m in pat.finditer(text):
            start = m.start()
            while start < m.end() and text[start].isspace():
                start += 1
            if m.end() > start:
                spans.append((start, m.end()))
    spans.sort()
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [RestartMatch(s, e, text[s:e]) for s, e in merged]


def has_restart(text: str) -> bool:
    """True when ``text`` contains restart language anywhere."""
    return any(p.search(text) for p in _COMPILED)


def sentence_start(text: str, pos: int) -> int:
    """Offset of the start of the sentence containing ``pos`` (just after the previous sentence end,
    skipping whitespace; quotes and closing brackets stay with the previous sentence)."""
    i = pos
    while i > 0 and not _SENTENCE_END.match(text[i - 1]):
        i -= 1
    while i < pos and (text[i].isspace() or text[i] in "\"“”')]"):
        i += 1
    return i


def boundary_offsets(text: str) -> list[int]:
    """Attempt boundaries implied by restart language: the sentence start of each restart phrase,
    excluding offsets with no non-space text before them (restart language at the very start)."""
    out: list[int] = []
    for m in find_restarts(text):
        b = sentence_start(text, m.start)
        if text[:b].strip() and (not out or b > out[-1]):
            out.append(b)
    return out


def strip_restart_language(text: str) -> str:
    """``text`` with the restart phrases (:func:`find_restarts` spans) removed and whitespace collapsed;
    used to score an attempt's content rather than its apology."""
    parts, pos = [], 0
    for m in find_restarts(text):
        parts.append(text[pos : m.start])
        pos = m.end
    parts.append(text[pos:])
    return re.sub(r"\s+", " ", " ".join(parts)).strip()
