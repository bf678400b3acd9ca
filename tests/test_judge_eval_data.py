"""The labelled judge set (data/judge_eval): size, categories, a prompt-level split kept apart, labels."""

from __future__ import annotations

import json
from collections import Counter

from esr_analysis.judge.offline import segment_attempts
from esr_analysis.paths import DATA_DIR

EVAL = DATA_DIR / "judge_eval"


def _items() -> list[dict]:
    lines = (EVAL / "judge_set.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_judge_prompts_are_disjoint_from_the_evaluation_prompts():
    judge = set((DATA_DIR / "prompts" / "judge_prompts.txt").read_text(encoding="utf-8").splitlines())
    evaluation = set((DATA_DIR / "prompts" / "esr_prompts.txt").read_text(encoding="utf-8").splitlines())
    assert len(judge) >= 40 and not judge & evaluation


def test_size_categories_and_prompt_level_split():
    items = _items()
    assert len(items) >= 200
    cats = Counter(it["category"] for it in items)
    for cat in ("on_topic", "restart_words", "mismatched", "restart", "degenerate"):
        assert cats[cat] > 0, cat
    train = {it["prompt"] for it in items if it["split"] == "train"}
    held = {it["prompt"] for it in items if it["split"] == "heldout"}
    assert train and held and not train & held
    assert all(it["prompt_index"] % 3 == 2 for it in items if it["split"] == "heldout")
    assert len({it["id"] for it in items}) == len(items)


def test_heldout_templates_stay_in_the_heldout_split():
    for it in _items():
        template = it["source"].get("template", "")
        if template:
            assert template.startswith(it["split"]), it["id"]


def test_labels_are_consistent():
    for it in _items():
        assert it["n_attempts"] == len(it["attempts"]) >= 1
        if it["category"] in ("on_topic", "restart_words", "steered_on_topic"):
            assert [a["on_topic"] for a in it["attempts"]] == [True]
        elif it["category"] == "restart":
            assert [a["on_topic"] for a in it["attempts"]] == [False, True]
            assert it["response"].replace(" ", "") == "".join(a["text"] for a in it["attempts"]).replace(" ", "")
        else:
            assert [a["on_topic"] for a in it["attempts"]] == [False]


def test_restart_words_templates_hold_restart_vocabulary():
    """Every template has restart-like words; the TRAIN ones are never split (the held-out ones are measured
    by scripts/evaluate_judge.py only, so nothing is tuned on them)."""
    words = json.loads((EVAL / "templates.json").read_text(encoding="utf-8"))["restart_words"]
    vocab = ("wait", "sorry", "apolog", "never mind", "actually", "hold on", "again", "wrong", "oops", "anyway",
             "hmm", "correct", "oh,")
    for split in ("train", "heldout"):
        for sentence in words[split]:
            assert any(v in sentence.lower() for v in vocab), sentence
            if split == "train":
                assert len(segment_attempts(f"Knead the dough. {sentence} Bake it.")) == 1, sentence
