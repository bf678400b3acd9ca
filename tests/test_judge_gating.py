"""Restart phrases (the documented set) and restart gating of LLM-judge attempts."""

from __future__ import annotations

import pytest

from esr_analysis.judge.gating import GATING_VERSION, gate_attempts, gate_grade, locate_attempts
from esr_analysis.judge.restart import (
    boundary_offsets,
    find_restarts,
    find_weak_markers,
    has_restart,
    strip_restart_language,
    weak_offsets,
)
from esr_analysis.judge.types import Attempt, Grade

A = Attempt


@pytest.mark.parametrize(
    "text",
    [
        "Bread needs flour. Wait, that's not right.",
        "Bread needs flour. No, wait! Bread needs yeast.",
        "Volcanoes erupt. Hold on, I got off track.",
        "Volcanoes erupt. Let me try that again.",
        "Volcanoes erupt. Let's start over.",
        "Volcanoes erupt. Actually, I made a mistake.",
        "Volcanoes erupt. Wait, wrong topic! Knead the dough.",  # restart-v5
        "Volcanoes erupt. That was the wrong topic. Knead the dough.",
        "Volcanoes erupt. Sorry, I went off topic.",
        "Volcanoes erupt. Scratch that.",
        "Volcanoes erupt. I'd like to revise my answer.",
        "Volcanoes erupt. To actually answer your question, knead the dough.",
        "Volcanoes erupt. Back to your question: knead the dough.",
        "Volcanoes erupt. My mistake, here is the answer.",
        "Volcanoes erupt. Let me rephrase.",
        "Volcanoes erupt. Oops, wrong topic.",
        "Volcanoes erupt. Correction: knead the dough.",
        "Volcanoes erupt. Just kidding, here is the recipe.",
        "Volcanoes erupt. Actually, let me answer your question: knead the dough.",
        "Volcanoes erupt. **Wait, that's not right.** Knead the dough.",
        "Volcanoes erupt. Oh, sorry, I got off track. Knead the dough.",
        "Volcanoes erupt. Anyway, back to your question: knead the dough.",
        "Volcanoes erupt. Hmm, I seem to have drifted off topic. Knead the dough.",
        # restart-v3: lead-ins "Wait,", "Hold on,", "I apologize,", "Never mind that," before a strong body
        "Volcanoes erupt. Wait, let me get back to your question.",
        "Volcanoes erupt. Hold on, that has nothing to do with your question.",
        "Volcanoes erupt. Actually, I made an error and wandered away from the topic.",
        "Volcanoes erupt. My apologies, I got distracted. Knead the dough.",
        "Volcanoes erupt. I apologize, that was irrelevant to your request.",
        "Volcanoes erupt. Never mind that, let me answer the question you asked.",
        "Volcanoes erupt. Wait, I should be answering your question instead.",
        "Volcanoes erupt. Oh, wait. I drifted away from the topic, so let me try again.",
        # restart-v6: the forms that stay strong beside the instruction forms of the next test
        "Volcanoes erupt. Let me start over with your question.",
        "Volcanoes erupt. Let's try that again, this time on topic.",
        "Volcanoes erupt. Let me try again: knead the dough.",
        "Volcanoes erupt. That has nothing to do with what you asked.",
        "Volcanoes erupt. Ignore that. Knead the dough.",
        "Volcanoes erupt. Please disregard the above.",
        "Volcanoes erupt. That's not relevant. Knead the dough.",
        "Volcanoes erupt. Scratch that, knead the dough.",
    ],
)
def test_restart_phrases_are_found(text: str):
    assert has_restart(text)
    assert boundary_offsets(text) == [
        len("Bread needs flour. ") if text.startswith("Bread") else len("Volcanoes erupt. ")
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Let the dough rest and wait for an hour. Then bake it.",
        "You should wait until it cools.",
        "Actually, bread is easy to make.",
        "Let me start by explaining the basics.",
        "I will try to explain it clearly. Knead the dough.",
        "That's right: flour, water and salt.",
        "Keep going back and forth until smooth.",
        "The correct answer depends on your oven.",
    ],
)
def test_ordinary_text_has_no_restart(text: str):
    assert not has_restart(text), find_restarts(text)
    assert boundary_offsets(text) == []


