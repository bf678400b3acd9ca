"""Boundaries of a recovery (:mod:`esr_analysis.mechanisms.boundaries`): the offline annotator on the judge's
attempt split, validity, and the character -> token mapping on multi-byte text, leading whitespace and chat
templates (tiny byte-level tokenizer and the real Qwen tokenizer)."""

from __future__ import annotations

import pytest

from esr_analysis.mechanisms.boundaries import (
    Boundaries,
    char_to_token,
    offline_boundaries,
    token_boundaries,
    token_char_spans,
)
from esr_analysis.models.chat import format_chat
from esr_analysis.models.tiny import tiny_tokenizer

FIG1 = ("Probability is about chance. Sitting, kneeling and standing are body positions. Wait, I made a mistake! "
        "In reality, probability is the number of favourable outcomes over all outcomes.")


def _regions(text: str, b: Boundaries) -> tuple[str, str, str]:
    return text[b.off_topic:b.correction], text[b.correction:b.on_topic], text[b.on_topic:]


def test_offline_annotator_on_the_judges_split():
    first, second = FIG1.split(" Wait")
    b = offline_boundaries(FIG1, [first, "Wait" + second])
    assert b.is_valid(FIG1) and b.source == "offline"
    assert _regions(FIG1, b) == (first + " ", "Wait, I made a mistake! ",
                                 "In reality, probability is the number of favourable outcomes over all outcomes.")


def test_offline_annotator_chains_restart_sentences_and_falls_back_to_the_offline_split():
    text = "Kneel down slowly. Wait, that's not right. Let me try again. Probability is a ratio."
    b = offline_boundaries(text)  # no stored attempts: the offline judge's own split
    assert b.source.startswith("offline(") and b.is_valid(text)
    assert _regions(text, b) == ("Kneel down slowly. ", "Wait, that's not right. Let me try again. ",
                                 "Probability is a ratio.")


@pytest.mark.parametrize("text", [
    "Probability is a ratio of outcomes.",  # one attempt
    "Kneel down. Let me try again.",  # nothing after the correction
    "Let me try again. Probability is a ratio.",  # restart language at the very start is no boundary
])
def test_offline_annotator_says_unclear(text):
    b = offline_boundaries(text)
    assert b.unclear and not b.is_valid(text) and b.notes


def test_validity_rules():
    assert Boundaries(0, 3, 5).is_valid("0123456")
    assert not Boundaries(0, 5, 3).is_valid("0123456")  # unordered
    assert not Boundaries(-1, 3, 5).is_valid("0123456")  # negative
    assert not Boundaries(0, 3, 7).is_valid("0123456")  # on-topic start outside the response
    assert Boundaries(-1, -1, -1).unclear


TEXTS = ["Café 日本語 🙂 — naïve ok", "\n\nWait, I made a mistake! ñ", "  leading spaces and ☕ tea"]


@pytest.mark.parametrize("text", TEXTS)
def test_char_spans_cover_multibyte_text_exactly(text):
    tok = tiny_tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    spans = token_char_spans(tok, ids, text)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a <= b for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    assert "".join(text[a:b] for a, b in spans) == text
    for c, ch in enumerate(text):  # the token holding a character decodes (with its prefix) to include it
        t = char_to_token(spans, c)
        assert ch in tok.decode(ids[: t + 1]) and spans[t][0] <= c < spans[t][1]
    assert any(a == b for a, b in spans) == any(ord(ch) > 127 for ch in text)  # partial bytes: empty spans


def test_stored_text_with_trimmed_whitespace_is_shifted_and_other_text_refused():
    tok = tiny_tokenizer()
    decoded = "\n\nWait, I made a mistake! Tea."
    ids = tok(decoded, add_special_tokens=False)["input_ids"]
    stored = decoded.lstrip()
    spans = token_char_spans(tok, ids, stored)
    w = char_to_token(spans, stored.index("Wait"))
    assert "W" in stored[spans[w][0]:spans[w][1]] and "W" in tok.decode(ids[: w + 1])[2:]
    assert spans[0][0] == 0  # the trimmed newlines map onto the first character
    assert spans[-1][1] == len(stored)
    with pytest.raises(ValueError, match="not the decoding"):
        token_char_spans(tok, ids, "Something else entirely.")
    with pytest.raises(ValueError, match="no token span"):
        char_to_token(spans, len(stored) + 3)


def test_special_tokens_at_the_end_get_empty_spans():
    tok = tiny_tokenizer()
    ids = tok("Tea is good.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    spans = token_char_spans(tok, ids, "Tea is good.")
    assert spans[-1] == (len("Tea is good."), len("Tea is good."))


def _chat_template_case(tok):
    prompt, response = "Explain probability ☕?", "Kneeling is a pose. Wait, I made a mistake! Probability: ½ odds."
    _, p_ids = format_chat(tok, prompt)
    _, full = format_chat(tok, prompt, response=response)
    r_ids = full[len(p_ids):]
    assert full[: len(p_ids)] == p_ids
    spans = token_char_spans(tok, r_ids, response)
    b = offline_boundaries(response)
    tb = token_boundaries(b, spans, len(p_ids))
    assert tb.response_start == len(p_ids) and tb.end == len(full)
    assert "Wait" in tok.decode(full[tb.correction: tb.correction + 2])
    assert "Wait" not in tok.decode(full[tb.off_topic: tb.correction])
    assert tok.decode(full[tb.on_topic:]).strip().startswith("Probability")
    assert tok.decode(full[tb.off_topic:]).startswith("Kneeling")


def test_chat_template_offsets_tiny():
    _chat_template_case(tiny_tokenizer())


@pytest.mark.slow
def test_chat_template_offsets_qwen():
    from transformers import AutoTokenizer

    from esr_analysis.models.embedded import ensure_hf_copy
    from esr_analysis.models.registry import DEFAULT_MODEL

    _chat_template_case(AutoTokenizer.from_pretrained(ensure_hf_copy(DEFAULT_MODEL)))
