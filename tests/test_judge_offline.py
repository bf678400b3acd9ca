"""The offline judge: segmentation, degeneracy, calibration helpers and data, and MiniLM scoring."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from esr_analysis.judge import GradeRequest, JudgeConfigError, grade_all, make_judge, run_grading
from esr_analysis.judge.calibration import (
    brier,
    fit_logistic,
    load_items,
    make_pairs,
    reliability_table,
    roc_auc,
    sigmoid,
)
from esr_analysis.judge.offline import (
    DEGENERATE_CAP,
    OfflineJudge,
    asks_for_code,
    code_share,
    content_words,
    default_calibration_path,
    is_acknowledgement,
    is_degenerate,
    load_calibration,
    segment_attempts,
    strip_prompt_words,
)

CAL_DIR = default_calibration_path().parent
REPO = CAL_DIR.parent.parent


def test_code_share_counts_code_and_markup_tokens():
    """Independent count: tokens with code characters, dotted/underscored identifiers, a '#' inside a line."""
    assert code_share('How does my shirt.back = "on";?') == pytest.approx(3 / 6)
    assert code_share("### Step 1\nFold the **corners** in, then smooth it.") == 0.0  # a heading's '#' is prose
    assert code_share("set my # what is my") == pytest.approx(1 / 6)
    assert code_share("Use `to_do` lists.") == pytest.approx(1 / 3)
    assert code_share("") == 0.0
    assert code_share("Add 2.5 cups, e.g. flour.") == 0.0  # decimals and abbreviations are not identifiers


def test_asks_for_code():
    assert asks_for_code("Write a Python function that reverses a list.")
    assert asks_for_code("What does `x = y;` do?")
    assert not asks_for_code("How do you remove a red wine stain from a carpet?")


def test_acknowledgement_segments():
    assert is_acknowledgement("Hmm, that doesn't answer what you asked.")
    assert is_acknowledgement("Sorry, I got off track.")
    assert not is_acknowledgement("Back to your question: knead the dough.")
    assert not is_acknowledgement("Wait, that is wrong. Canberra.")


# -- segmentation and degeneracy (no model) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Knead the dough and bake it.", ["Knead the dough and bake it."]),
        ("Apple! No, wait! Orange", ["Apple!", "No, wait! Orange"]),
        (
            "Lava is hot. Sorry, I got off track. Back to your question: knead the dough.",
            ["Lava is hot.", "Sorry, I got off track. Back to your question: knead the dough."],
        ),
        ("Let me try again: knead the dough. Then bake.", ["Let me try again: knead the dough. Then bake."]),
        (
            "Lava. Wait, that's wrong. Dough. Actually, I made a mistake. Bread.",
            ["Lava.", "Wait, that's wrong. Dough.", "Actually, I made a mistake. Bread."],
        ),
        ("Knead the dough. Let me try again.", ["Knead the dough. Let me try again."]),  # nothing after
        ("Let it rest and wait. Bake it.", ["Let it rest and wait. Bake it."]),  # 'wait' not an interjection
        (
            "Here is a soup recipe: Ingredients: Sorry, I got off track. Boil the pasta.",
            ["Here is a soup recipe: Ingredients:", "Sorry, I got off track. Boil the pasta."],
        ),
        ("....\n..\n\"... Oops, I went off topic. Boil the pasta.", ["....\n..\n\"...", "Oops, I went off topic. Boil the pasta."]),
        # restart-v4: a capitalised restart phrase with no end mark before it (degenerate text)
        (
            "gravel and gravel, towers and of Let me start over. Boil the pasta.",
            ["gravel and gravel, towers and of", "Let me start over. Boil the pasta."],
        ),
        ("Tell them I made a mistake, then ask for a refund.", ["Tell them I made a mistake, then ask for a refund."]),
        ("If the lid sticks, let me try again later.", ["If the lid sticks, let me try again later."]),
        (
            "Ferries leave at noon. Hmm, that is not what you wanted. Soak the beans overnight.",
            ["Ferries leave at noon.", "Hmm, that is not what you wanted. Soak the beans overnight."],
        ),
        (
            "Ferries leave at noon. That doesn't answer your question, sorry. Soak the beans.",
            ["Ferries leave at noon.", "That doesn't answer your question, sorry. Soak the beans."],
        ),
        ("", []),
        ("   \n ", []),
    ],
)
def test_segment_attempts(response: str, expected: list[str]):
    assert segment_attempts(response) == expected


@pytest.mark.parametrize(
    ("text", "degenerate"),
    [
        ("the the the the the", True),
        ("The the THE the, the.", True),  # after case folding and punctuation stripping
        ("the the the the", True),  # fluency-v2: 3 doubled words (the paper's run of 5 is not needed)
        ("the cat the dog the", False),
        ("a a a a a a", False),  # one-character words do not count
        ("bake bake bake bake cake bake", True),  # fluency-v2: doubled words
        ("bake the cake, then bake the bread", False),
        (" ".join(["lava flows and"] * 8), True),  # low distinct-trigram ratio
        (
            "Mix flour, water, yeast and salt; knead the dough for ten minutes; let it rise; shape it; bake.",
            False,
        ),
    ],
)
def test_is_degenerate(text: str, degenerate: bool):
    assert is_degenerate(text) is degenerate


def test_content_words_and_prompt_word_removal():
    assert content_words("How do I roast the Carrots? Roast them at 200 C!") == ["roast", "carrots", "roast"]
    prompt = "How do you roast carrots in the oven?"
    text = "To roast carrots in the oven, configure the router's firewall."
    # the prompt's content words (roast, carrots, oven) go; everything else, punctuation included, stays
    assert strip_prompt_words(prompt, text) == "To in the configure the router's firewall."


# -- calibration helpers and shipped data ------------------------------------------------------------


def test_fit_logistic_recovers_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    y = (rng.random(4000) < sigmoid(-0.5 + x @ np.array([2.0, -1.0]))).astype(float)
    b0, b = fit_logistic(x, y, balance=False, l2=0.0)
    assert b0 == pytest.approx(-0.5, abs=0.15) and b == pytest.approx([2.0, -1.0], abs=0.15)
    with pytest.raises(ValueError):
        fit_logistic(x, np.ones(4000))


def test_auc_brier_reliability_known_values():
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0
    assert roc_auc([0.5, 0.5], [1, 0]) == 0.5
    assert roc_auc([0.9, 0.3, 0.5, 0.1], [1, 1, 0, 0]) == 0.75
    assert roc_auc([0.9, 0.4, 0.1], [1, 0.5, 0]) == 1.0  # fractional targets ignored
    assert brier([1.0, 0.0], [1, 0]) == 0.0 and brier([0.5, 0.5, 0.5], [1, 0, 0]) == 0.25
    table = reliability_table([0.1, 0.15, 0.9], [0, 0, 1], bins=5)
    assert [(r["n"], r["observed_on_topic"]) for r in table] == [(2, 0.0), (1, 1.0)]


def test_calibration_items_and_pairs():
    train, held = load_items(CAL_DIR / "train.jsonl"), load_items(CAL_DIR / "heldout.jsonl")
    assert len(train) + len(held) >= 60 and len(held) >= 20
    assert not {i.prompt for i in train} & {i.prompt for i in held}
    assert not {i.answer for i in train} & {i.answer for i in held}
    pairs = make_pairs(held, all_mismatches=True, mixed=True, seed=1)
    n = len(held)
    on = [p for p in pairs if p.target == 1]
    off = [p for p in pairs if p.target == 0]
    mixed = [p for p in pairs if 0 < p.target < 1]
    assert len(on) == n and len(off) == n * (n - 1) and mixed
    answers = {i.prompt: i.answer for i in held}
    assert all(answers[p.prompt] == p.answer for p in on) and all(answers[p.prompt] != p.answer for p in off)
    assert all(p.label != next(i.label for i in held if i.prompt == p.prompt) for p in on)


def test_load_items_reports_file_and_line(tmp_path: Path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "answer": "a", "label": "l"}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2"):
        load_items(bad)


def test_shipped_calibration_is_current_and_fit_on_development_data_only():
    cal = load_calibration()
    dev = [REPO / "data" / "judge_eval" / name for name in ("judge_set.jsonl", "heldout_fresh.jsonl")]
    assert cal["data"] == [str(p.relative_to(REPO)) for p in dev]  # never heldout3/heldout4.jsonl
    assert cal["data_sha256"] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in dev], (
        "rerun scripts/calibrate_offline_judge.py"
    )
    assert cal["split_used"] == "train + fresh (development)"
    for name in ("prompt_only", "with_label"):
        model = cal["models"][name]
        assert model["coef"][model["features"].index("cos_prompt")] > 0  # closer to the prompt -> higher
        assert cal["train"]["auc"][name] >= 0.9
    with_label = cal["models"]["with_label"]
    assert with_label["coef"][with_label["features"].index("cos_label")] < 0  # closer to the latent -> lower


def test_bad_calibration_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(JudgeConfigError, match="calibrate_offline_judge"):
        OfflineJudge(calibration_path=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"models": {"prompt_only": {"coef": [1.0]}}}))
    with pytest.raises(JudgeConfigError, match="invalid"):
        OfflineJudge(calibration_path=tmp_path / "bad.json")


# -- MiniLM scoring (loads the real embedding model) --------------------------------------------------

BREAD = "How do I make a basic loaf of bread at home?"
ON_TOPIC = (
    "Mix flour, water, yeast and salt, knead the dough until smooth, let it rise, shape it and bake it."
)
OFF_TOPIC = "Volcanoes form when magma rises through cracks in the crust and erupts as lava and ash."


@pytest.fixture(scope="module")
def judge() -> OfflineJudge:
    return make_judge("offline")


@pytest.mark.slow
def test_offline_scores_relevance_restarts_and_degeneracy(judge: OfflineJudge):
    reqs = [
        GradeRequest(prompt=BREAD, response=ON_TOPIC, latent_label="volcanoes and lava"),
        GradeRequest(prompt=BREAD, response=OFF_TOPIC, latent_label="volcanoes and lava"),
        GradeRequest(
            prompt=BREAD,
            response=f"{OFF_TOPIC} Wait, that's not what you asked. {ON_TOPIC}",
            latent_label="volcanoes and lava",
        ),
        GradeRequest(
            prompt=BREAD, response="bread dough bread dough " + "knead " * 6, latent_label="volcanoes"
        ),
        GradeRequest(prompt=BREAD, response=ON_TOPIC),  # no label: prompt-only model
        GradeRequest(prompt=BREAD, response=""),
    ]
    on, off, restart, degenerate, no_label, empty = grade_all(judge, reqs, progress=False)
    assert all(g.ok and g.judge_id == "offline:all-MiniLM-L6-v2" for g in (on, off, restart, degenerate))
    assert on.attempts[0].score > 70 and off.attempts[0].score < 30
    assert [a.text.split()[0] for a in restart.attempts] == ["Volcanoes", "Wait,"]
    s1, s2 = (a.score for a in restart.attempts)
    assert s1 < 30 < 70 < s2  # an ESR episode: the last attempt beats the first
    assert degenerate.attempts[0].score <= DEGENERATE_CAP
    assert json.loads(degenerate.raw_response)["attempts"][0]["degenerate"] is True
    assert (
        no_label.attempts[0].score > 50
        and json.loads(no_label.raw_response)["attempts"][0]["cos_label"] is None
    )
    assert empty.ok and empty.attempts == []
    # a label matching the response's topic lowers its score
    themed = grade_all(
        judge,
        [GradeRequest(prompt=BREAD, response=ON_TOPIC, latent_label="baking bread and yeast dough")],
        progress=False,
    )
    assert themed[0].attempts[0].score < on.attempts[0].score


@pytest.mark.slow
def test_offline_is_deterministic_and_cached(judge: OfflineJudge, tmp_path: Path):
    reqs = [GradeRequest(prompt=BREAD, response=r, latent_label="lava") for r in (ON_TOPIC, OFF_TOPIC)]
    first = run_grading(judge, reqs, cache=tmp_path / "c.sqlite", progress=False)
    again = run_grading(judge, reqs, cache=tmp_path / "c.sqlite", progress=False)
    assert first.stats.api_calls == 0 and again.stats.cached == 2
    assert [g.attempts for g in first.grades] == [g.attempts for g in again.grades]
    assert grade_all(judge, reqs, progress=False, max_calls=0)[0].ok  # no API: the budget does not apply


@pytest.mark.slow
def test_stored_heldout_table_is_reproduced(judge: OfflineJudge):
    """The held-out AUC and false-split rate in data/results/judge_offline_v2.json are what the judge's own
    grades of the fourth held-out split's items give."""
    stored = json.loads((REPO / "data" / "results" / "judge_offline_v2.json").read_text())["splits"]["heldout"]
    lines = (REPO / "data" / "judge_eval" / "heldout4.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    held = [it for it in items if it["category"] in
            ("on_topic", "restart_words", "steered_on_topic", "mismatched", "drift")]
    grades = judge.grade_sync(
        [GradeRequest(prompt=it["prompt"], response=it["response"], latent_label=it["latent_label"]) for it in held]
    )
    on = {"on_topic", "restart_words", "steered_on_topic"}
    auc = roc_auc([g.attempts[0].score for g in grades], [1 if it["category"] in on else 0 for it in held])
    assert auc == pytest.approx(stored["auc_on_vs_off"], abs=1e-3)
    words = [len(g.attempts) > 1 for it, g in zip(held, grades, strict=True) if it["category"] == "restart_words"]
    assert sum(words) / len(words) == pytest.approx(stored["false_split_rate"], abs=1e-3)


