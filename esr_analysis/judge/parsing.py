"""Tolerant parsing of a judge's text into attempts.

Where the JSON is looked for, in order:

1. each ``<json> ... </json>`` block, first to last (an unclosed ``<json>`` runs to the end of the text);
   the first block that parses and validates wins;
2. otherwise the span from the first ``{`` to the last ``}`` of the whole text (so surrounding prose and
   code fences are ignored);
3. otherwise each JSON object that starts at a ``{`` of the text (decoded with ``raw_decode``), first to
   last (so stray braces in the feedback do not hide a valid verdict after them).

Schema: a JSON object with an ``attempts`` list; each attempt is an object with ``attempt_text`` (or
``text``) as a string and ``score`` as a number in [0, 100], a numeric string, or null. Booleans, NaN,
out-of-range numbers and any other shape are errors: an unparseable answer becomes a recorded error
message (:class:`ParseResult.error`), never an exception and never a silent zero.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from esr_analysis.judge.types import Attempt

_JSON_BLOCK = re.compile(r"<json>(.*?)(?:</json>|\Z)", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class ParseResult:
    """Attempts parsed from a judge's text, or ``error`` (then ``attempts`` is empty)."""

    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _candidates(text: str) -> list[tuple[str, str]]:
    """(origin, json text) candidates of steps 1-2, in the order they are tried."""
    out = [("<json> block", m.group(1).strip()) for m in _JSON_BLOCK.finditer(text)]
    first, last = text.find("{"), text.rfind("}")
    if first != -1 and last > first:
        out.append(("braces", text[first : last + 1]))
    return out


def _embedded_objects(text: str) -> list[Any]:
    """Step 3: every JSON value that ``raw_decode`` can read starting at a ``{`` of ``text``."""
    decoder = json.JSONDecoder()
    out = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, _ = decoder.raw_decode(text, pos)
            out.append(obj)
        except json.JSONDecodeError:
            pass
        pos = text.find("{", pos + 1)
    return out


def _score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{where}: score must be a number, got a boolean")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{where}: score {value!r} is not a number") from None
    if not isinstance(value, int | float):
        raise ValueError(f"{where}: score must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise ValueError(f"{where}: score {value} is outside 0-100")
    return value


def validate_verdict(obj: Any) -> list[Attempt]:
    """Attempts from a decoded verdict object; raises ``ValueError`` saying what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError(f"verdict is a JSON {type(obj).__name__}, expected an object")
    if "attempts" not in obj:
        raise ValueError("verdict has no 'attempts' key")
    raw = obj["attempts"]
    if not isinstance(raw, list):
        raise ValueError(f"'attempts' is a {type(raw).__name__}, expected a list")
    attempts = []
    for i, item in enumerate(raw, start=1):
        where = f"attempt {i}"
        if not isinstance(item, dict):
            raise ValueError(f"{where} is a {type(item).__name__}, expected an object")
        text = item.get("attempt_text", item.get("text"))
        if not isinstance(text, str):
            raise ValueError(f"{where}: 'attempt_text' missing or not a string")
        if "score" not in item:
            raise ValueError(f"{where}: 'score' missing")
        attempts.append(Attempt(text=text, score=_score(item["score"], where)))
    return attempts


def parse_judge_output(text: str | None) -> ParseResult:
    """Parse a judge's raw text (see the module docstring). Never raises."""
    if text is None or not text.strip():
        return ParseResult(error="empty judge output")
    problems: list[str] = []
    for origin, candidate in _candidates(text):
        try:
            obj = json.loads(candidate)
        except json.JSONDecodeError as exc:
            problems.append(f"{origin}: invalid JSON ({exc.msg} at char {exc.pos})")
            continue
        try:
            return ParseResult(attempts=validate_verdict(obj))
        except ValueError as exc:
            problems.append(f"{origin}: {exc}")
    if problems:
        for obj in _embedded_objects(text):
            if isinstance(obj, dict) and "attempts" in obj:
                try:
                    return ParseResult(attempts=validate_verdict(obj))
                except ValueError:
                    continue
    if not problems:
        return ParseResult(error="unparseable judge output: no <json> block and no JSON object found")
    return ParseResult(error="unparseable judge output: " + "; ".join(problems))
