"""finetune.claude_data against the local fake Anthropic server (tests/judge_server.py)."""

from __future__ import annotations

import json

import pytest
from judge_server import JudgeServer

from esr_analysis.finetune.claude_data import claude_self_correction, generator_request, parse_generator_reply
from esr_analysis.finetune.data import IGNORE_INDEX, tokenize_example


def _responder(item: str, body: dict) -> str:
    if "broken" in item:
        return "Here you go: no json at all."
    parts = {"off_topic": f"Black holes bend light. They are dense. ({item})",
             "acknowledgement": "Hold on, that is not what you asked.", "answer": f"To {item.lower()} do this."}
    return f"<json>{json.dumps(parts)}</json>"


def test_generator_builds_masked_examples_and_counts_bad_replies():
    from esr_analysis.models.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    prompts = ["How do you fold a map?", "How do you broken thing?", "Explain how to tie a knot."]
    with JudgeServer(responder=_responder) as server:
        examples, failures = claude_self_correction(tok, prompts, ["black holes"] * 3, base_url=server.base_url,
                                                    api_key="test-" + "k" * 8)
        bodies = [r.body for r in server.records]
    assert failures == 1 and len(examples) == 2
    assert all(b["temperature"] == 0.8 and b["model"].startswith("claude") for b in bodies)
    assert "black holes" in bodies[0]["messages"][0]["content"]
    ex = examples[0]
    assert ex.kind == "self_correction" and ex.meta["subject"] == "black holes"
    assert not ex.segments[0].trained and ex.segments[0].text.endswith("(How do you fold a map?) ")
    assert ex.segments[1].trained and ex.segments[1].text.startswith("Hold on, that is not what you asked.")
    t = tokenize_example(tok, ex)
    n_context = len(tok(ex.segments[0].text, add_special_tokens=False)["input_ids"])
    assert t.labels[:n_context] == [IGNORE_INDEX] * n_context and IGNORE_INDEX not in t.labels[n_context:]


def test_request_and_reply_parsing_and_errors_before_any_request(monkeypatch):
    assert "<prompt>\nHow?\n</prompt>" in generator_request("How?", "tides")
    assert parse_generator_reply('<json>{"off_topic": "a", "acknowledgement": "b", "answer": ""}</json>') is None
    assert parse_generator_reply("<json>{not json}</json>") is None
    assert parse_generator_reply('<json>{"off_topic": "a", "acknowledgement": "b", "answer": "c"}</json>') == {
        "off_topic": "a", "acknowledgement": "b", "answer": "c"}
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        claude_self_correction(None, ["q?"], ["x"])
    with pytest.raises(ValueError, match="one subject per prompt"):
        claude_self_correction(None, ["q?"], [], api_key="k")