@pytest.mark.slow
def test_weak_marker_splits_only_on_a_topic_shift(judge: OfflineJudge):
    restart = f"{OFF_TOPIC} Wait. {ON_TOPIC}"
    instruction = "Mix flour, water, yeast and salt and knead the dough. Wait. Let it rise, shape it and bake it."
    grades = judge.grade_sync([GradeRequest(prompt=BREAD, response=t, latent_label="volcanoes and lava")
                               for t in (restart, instruction)])
    assert [a.text.split()[0] for a in grades[0].attempts] == ["Volcanoes", "Wait."]
    assert len(grades[1].attempts) == 1


@pytest.mark.slow
def test_weak_marker_after_a_short_opener_does_not_split(judge: OfflineJudge):
    """v3: a weak split needs 8 words on each side; a two-word opener says nothing about a topic shift."""
    tea = "How do I brew loose-leaf green tea?"
    answer = ("Of course! Wait, then pour water at about 80 degrees over the leaves. Steep them for two minutes, "
              "strain the tea into a cup and serve.")
    grade = judge.grade_sync([GradeRequest(prompt=tea, response=answer, latent_label="volcanoes and lava")])[0]
    assert len(grade.attempts) == 1


@pytest.mark.slow
def test_drift_that_restates_the_prompt_scores_below_an_answer(judge: OfflineJudge):
    """v3: text that restates the prompt and then leaves it (steered drift) is scored by what follows."""
    drift = ("To make a basic loaf of bread at home, open the router settings, assign a static IP address to "
             "each device on the network and restart the switch so the subnet is updated.")
    grades = judge.grade_sync([GradeRequest(prompt=BREAD, response=t, latent_label="computer networking")
                               for t in (drift, ON_TOPIC)])
    feats = json.loads(grades[0].raw_response)["attempts"][0]
    assert feats["cos_noecho"] < json.loads(grades[1].raw_response)["attempts"][0]["cos_noecho"]
    assert feats["off_topic_word_share"] > 0.5
    assert grades[0].attempts[0].score < 50 < grades[1].attempts[0].score


def test_calibration_with_an_unusable_feature_is_a_config_error(tmp_path: Path):
    good = {"features": ["cos_prompt"], "coef": [1.0], "intercept": 0.0}
    leaky = {"features": ["cos_prompt", "cos_label"], "coef": [1.0, -1.0], "intercept": 0.0}
    (tmp_path / "leaky.json").write_text(json.dumps({"models": {"prompt_only": leaky, "with_label": good}}))
    with pytest.raises(JudgeConfigError, match="cos_label"):
        OfflineJudge(calibration_path=tmp_path / "leaky.json")


@pytest.mark.slow
def test_code_markup_caps_answers_to_prompts_that_are_not_about_code(judge: OfflineJudge):
    garble = 'How does my shirt.back = "on";?'
    grades = judge.grade_sync([
        GradeRequest(prompt="How do you sew a loose button back onto a shirt?", response=garble),
        GradeRequest(prompt="What does the JavaScript line shirt.back = \"on\"; do?", response=garble),
    ])
    assert grades[0].attempts[0].score <= DEGENERATE_CAP
    assert json.loads(grades[0].raw_response)["attempts"][0]["degenerate"] is True
    assert json.loads(grades[1].raw_response)["attempts"][0]["degenerate"] is False
