"""The labelled judge set (data/judge_eval): the development split, the fresh held-out split kept apart,
labels."""

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


def _fresh() -> list[dict]:
    lines = (EVAL / "heldout_fresh.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_development_split_holds_the_looked_at_items():
    """Every judge_set item is development data; the first held-out prompts (i % 3 == 2) are marked."""
    items = _items()
    assert len(items) >= 200 and {it["split"] for it in items} == {"train"}
    cats = Counter(it["category"] for it in items)
    for cat in ("on_topic", "restart_words", "mismatched", "restart", "degenerate", "drift"):
        assert cats[cat] > 0, cat
    for it in items:
        if it["prompt_index"] is not None:
            assert bool(it["source"].get("was_heldout")) == (it["prompt_index"] % 3 == 2), it["id"]
    assert len({it["id"] for it in items}) == len(items)


def test_fresh_heldout_split_size_categories_and_separation():
    fresh = _fresh()
    assert len(fresh) >= 80 and {it["split"] for it in fresh} == {"fresh"}
    cats = Counter(it["category"] for it in fresh)
    for cat in ("on_topic", "restart_words", "mismatched", "restart", "degenerate", "drift"):
        assert cats[cat] >= 5, cat
    assert len({it["id"] for it in fresh}) == len(fresh)
    # no response and no written sentence of the development split reappears in the fresh split
    assert not {it["response"] for it in _items()} & {it["response"] for it in fresh}
    dev_templates = json.loads((EVAL / "templates.json").read_text(encoding="utf-8"))
    dev_words = {w for split in dev_templates["restart_words"].values() for w in split}
    fresh_templates = json.loads((EVAL / "fresh_templates.json").read_text(encoding="utf-8"))
    assert not dev_words & {t["text"] for t in fresh_templates["restart_words"]}
    dev_acks = {a for split in dev_templates["acknowledgements"].values() for kind in split.values() for a in kind}
    assert not dev_acks & set(fresh_templates["acknowledgements"])
    # steered text of the two splits comes from different latents
    lines = (EVAL / "steered_runs.jsonl").read_text(encoding="utf-8").splitlines()
    steered = [r for r in map(json.loads, lines) if r["condition"] != "no_steering" and r["label"] != "exclude"]
    dev_latents = {r["latent"] for r in steered if r["split"] == "train"}
    held_latents = {r["latent"] for r in steered if r["split"] == "heldout"}
    assert dev_latents and held_latents and not dev_latents & held_latents


def _third() -> list[dict]:
    lines = (EVAL / "heldout3.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_third_heldout_split_size_categories_and_separation():
    """The third held-out split (2026-12-05): its own ids, every category, and no response, written sentence,
    acknowledgement, steered latent or on-topic prompt of the development data (judge_set + the second split)."""
    third, dev = _third(), _items() + _fresh()
    assert len(third) >= 100 and {it["split"] for it in third} == {"h3"}
    cats = Counter(it["category"] for it in third)
    for cat in ("on_topic", "restart_words", "mismatched", "restart", "degenerate", "drift"):
        assert cats[cat] >= 5, cat
    assert len({it["id"] for it in third}) == len(third)
    assert not {it["response"] for it in dev} & {it["response"] for it in third}
    tpl3 = json.loads((EVAL / "fresh_templates3.json").read_text(encoding="utf-8"))
    dev_templates = json.loads((EVAL / "templates.json").read_text(encoding="utf-8"))
    fresh_templates = json.loads((EVAL / "fresh_templates.json").read_text(encoding="utf-8"))
    dev_words = {w for split in dev_templates["restart_words"].values() for w in split}
    dev_words |= {t["text"] for t in fresh_templates["restart_words"]}
    assert not dev_words & {t["text"] for t in tpl3["restart_words"]}
    dev_acks = {a for split in dev_templates["acknowledgements"].values() for kind in split.values() for a in kind}
    dev_acks |= set(fresh_templates["acknowledgements"])
    assert not dev_acks & set(tpl3["acknowledgements"])
    lines = (EVAL / "steered_runs.jsonl").read_text(encoding="utf-8").splitlines()
    steered = [r for r in map(json.loads, lines) if r["condition"] != "no_steering" and r["label"] != "exclude"]
    earlier = {r["latent"] for r in steered if r["split"] in ("train", "heldout")}
    third_latents = {r["latent"] for r in steered if r["split"] == "heldout3"}
    assert third_latents and not earlier & third_latents
    discovery = set((DATA_DIR / "prompts" / "otd_discovery_prompts.txt").read_text(encoding="utf-8").splitlines())
    judge_prompts = set((DATA_DIR / "prompts" / "judge_prompts.txt").read_text(encoding="utf-8").splitlines())
    assert discovery and not discovery & judge_prompts
    assert {it["prompt"] for it in third if it["category"] == "on_topic"} & discovery


def _fourth() -> list[dict]:
    lines = (EVAL / "heldout4.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_fourth_heldout_split_is_new_material():
    """The fourth held-out split (2026-12-05): its own ids, every category, enough ordinary restart-like items
    for a 2 % false-split target to be measurable (one error in >= 50), and nothing from the development data:
    no prompt of any other prompt file or split, no response, written sentence or acknowledgement of an
    earlier split, no latent of an earlier split or of a shipped organism's training data."""
    fourth, dev = _fourth(), _items() + _fresh() + _third()
    assert {it["split"] for it in fourth} == {"h4"} and len({it["id"] for it in fourth}) == len(fourth)
    cats = Counter(it["category"] for it in fourth)
    for cat in ("on_topic", "restart_words", "mismatched", "restart", "degenerate", "drift"):
        assert cats[cat] >= 3, cat
    assert cats["restart_words"] >= 50 and cats["mismatched"] + cats["drift"] >= 10
    assert not {it["response"] for it in dev} & {it["response"] for it in fourth}
    new_prompts = set((DATA_DIR / "prompts" / "judge_heldout4_prompts.txt").read_text(encoding="utf-8").splitlines())
    other = {line for f in (DATA_DIR / "prompts").glob("*.txt") if f.name != "judge_heldout4_prompts.txt"
             for line in f.read_text(encoding="utf-8").splitlines()}
    assert len(new_prompts) == 26 and not new_prompts & (other | {it["prompt"] for it in dev})
    assert {it["prompt"] for it in fourth} <= new_prompts
    tpl4 = json.loads((EVAL / "fresh_templates4.json").read_text(encoding="utf-8"))
    earlier = [json.loads((EVAL / f).read_text(encoding="utf-8"))
               for f in ("fresh_templates.json", "fresh_templates3.json")]
    earlier_words = {t["text"] for tpl in earlier for t in tpl["restart_words"]}
    earlier_acks = {a for tpl in earlier for a in tpl["acknowledgements"]}
    assert not earlier_words & {t["text"] for t in tpl4["restart_words"]}
    assert not earlier_acks & set(tpl4["acknowledgements"])
    rows = [json.loads(line) for line in (EVAL / "steered_runs.jsonl").read_text(encoding="utf-8").splitlines()]
    earlier_latents = {r["latent"] for r in rows if r["split"] != "heldout4" and r["latent"] is not None}
    trained = {lat for meta in (DATA_DIR / "adapters").glob("*/organism.json")
               for lat in json.loads(meta.read_text())["data"]["build_settings"].get("latents", [])}
    fourth_latents = {r["latent"] for r in rows if r["split"] == "heldout4" and r["latent"] is not None}
    assert fourth_latents and not fourth_latents & (earlier_latents | trained)
    material = (EVAL / "heldout4_material.jsonl").read_text(encoding="utf-8").splitlines()
    generated = {json.loads(line)["response"] for line in material[1:]}
    assert {r["response"] for r in rows if r["split"] == "heldout4"} <= generated  # labelled rows are real output


def test_labels_are_consistent():
    for it in _items() + _fresh() + _third() + _fourth():
        assert it["n_attempts"] == len(it["attempts"]) >= 1
        if it["category"] in ("on_topic", "restart_words", "steered_on_topic"):
            assert [a["on_topic"] for a in it["attempts"]] == [True]
        elif it["category"] == "restart":
            assert [a["on_topic"] for a in it["attempts"]] == [False, True]
            joined = "".join(a["text"] for a in it["attempts"])
            assert it["response"].replace(" ", "").replace("\n", "") == joined.replace(" ", "").replace("\n", "")
        else:
            assert [a["on_topic"] for a in it["attempts"]] == [False]


def test_restart_words_templates_hold_restart_vocabulary():
    """Every template has restart-like words; the development ones are never split (the fresh held-out ones
    are measured by scripts/evaluate_judge.py only, so nothing is tuned on them)."""
    words = json.loads((EVAL / "templates.json").read_text(encoding="utf-8"))["restart_words"]
    fresh = json.loads((EVAL / "fresh_templates.json").read_text(encoding="utf-8"))["restart_words"]
    vocab = ("wait", "sorry", "apolog", "never mind", "actually", "hold on", "again", "wrong", "oops", "anyway",
             "hmm", "correct", "oh,", "start over", "not true", "no,")
    for sentence in [*words["train"], *words["heldout"], *(t["text"] for t in fresh)]:
        assert any(v in sentence.lower() for v in vocab), sentence
    for sentence in [*words["train"], *words["heldout"]]:  # development templates only
        assert len(segment_attempts(f"Knead the dough. {sentence} Bake it.")) == 1, sentence