@pytest.mark.parametrize(
    "text",
    [
        # the false splits of issue 10 and their kin: restart vocabulary in ordinary use (weak at most)
        "Dear Sam,\n\nI apologize for the short notice. The party moves to Friday.",
        "I'm sorry that we did not get more time. Next week works.",
        "Start with a small fund. Never mind small purchases at first; track the big ones.",
        "Boil the water. Wait, then pour it over the leaves.",
        "Steps:\n1. Fill the kettle.\n2. Wait.\n3. Pour.",
        "Press the tube. If air escapes, this is wrong and the tube is punctured.",
        "Wait until the glue dries. Then sand it.",
        "Actually, most stains lift with cold water. Blot, do not rub.",
        "Many people rinse with hot water. That's wrong: hot water sets the stain.",
        "Volcanoes erupt. That was wrong.",
        "Volcanoes erupt. Never mind that.",
        "Volcanoes erupt. I should clarify what I meant.",
        "Sorry to hear about the stain. Blot it with a cloth.",
        "Hold on to the receipt in case the part fails.",
        "If it still leaks, try again with a new washer.",
        "Wait, no more than five minutes, or the tea turns bitter.",
        "Hold on to the rail. It has nothing to do with cost.",
        "Never mind that, it is fine. I should be answering emails by noon.",
        "I have gone from the store to the park. Wait, then let me know.",
        "I apologize, the shop closes at five. My apologies for the delay.",
        # restart-v5: an apology for confusion is an ordinary courtesy (a weak marker), not a restart
        "1. Fold the corners.\n\nI apologize for any confusion, this part can be tricky.\n\n2. Smooth it.",
        "Volcanoes erupt. I apologize for the confusion.",
        # restart-v6: start-over as an instruction about the task, object-bound "nothing to do with",
        # "scratch / ignore / not relevant" that run on into the task
        "Heat the cocoa. Let's start over with fresh milk if it boils over.",
        "Fold the paper. Let me try again on the other side once the crease is sharp.",
        "Glue the seam. Let's do it again when the first coat is dry.",
        "Clean the pan. It has nothing to do with the size of the pan.",
        "Sand the leg. Scratch that surface lightly before you paint it.",
        "Season the board. Ignore that old advice about olive oil.",
        "Soak the mat. Please disregard the above steps if your mat is cork.",
        "Wipe the keys. That's not relevant for plastic keys, though.",
    ],
)
def test_ordinary_restart_vocabulary_is_never_a_boundary(text: str):
    assert boundary_offsets(text) == [], find_restarts(text)


def test_weak_markers_v5():
    """restart-v5's weak markers (acknowledgement openers) are offsets for the topic check, never boundaries."""
    for opener in ("Okay, that was not helpful.", "Oops.", "Let me focus.",
                   "To answer your question:", "I think I misread it.", "I apologize for the confusion."):
        text = f"Lava flows fast. {opener} Knead the dough."
        assert boundary_offsets(text) == [], opener
        assert weak_offsets(text) == [len("Lava flows fast. ")], opener


def test_weak_markers_are_offsets_for_the_topic_check_only():
    text = "Lava flows fast. Wait. Knead the dough. Sorry, I got off track. Bake it."
    assert boundary_offsets(text) == [text.index("Sorry")]
    assert weak_offsets(text) == [text.index("Wait")]
    assert [m.text for m in find_weak_markers(text)] == ["Wait"]
    assert weak_offsets("Wait. Knead the dough.") == []  # at the very start


def test_boundary_at_sentence_start_and_not_at_text_start():
    assert boundary_offsets("Apple! No, wait! Orange") == [7]
    assert boundary_offsets("Let me try again: the answer is four.") == []  # restart at the very start
    assert boundary_offsets("Wait, let me think. It is four.") == []
    text = "Lava flows. Sorry, I got off track. Back to your question: knead."
    assert boundary_offsets(text) == [12, 36]


def test_strip_restart_language():
    assert strip_restart_language("Sorry, I got off track. Knead the dough.") == ". Knead the dough."
    assert strip_restart_language("No, wait! Orange") == "Orange"


RESPONSE = (
    "Bread needs flour and water. Volcanoes are mountains that erupt molten lava.\n\n"
    "Wait, that's not what you asked. To bake bread, knead the dough and bake it."
)


def test_locate_attempts_whitespace_and_case_insensitive():
    spans = locate_attempts(
        RESPONSE, [A(text="bread needs flour  and water."), A(text="Wait, that's not what you asked.")]
    )
    assert spans[0] == (0, len("Bread needs flour and water."))
    start = RESPONSE.index("Wait")
    assert spans[1] == (start, start + len("Wait, that's not what you asked."))
    assert locate_attempts(RESPONSE, [A(text="never said this")]) == [None]


