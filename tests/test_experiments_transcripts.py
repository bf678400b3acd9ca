"""Transcripts of graded trials: attempts read from both grade shapes, deterministic picks, plain-text layout."""

from __future__ import annotations

import pytest

from esr_analysis.experiments.transcripts import (
    attempts_of,
    format_transcript,
    pick_transcripts,
    transcripts_text,
)
from esr_analysis.store.read import trials_to_frame
from esr_analysis.store.schema import Trial


def _trial(i: int, scores: list[float], response: str | None = None, condition: str = "steered", **kw) -> Trial:
    texts = [f"attempt {j} of trial {i}" for j in range(len(scores))]
    grade = {"attempts": [{"text": t, "score": s} for t, s in zip(texts, scores, strict=True)],
             "judge_id": "offline", "rubric_hash": "h"}
    return Trial(experiment="exp1", condition=condition, prompt=f"How do you do thing {i}?", latent=i % 4,
                 latent_label=f"label {i % 4}", boost=None if condition == "no_steering" else 40.0 + i, seed=100 + i, response=response or " ".join(texts),
                 grade=grade, **kw)


def _frame():
    trials = [_trial(0, [10, 70]), _trial(1, [50, 20]), _trial(2, [5]), _trial(3, [45]), _trial(4, [90]),
              _trial(5, [30], response="be be be be be be"), _trial(6, [60], condition="no_steering")]
    return trials_to_frame(trials)


def test_attempts_of_reads_our_grades_and_the_authors():
    assert attempts_of({"attempts": [{"text": "a", "score": 10}, {"text": "b", "score": None}]}) == [("a", 10.0), ("b", None)]
    assert attempts_of({"attempts": [{"attempt_text": "x", "score": "42"}]}) == [("x", 42.0)]
    assert attempts_of({"error": "parse failed", "attempts": []}) == []
    assert attempts_of(None) == []


def test_pick_takes_esr_then_multi_then_spread_of_scores():
    df = _frame()
    picked = pick_transcripts(df, n=5, condition="steered")
    assert list(picked["why"]) == ["esr", "multi_attempt", "spread", "spread", "spread"]
    assert list(picked["first_score"]) == [10.0, 50.0, 5.0, 45.0, 90.0]  # spread: lowest, middle, highest
    assert "no_steering" not in set(picked["condition"])
    again = pick_transcripts(df.sample(frac=1.0, random_state=3), n=5, condition="steered")
    assert list(again["trial_id"]) == list(picked["trial_id"])  # order of the input does not matter


def test_pick_degraded_and_bad_arguments():
    df = _frame()
    assert list(pick_transcripts(df, n=1, kinds=["degraded"])["prompt"]) == ["How do you do thing 5?"]
    assert pick_transcripts(df, n=3, kinds=["esr"]).shape[0] == 1  # fewer when fewer exist
    with pytest.raises(ValueError, match="unknown transcript kind"):
        pick_transcripts(df, kinds=["best"])
    with pytest.raises(ValueError, match="no trials of condition"):
        pick_transcripts(df, condition="exp42")
    with pytest.raises(ValueError, match="at least 1"):
        pick_transcripts(df, n=0)


def test_format_shows_strength_attempts_scores_and_verdict():
    t = _trial(0, [10, 70]).model_copy(update={"interventions": [{"kind": "add_latent", "strength_relative": 1.234}]})
    row = trials_to_frame([t]).to_dict("records")[0]
    text = format_transcript(row)
    assert "latent 0 (label 0)" in text and "boost 40 SAE units (= 1.23 x the median residual norm)" in text
    assert "2 attempts, scores 10 -> 70  [ESR episode]" in text
    assert "ATTEMPT 1 (score 10):\n  attempt 0 of trial 0" in text and "ATTEMPT 2 (score 70):" in text
    assert "How do you do thing 0?" in text


def test_format_marks_degraded_clips_and_falls_back_to_the_response():
    df = _frame()
    deg = df[df["prompt"] == "How do you do thing 5?"].to_dict("records")[0]
    assert "[degraded" in format_transcript(deg)
    long = _trial(9, [40], response="word " * 400).model_copy(update={"grade": None})
    text = format_transcript(trials_to_frame([long]).to_dict("records")[0], max_chars=50)
    assert "no scored attempt" in text and "RESPONSE:" in text and "more characters]" in text
    base = df[df["condition"] == "no_steering"].to_dict("records")[0]
    assert "no steering" in format_transcript(base)


def test_transcripts_text_joins_and_handles_empty():
    df = _frame()
    assert transcripts_text(df.iloc[:0]) == "(no scored trials to show)"
    assert transcripts_text(pick_transcripts(df, n=2), width=60).count("PROMPT:") == 2
    with pytest.raises(TypeError):
        transcripts_text(df, colour=True)
