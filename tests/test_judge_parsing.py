"""Parsing of judge text into attempts, the Grade model, the rubric and key redaction."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from esr_analysis.judge.parsing import parse_judge_output
from esr_analysis.judge.rubric import RUBRIC_VERSION, SYSTEM_PROMPT, build_user_message, rubric_hash
from esr_analysis.judge.types import Attempt, Grade, redact_secrets

VERDICT = {
    "attempts": [{"attempt_text": "Apple!", "score": 100}, {"attempt_text": "No, wait! Orange", "score": 0}]
}


def _scores(text: str) -> list[float | None]:
    res = parse_judge_output(text)
    assert res.error is None, res.error
    return [a.score for a in res.attempts]


def test_json_in_tags_with_text_around():
    text = f"Feedback: the second attempt is worse.\n<json>{json.dumps(VERDICT)}</json>\nThanks!"
    res = parse_judge_output(text)
    assert res.ok
    assert [(a.text, a.score) for a in res.attempts] == [("Apple!", 100.0), ("No, wait! Orange", 0.0)]


def test_bare_json_without_tags_uses_braces():
    assert _scores("Here you go: " + json.dumps(VERDICT) + " done") == [100.0, 0.0]
    # stray braces in the feedback: first '{'..last '}' is invalid, the embedded verdict is still found
    assert _scores("I'd say {roughly} fine. " + json.dumps(VERDICT) + " {end}") == [100.0, 0.0]
    # but an embedded object that fails validation is not accepted
    assert parse_judge_output('x {y} {"attempts": [{"attempt_text": "a", "score": 500}]}').error is not None


def test_code_fence_and_unclosed_tag():
    assert _scores("```json\n" + json.dumps(VERDICT) + "\n```") == [100.0, 0.0]
    assert _scores("feedback <json>" + json.dumps(VERDICT)) == [100.0, 0.0]


def test_first_valid_json_block_wins():
    text = "I will answer in <json></json> tags as asked. <json>" + json.dumps(VERDICT) + "</json>"
    assert _scores(text) == [100.0, 0.0]
    two = '<json>{"attempts": [{"attempt_text": "a", "score": 10}]}</json> <json>{"attempts": []}</json>'
    assert _scores(two) == [10.0]


def test_text_key_numeric_string_and_null_score():
    text = '<json>{"attempts": [{"text": "a", "score": "42.5"}, {"attempt_text": "b", "score": null}]}</json>'
    res = parse_judge_output(text)
    assert res.ok
    assert [(a.text, a.score) for a in res.attempts] == [("a", 42.5), ("b", None)]


def test_empty_attempt_list_is_valid_not_an_error():
    res = parse_judge_output('<json>{"attempts": []}</json>')
    assert res.ok and res.attempts == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty judge output"),
        ("   ", "empty judge output"),
        ("The response is good, 90/100.", "no <json> block"),
        ("<json>{'attempts': []}</json>", "invalid JSON"),
        ('<json>{"attempts": [{"attempt_text": "a", "score": 150}]}</json>', "outside 0-100"),
        ('<json>{"attempts": [{"attempt_text": "a", "score": -1}]}</json>', "outside 0-100"),
        ('<json>{"attempts": [{"attempt_text": "a", "score": true}]}</json>', "boolean"),
        ('<json>{"attempts": [{"attempt_text": "a", "score": "high"}]}</json>', "not a number"),
        ('<json>{"attempts": [{"attempt_text": "a", "score": NaN}]}</json>', "outside 0-100"),
        ('<json>{"attempts": [{"attempt_text": "a"}]}</json>', "'score' missing"),
        ('<json>{"attempts": [{"score": 5}]}</json>', "'attempt_text' missing"),
        ('<json>{"attempts": ["a"]}</json>', "expected an object"),
        ('<json>{"attempts": {"a": 1}}</json>', "expected a list"),
        ('<json>{"score": 50}</json>', "no 'attempts' key"),
        ("<json>[1, 2]</json>", "expected an object"),
    ],
)
def test_unparseable_becomes_recorded_error(text: str, fragment: str):
    res = parse_judge_output(text)
    assert res.error is not None and fragment in res.error
    assert res.attempts == []


def test_none_input_does_not_crash():
    assert parse_judge_output(None).error == "empty judge output"


def test_grade_model_rules():
    g = Grade(
        attempts=[Attempt(text="a", score=10), Attempt(text="b", score=None)], judge_id="j", rubric_hash="h"
    )
    assert g.ok and g.scores == [10.0]
    assert g.to_authors_score() == {
        "raw_response": None,
        "attempts": [{"attempt_text": "a", "score": 10.0}, {"attempt_text": "b", "score": None}],
    }
    bad = Grade(error="boom", raw_response="x", judge_id="j", rubric_hash="h")
    assert bad.to_authors_score() == {"raw_response": "x", "error": "boom"}
    with pytest.raises(ValidationError):
        Grade(attempts=[Attempt(text="a", score=1)], error="boom", judge_id="j", rubric_hash="h")
    with pytest.raises(ValidationError):
        Attempt(text="a", score=101)
    with pytest.raises(ValidationError):
        Attempt(text="a", score=float("nan"))


def test_redaction_of_env_keys_and_key_shapes(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "plainsecretvalue123")
    # fake key shapes, assembled at run time so no key-like literal sits in the source
    ant, proj = "sk-ant-" + "api03-abcdefghijklmnop", "sk-proj-" + "ABCDEFGHIJKLMNOPQRSTUV"
    text = f"key plainsecretvalue123 and {ant} and {proj}"
    out = redact_secrets(text)
    assert "plainsecretvalue123" not in out and "sk-ant-api03" not in out and "sk-proj-ABCDEF" not in out
    assert out.count("[REDACTED]") == 3
    g = Grade(
        error="failed with key plainsecretvalue123",
        raw_response="sk-ant-" + "xyzxyzxyzxyz1",
        judge_id="j",
        rubric_hash="h",
    )
    assert "plainsecretvalue123" not in g.model_dump_json() and "sk-ant-xyz" not in g.model_dump_json()
    g = Grade(attempts=[Attempt(text="echo plainsecretvalue123", score=3)], judge_id="j", rubric_hash="h")
    assert g.attempts == [Attempt(text="echo [REDACTED]", score=3)]


def test_rubric_content_and_hash():
    msg = build_user_message("What is 2+2?", "Four. Wait, five.", "references to fish")
    assert "<prompt>\nWhat is 2+2?\n</prompt>" in msg
    assert "<response>\nFour. Wait, five.\n</response>" in msg
    assert "references to fish" in msg
    for needle in ("<json>", "restart language", "0 to 100", "Never report an empty attempt"):
        assert needle in msg
    assert "resist" in SYSTEM_PROMPT
    h = rubric_hash()
    assert len(h) == 64 and h == rubric_hash()
    assert RUBRIC_VERSION.startswith("esr-rubric-v")
    # the worked example inside the rubric parses with our own parser (the example must be valid JSON)
    example = msg[msg.index("<json>{") : msg.index("}]}</json>") + len("}]}</json>")]
    assert [a.score for a in parse_judge_output(example).attempts] == [100.0, 0.0]


_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
_attempts = st.lists(
    st.tuples(_texts, st.one_of(st.none(), st.integers(0, 100), st.floats(0, 100, allow_nan=False))),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(text=_texts)
def test_parse_never_raises(text: str):
    res = parse_judge_output(text)
    assert (res.error is None) or (res.attempts == [])


@settings(max_examples=150, deadline=None)
@given(before=_texts, after=_texts, attempts=_attempts, tagged=st.booleans())
def test_valid_verdict_survives_surrounding_text(before: str, after: str, attempts, tagged: bool):
    assume(
        "<json>" not in (before + after).lower() and "{" not in before + after and "}" not in before + after
    )
    body = json.dumps({"attempts": [{"attempt_text": t, "score": s} for t, s in attempts]})
    text = f"{before}<json>{body}</json>{after}" if tagged else f"{before}{body}{after}"
    res = parse_judge_output(text)
    assert res.ok, res.error
    assert [(a.text, a.score) for a in res.attempts] == [
        (t, None if s is None else float(s)) for t, s in attempts
    ]