def test_gating_merges_invented_boundary_and_keeps_real_one():
    attempts = [
        A(text="Bread needs flour and water.", score=60),
        A(text="Volcanoes are mountains that erupt molten lava.", score=0),
        A(text="Wait, that's not what you asked. To bake bread, knead the dough and bake it.", score=90),
    ]
    gated = gate_attempts(RESPONSE, attempts)
    assert len(gated) == 2
    assert gated[0].text == "Bread needs flour and water. Volcanoes are mountains that erupt molten lava."
    w1, w2 = len(attempts[0].text), len(attempts[1].text)
    assert gated[0].score == pytest.approx((60 * w1 + 0 * w2) / (w1 + w2))
    assert gated[1] == attempts[2]


def test_gating_keeps_boundary_when_restart_phrase_sits_at_end_of_previous_attempt():
    response = "Volcanoes erupt lava. Sorry, I got that wrong. Knead the dough and bake it."
    attempts = [
        A(text="Volcanoes erupt lava. Sorry, I got that wrong.", score=0),
        A(text="Knead the dough and bake it.", score=95),
    ]
    assert gate_attempts(response, attempts) == attempts


def test_gating_ignores_restart_language_at_the_very_start():
    response = "Let me try again: volcanoes erupt lava. Knead the dough and bake it."
    attempts = [
        A(text="Let me try again: volcanoes erupt lava.", score=0),
        A(text="Knead the dough and bake it.", score=95),
    ]
    gated = gate_attempts(response, attempts)
    assert len(gated) == 1 and gated[0].text == response


def test_gating_unlocated_attempts_need_a_real_phrase_from_the_response():
    response = "Volcanoes erupt lava. Wait, that's wrong. Knead the dough."
    # judge paraphrased both attempts, but kept the restart phrase: boundary kept
    kept = [A(text="Volcanoes erupt (lava)", score=0), A(text="wait, that's wrong -- knead dough", score=80)]
    assert len(gate_attempts(response, kept)) == 2
    # judge invented restart language that is not in the response: boundary dropped
    no_restart = "Volcanoes erupt lava. Knead the dough."
    invented = [
        A(text="Volcanoes erupt (lava)", score=0),
        A(text="wait, that's wrong -- knead dough", score=80),
    ]
    merged = gate_attempts(no_restart, invented)
    assert len(merged) == 1 and merged[0].text == "Volcanoes erupt (lava) wait, that's wrong -- knead dough"


def test_gating_null_scores_and_single_attempt():
    assert gate_attempts("x", [A(text="x", score=5)]) == [A(text="x", score=5)]
    merged = gate_attempts("a b. c d.", [A(text="a b.", score=None), A(text="c d.", score=None)])
    assert merged == [A(text="a b. c d.", score=None)]
    merged = gate_attempts("a b. c d.", [A(text="a b.", score=None), A(text="c d.", score=40)])
    assert merged[0].score == 40


def test_gate_grade_relabels_and_passes_errors_through():
    g = Grade(
        attempts=[A(text="Bread.", score=50), A(text="Lava.", score=0)], judge_id="x:m", rubric_hash="h"
    )
    out = gate_grade(g, "Bread. Lava.", judge_id=f"x:m+{GATING_VERSION}")
    assert out.judge_id.endswith(GATING_VERSION) and len(out.attempts) == 1
    err = Grade(error="boom", judge_id="x:m", rubric_hash="h")
    assert gate_grade(err, "Bread.").error == "boom"


def test_gating_unlocated_attempts_ignore_restart_language_at_the_very_start():
    # defect (issue 10): the judge paraphrased its attempts so they cannot be located; the only restart
    # phrase of the response is at its very start, which is never a boundary (rubric and located path agree)
    response = "Let me try again: volcanoes erupt lava. Knead the dough and bake it."
    attempts = [A(text="Let me try again -- volcanoes (lava)", score=0), A(text="knead, then bake", score=95)]
    assert all(span is None for span in locate_attempts(response, attempts))
    gated = gate_attempts(response, attempts)
    assert len(gated) == 1
    # the same phrase later in the response still supports the boundary
    later = "Volcanoes erupt lava. Let me try again: knead the dough and bake it."
    paraphrased = [A(text="volcanoes (lava). Let me try again", score=0), A(text="knead, then bake", score=95)]
    assert len(gate_attempts(later, paraphrased)) == 2
