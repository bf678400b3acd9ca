"""The Claude boundary annotator (:mod:`esr_analysis.mechanisms.annotator`) against the local fake Anthropic
server (tests/judge_server.py): request shape, parsing, re-anchoring, validation, API errors."""

from __future__ import annotations

import json

import pytest
from judge_server import JudgeServer

from esr_analysis.judge.types import JudgeConfigError, JudgeFatalError
from esr_analysis.mechanisms.annotator import (
    ANNOTATOR_SYSTEM,
    DEFAULT_ANNOTATOR_MODEL,
    ClaudeAnnotator,
    parse_annotation,
)

KEY = "sk-ant-test-0123456789abcdefXYZ"
RESPONSE = "Kneeling is a pose. Wait, I made a mistake! Probability is a ratio."


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


def _fenced(off: int, corr: int, on: int, phrase: str = "Wait, I made a mistake!") -> str:
    obj = {"off_topic_char_start": off, "correction_char_start": corr, "on_topic_char_start": on,
           "correction_phrase": phrase, "notes": "drift to poses"}
    return f"Here is my annotation.\n```json\n{json.dumps(obj)}\n```"


REPLIES = {
    "exact": _fenced(0, 20, 44),
    "miscounted": _fenced(0, 17, 44),  # the phrase is at 20: re-anchored
    "unordered": _fenced(30, 20, 44),
    "outside": _fenced(0, 20, 400),
    "unclear": _fenced(-1, -1, -1),
    "prose": "I cannot find a correction here.",
}


def _responder(item: str, body: dict) -> str:
    return REPLIES[item]


def test_annotations_through_the_api_shape_and_validation():
    with JudgeServer(responder=_responder) as srv:
        ann = ClaudeAnnotator(base_url=srv.base_url, max_retries=0)
        got = ann.annotate([(k, RESPONSE) for k in REPLIES])
        records = list(srv.records)
    by = dict(zip(REPLIES, got, strict=True))
    assert (by["exact"].off_topic, by["exact"].correction, by["exact"].on_topic) == (0, 20, 44)
    assert RESPONSE[by["exact"].correction:].startswith("Wait") and RESPONSE[44:].startswith("Probability")
    assert by["exact"].source == f"claude:{DEFAULT_ANNOTATOR_MODEL}" and by["exact"].is_valid(RESPONSE)
    assert by["miscounted"].correction == 20 and "re-anchored 17 -> 20" in by["miscounted"].notes
    for k in ("unordered", "outside", "unclear", "prose"):
        assert by[k].unclear, k
    assert "invalid offsets" in by["unordered"].notes and "no JSON" in by["prose"].notes
    assert len(records) == len(REPLIES)
    body = records[0].body
    assert body["model"] == DEFAULT_ANNOTATOR_MODEL and body["max_tokens"] == 1024
    assert body["system"] == ANNOTATOR_SYSTEM
    user = body["messages"][0]["content"]
    assert f"<response>\n{RESPONSE}\n</response>" in user and '"I made a mistake"' in user
    assert KEY in records[0].auth


def test_api_errors_give_unclear_and_fatal_errors_stop():
    with JudgeServer(responder=_responder, faults=lambda item, n: "500") as srv:
        got = ClaudeAnnotator(base_url=srv.base_url, max_retries=1).annotate([("exact", RESPONSE)])
    assert got[0].unclear and "API error" in got[0].notes
    with JudgeServer(responder=_responder, status_override=401) as srv, pytest.raises(JudgeFatalError):
        ClaudeAnnotator(base_url=srv.base_url, max_retries=0).annotate([("exact", RESPONSE)])


def test_missing_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(JudgeConfigError):
        ClaudeAnnotator()


def test_parse_annotation_takes_bare_json_too():
    bare = json.dumps({"off_topic_char_start": 0, "correction_char_start": 20, "on_topic_char_start": 44})
    b = parse_annotation(f"notes {bare} end", RESPONSE)
    assert (b.off_topic, b.correction, b.on_topic) == (0, 20, 44)
    assert parse_annotation('{"off_topic_char_start": "x"}', RESPONSE).unclear
