"""Restart language (v6): strong restart phrases that start a new attempt, and weak markers that never do alone.

A **strong restart phrase** (:data:`RESTART_PATTERNS`, case-insensitive regular expressions) says that the
writer abandons what came before and starts over, and it must **begin a sentence** (after ``.``, ``!``,
``?``, ``…``, ``:``, ``;``, a newline or a closing quote/bracket, optionally after markdown ``*``/``_``/``#``;
or, since v4, with a capital letter after a space, because degenerate steered text often has no end mark
before the model starts over: "... enforcement, and review enforce Let me try that again."; the pronoun
"I" does not count as a capital), possibly after lead-in interjections ("Oh,", "Hmm,", "Sorry,", "Actually,", "Anyway,", "Okay,", "Wait,",
"Hold on,", "I apologize,", "Never mind that,", ...; a lead-in alone is only a weak marker). The
set covers

* interjections that retract: "Wait, that's not right", "Wait, no", "No, wait", "Hold on, I ...",
  "Oops";
* starting over: "let me try (that) again", "let's start over", "let me rephrase / restart / redo",
  "let me correct myself", "I'd like to revise my answer", "Correction:", "Scratch that", "Ignore what I
  said", "Just kidding";
* admissions: "I made a mistake", "I misspoke", "I got that wrong", "My mistake", "Sorry, I got off track",
  "That's not what you asked / wanted / meant", "That doesn't answer your question", "That was off-topic",
  "Wrong topic" (v5), "I drifted away from the topic", "That has nothing to do with your question" (v5:
  "I apologize for the confusion" is a weak marker, not a strong phrase: letters and instructions use it as an
  ordinary courtesy, "I apologize for any confusion, this part can be tricky");
* returning to the question: "Actually, let me answer your question", "Back to your question",
  "To actually answer your question", "Let me get back on track".

(v6) A strong phrase must be about the writer's answer, not the task the answer describes: "let me / let's
start over / try again" followed by a task object or a condition ("with the milk", "on the other side", "if
it boils over", "once the glue dries") is an instruction (a weak marker), while "... with your question"
still restarts; "has nothing to do with" needs the question, request, topic or "what you asked" as its
object ("It has nothing to do with the size of the pan" is an explanation); "Scratch that", "Ignore that",
"Disregard the above" and "That's not relevant" restart only when the sentence ends or pauses there
("Scratch that surface lightly", "Ignore that old advice", "That's not relevant for glass tops" do not).

A **weak marker** (:data:`WEAK_PATTERNS`) is the same vocabulary in its ordinary use, at a sentence start:
"Wait", "Hold on", "Actually", "Sorry", "I apologize", "Never mind", "Hmm", "Anyway", "That's wrong",
"I should clarify"; (v5) "Okay", "Oops", "Let me", "Let's", "To answer your question", "I think I", "That was
not helpful / relevant". Instructions ("Wait until it boils", "Wait, then pour"), apologies inside letters,
"Never mind the small details", list items ("2. Wait.") and elaborations contain only weak markers, so
they never split on their own. The offline judge splits at a weak marker only when the topic shifts
there (:mod:`esr_analysis.judge.offline`); restart gating of LLM judges uses strong phrases only.

An **attempt boundary** is placed at the start of the sentence that contains the phrase (its lead-in
included), so "Apple! No, wait! Orange" splits into "Apple!" and "No, wait! Orange"; a phrase that begins
a sentence without a full stop before it (after ":", ";", a quote or a bracket, or by the capital rule)
starts its attempt itself ("Ingredients: Wait. To clean it ..." splits before "Wait."). Restart language at
the very start of a text (nothing before its sentence) creates no boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RESTART_VERSION = "restart-v6"

_SENT = r"(?:^|(?<=[.!?…\n:;\"“”)\]]))[\s*_#>]*"  # a sentence start, markdown emphasis allowed
# v4: a capitalised phrase after a space also begins a sentence (degenerate text often lacks end marks);
# the pronoun "I" is not taken as a capital (it is capitalised mid-sentence too)
_CAP_START = r"(?<=\s)(?=(?-i:[A-Z]))(?!i\b)"
_LEAD = (
    r"(?:(?:oh|no|hmm+|um+|uh+|ah+|okay|ok|well|sorry|actually|anyway|anyways|whoops|oops|but|wait|hold on|"
    r"hang on|i apologi[sz]e|never ?mind(?: that)?|(?:my )?apologies)\s*[,!.…—–-]*\s+)*"
)

# v6: "start over / try again" followed by a task object or a condition is an instruction about the task
# ("Let's start over with the milk if it boils over", "Let me try again with a sharper blade"), not a restart
# of the answer; "... with your question" still restarts
_NOT_A_TASK = (
    r"(?!\s+(?:with|on|using|if|when|whenever|once|until|unless|after|before|in case|at step|from step)\b"
    r"(?!\s+(?:your|the|my) (?:actual |original )?(?:question|answer|response|topic|request|prompt)\b))"
)

_STRONG_BODIES: tuple[str, ...] = (
    r"wait\s*[,!.…—–-]+\s*(?:no\s*[,.!—–-]|that(?:'s| is| was)(?: not|n't)\b|that(?:'s| is| was) (?:wrong|incorrect)\b|"
    r"this (?:is|was)(?: not|n't)\b|i (?:made|got|went|think i)\b|i'm getting\b|sorry\b|actually\b)",
    r"no\s*[,!.]*\s*wait\b[,!.…—–-]*",
    r"(?:hold|hang) on\s*[,!.…—–-]+\s*(?:that(?:'s| is| was)|this (?:is|was)|i (?:made|got|went)|let me|let's)\b",
    r"(?:oops|whoops)\s*[,!.…—–-]*\s*(?:i |i'm |that|this|wrong|my |let me|sorry)",
    r"(?:let me|let's|let us|i'll|i will|i need to|i should) (?:try|start|begin|do)"
    r"(?: (?:that|this|it|my answer|this answer))?(?: all)? (?:again|over|afresh|from scratch)\b" + _NOT_A_TASK,
    r"let me (?:rephrase|restart|redo|re-do|refocus|reconsider)\b",
    r"let me (?:correct|fix|revise|rewrite) (?:that|this|myself|my (?:answer|response|mistake))\b",
    r"(?:let me|i(?:'ll| will)|i should(?: be)?)(?: now)? (?:actually |properly |really )?(?:answer(?:ing)?|address|"
    r"get back to|"
    r"go back to|return to|focus on) (?:your|the) (?:actual |original |real )?(?:question|request|prompt|topic)\b",
    r"(?:(?:getting|going|coming) )?back to (?:your|the) (?:actual |original )?(?:question|topic|request|prompt)\b",
    r"(?:let me |let's )?get(?:ting)? back on (?:track|topic)\b",
    r"to (?:actually|properly|really) (?:answer|address) (?:your|the) question\b",
    r"(?:sorry|i apologi[sz]e|i'm sorry)\b[^.!?\n]{0,25}?(?:off[- ]?(?:track|topic)|sidetracked|distracted|"
    r"tangent|wrong topic|irrelevant)\b",
    r"(?:that(?:'s| is| was) (?:the )?)?wrong (?:topic|question)\b",
    r"(?:that|this|it) (?:has|had) nothing to do with (?:what you (?:asked|wanted|meant|need(?:ed)?)|"
    r"(?:your|the) (?:actual |original )?(?:question|request|prompt|topic|task))\b",
    r"i (?:made an? (?:error|mistake) and |have |'ve )?(?:got|gone|went|drifted|veered|strayed|wandered)"
    r"(?: away| off)? (?:from|off) (?:the|your) (?:topic|question|subject|request)\b",
    r"i (?:got|went|drifted|veered|strayed|wandered|seem to have (?:gone|drifted|wandered|gotten)|"
    r"(?:have|'ve) (?:gone|drifted|wandered|gotten)) (?:off[- ]?(?:track|topic|course)|sidetracked|astray|distracted)\b",
    r"i(?:'m| am) (?:getting|going|drifting) (?:off[- ]?(?:track|topic)|sidetracked)\b",
    r"i (?:made a mistake|misspoke|got (?:that|this|it) wrong)(?: (?:there|above|earlier|here))?\s*[.!,:;—–-]",
    r"my (?:mistake|bad)\s*[.!,:;—–-]",
    r"that(?:'s| is| was)(?: not|n't) (?:what you (?:asked|wanted|meant|were asking|were looking|needed)"
    r"(?: for| about)?|relevant(?: to your question|(?=\s*(?:[.!,;:…—–-]|$)))|related to (?:your question|what you asked)|"
    r"the answer to your question)\b",
    r"(?:that|this|it) (?:does not|doesn't|did not|didn't) answer (?:your|the|what you)\b",
    r"that(?:'s| is| was) (?:off[- ]topic|irrelevant|a tangent|unrelated to your question)\b",
    r"(?:correction|to correct myself)\s*:",
    r"scratch that(?=\s*(?:[.!,;:…—–-]|$))",
    r"(?:please )?(?:disregard|ignore) (?:(?:that|the above)(?=\s*(?:[.!,;:…—–-]|$))|what i (?:just )?(?:said|wrote)|"
    r"my (?:previous|last|earlier) (?:answer|response|sentence|paragraph))\b",
    r"(?:i(?:'m| am) )?just kidding\b",
    r"i(?:'d| would) like to (?:revise|correct|change|fix|redo) my (?:answer|response)\b",
)

RESTART_PATTERNS: tuple[str, ...] = tuple(
    f"(?:{_SENT}|{_CAP_START})" + _LEAD + body for body in _STRONG_BODIES
)
"""Strong restart phrases: each body must begin a sentence (after an end mark, or capitalised after a
space), after optional lead-in interjections."""

WEAK_PATTERNS: tuple[str, ...] = tuple(
    _SENT + body
    for body in (
        r"(?:wait|hold on|hang on|actually|sorry|i'm sorry|i apologi[sz]e|(?:my )?apologies|never ?mind|hmm+|"
        r"anyway|anyways|oh|okay|ok|oops|whoops|let me|let's)\b",
        r"to (?:actually |properly |really )?answer (?:your|the|what you)\b",
        r"i (?:think|guess|see) i\b",
        r"that (?:was|is)(?: not|n't) (?:helpful|useful|it|relevant)\b",
        r"that(?:'s| is| was)(?: not|n't) (?:quite )?(?:right|correct)\b",
        r"that(?:'s| is| was) (?:wrong|incorrect)\b",
        r"i should clarify\b",
    )
)
"""Weak markers: restart vocabulary at a sentence start that never splits on its own."""

_STRONG = tuple(re.compile(p, re.IGNORECASE | re.MULTILINE) for p in RESTART_PATTERNS)
_WEAK = tuple(re.compile(p, re.IGNORECASE | re.MULTILINE) for p in WEAK_PATTERNS)
_SENTENCE_END = re.compile(r"[.!?…\n]")


@dataclass(frozen=True)
class RestartMatch:
    """One occurrence of restart language: ``[start, end)`` character offsets and the matched text."""

    start: int
    end: int
    text: str


def _matches(text: str, patterns: tuple[re.Pattern[str], ...]) -> list[RestartMatch]:
    spans: list[tuple[int, int]] = []
    for pat in patterns:
        for m in pat.finditer(text):
            start = m.start()
            while start < m.end() and (text[start].isspace() or text[start] in "*_#>"):
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


def find_restarts(text: str) -> list[RestartMatch]:
    """Every strong restart phrase in ``text``, sorted by start offset (overlaps merged)."""
    return _matches(text, _STRONG)


def find_weak_markers(text: str) -> list[RestartMatch]:
    """Every weak marker in ``text`` that does not overlap a strong phrase, sorted by start offset."""
    strong = find_restarts(text)
    return [
        m for m in _matches(text, _WEAK) if not any(m.start < s.end and s.start < m.end for s in strong)
    ]


def has_restart(text: str) -> bool:
    """True when ``text`` contains a strong restart phrase anywhere."""
    return any(p.search(text) for p in _STRONG)


def sentence_start(text: str, pos: int) -> int:
    """Offset of the start of the sentence containing ``pos`` (just after the previous sentence end,
    skipping whitespace; quotes and closing brackets stay with the previous sentence)."""
    i = pos
    while i > 0 and not _SENTENCE_END.match(text[i - 1]):
        i -= 1
    while i < pos and (text[i].isspace() or text[i] in "\"“”')]"):
        i += 1
    return i


def _offsets(text: str, matches: list[RestartMatch]) -> list[int]:
    out: list[int] = []
    for m in matches:
        before = text[: m.start].rstrip(" \t*_#>")
        # a phrase that begins a sentence without a full stop before it (after ":", ";", a quote or bracket,
        # or by the capital rule) starts its attempt itself
        b = sentence_start(text, m.start) if not before or before[-1] in ".!?…\n" else m.start
        if text[:b].strip() and (not out or b > out[-1]):
            out.append(b)
    return out


def boundary_offsets(text: str) -> list[int]:
    """Attempt boundaries implied by strong restart phrases: the sentence start of each phrase, excluding
    offsets with no non-space text before them (restart language at the very start)."""
    return _offsets(text, find_restarts(text))


def weak_offsets(text: str) -> list[int]:
    """Sentence starts of weak markers (not at the very start, not already a strong boundary): the places
    where the offline judge checks for a topic shift."""
    strong = set(boundary_offsets(text))
    return [b for b in _offsets(text, find_weak_markers(text)) if b not in strong]


def strip_restart_language(text: str) -> str:
    """``text`` with the strong restart phrases (:func:`find_restarts` spans) removed and whitespace
    collapsed; used to score an attempt's content rather than its apology."""
    parts, pos = [], 0
    for m in find_restarts(text):
        parts.append(text[pos : m.start])
        pos = m.end
    parts.append(text[pos:])
    return re.sub(r"\s+", " ", " ".join(parts)).strip()
