"""Build the FRESH held-out split ``data/judge_eval/heldout_fresh.jsonl`` of the labelled judge set.

The first held-out split of ``judge_set.jsonl`` was looked at while analysing the judge, so it became
development data. This split replaces it. It was written and committed before the final judge was
evaluated on it, and nothing is tuned on it. Its material:

* real responses of the embedded model from committed runs, read and labelled by hand, in
  ``data/judge_eval/steered_runs.jsonl`` (rows with ``split == "heldout"``): unsteered answers to the
  evaluation prompts (``label == "ontopic"``, condition ``no_steering``) and steered responses of the
  held-out latents (5409, 18, 1020, 5458, 8086, 230, 3578, 5081; the development split uses other latents)
  labelled ``offtopic`` (fluent drift), ``degenerate``, ``ontopic`` or ``restart``;
* written material in ``data/judge_eval/fresh_templates.json`` (sentences, letters, whole answers and
  acknowledgements that appear nowhere in the development split).

Items (one attempt unless stated):

* ``on_topic``: the first unsteered answer to each prompt;
* ``restart_words``: an on-topic answer with one written sentence with restart-like words inserted
  after its second sentence (:func:`insert_after_sentence`) ("Wait until ...", "I apologize for ...", "Never mind ...", list items), the
  answers about writing an email with an example letter appended, and the written whole answers;
* ``mismatched``: the answer to another prompt (12 items);
* ``drift`` / ``degenerate`` / ``steered_on_topic``: the steered responses by their hand label;
* ``restart`` (2 attempts: off topic, on topic): the steered response labelled ``restart``, cut where it
  starts over; and, for steered drift (:func:`off_topic_passage`) or degenerate output (its first
  :data:`DEGENERATE_CHARS` characters, cut at a space, so often without a sentence end) whose prompt has
  an unsteered answer, that passage, a written acknowledgement and the first three sentences of the answer.

**The third held-out split** (``--split heldout3`` → ``data/judge_eval/heldout3.jsonl``, ids ``h3-``): once
the offline judge v3 had been evaluated on the split above, its errors were read, so that split became
development data too. The third split is built the same way from rows with ``split == "heldout3"`` (read and
labelled by hand on 2026-12-05, before the judge v4 was evaluated on them) and
``data/judge_eval/fresh_templates3.json``: on-topic answers are the base model's unsteered answers to the
detector-discovery prompts (``otd_discovery_prompts.txt``, never used by the judge before) and to the ESR
prompts of the steered rows; steered rows are exp 1 responses of the base model and of the organism v3 for
latents that no earlier split used; a real restart row names its own ``cut`` (the text where the new attempt
starts).

**The fourth held-out split** (``--split heldout4`` → ``data/judge_eval/heldout4.jsonl``, ids ``h4-``): the judge
v4's one error on the third split was read, so that split became development data too. The fourth is built the
same way from rows with ``split == "heldout4"``: real responses generated for it by
``scripts/build_heldout4_material.py`` (26 new prompts, 13 latents no earlier split or organism used; the base
model unsteered, the base model and the organism v3 steered), read and labelled by hand before any judge was
evaluated on them, and ``data/judge_eval/fresh_templates4.json``, written blind to the judge's rules and
scores (56 sentences with restart-like words, 4 letters, 6 answers, 14 acknowledgements). A written sentence or
letter for a prompt none of whose unsteered answers (seeds 0-2) was labelled on topic has no answer to go into
and is left out.

Usage: ``python scripts/build_fresh_heldout.py [--split heldout|heldout3|heldout4]`` (no model, no judge;
deterministic).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from build_judge_set import _SENTENCE, complete_sentences, head  # noqa: E402

from esr_analysis.files import atomic_write_text  # noqa: E402

EVAL = REPO / "data" / "judge_eval"
OUT = EVAL / "heldout_fresh.jsonl"
SPLITS = {  # split name -> (templates, output, item id prefix)
    "heldout": (EVAL / "fresh_templates.json", OUT, "fresh"),
    "heldout3": (EVAL / "fresh_templates3.json", EVAL / "heldout3.jsonl", "h3"),
    "heldout4": (EVAL / "fresh_templates4.json", EVAL / "heldout4.jsonl", "h4"),
}
N_MISMATCHED = 12
N_DRIFT_RESTARTS = 14
N_DEGENERATE_RESTARTS = 5
DEGENERATE_CHARS = 160
DRIFT_CHARS = 150
REAL_RESTART_CUT = "I apologize from misunderstanding"


def _cut_at_space(text: str, n: int) -> str:
    text = text.strip()
    if len(text) <= n:
        return text
    cut = text.rfind(" ", 0, n)
    return text[: cut if cut > 0 else n].rstrip()


def insert_after_sentence(answer: str, sentence: str, n: int = 2) -> str:
    """``answer`` with ``sentence`` inserted after its ``n``-th complete sentence (or line) of at least three
    words (a bare list number such as "1." is not a sentence), the answer's own layout kept; a sentence
    starting with a newline (a list) is inserted at the end of that line."""
    matches = [m for m in _SENTENCE.finditer(answer) if len(m.group(0).split()) >= 3]
    cut = matches[min(n, len(matches)) - 1].end() if matches else len(answer)
    if sentence.startswith("\n"):
        line_end = answer.find("\n", cut)
        cut = len(answer) if line_end < 0 else line_end
        return f"{answer[:cut]}{sentence.rstrip()}{answer[cut:]}".strip()
    return f"{answer[:cut]} {sentence}{answer[cut:]}".strip()


def off_topic_passage(text: str, min_chars: int = DRIFT_CHARS) -> str:
    """The first complete sentences (or lines) of ``text`` up to at least ``min_chars`` characters, so that a
    passage that opens by echoing the prompt also holds its drift."""
    out: list[str] = []
    for s in complete_sentences(text):
        out.append(s)
        if len(" ".join(out)) >= min_chars:
            break
    return " ".join(out) if out else text.strip()


def build(split: str = "heldout") -> list[dict]:
    """The items of held-out ``split`` (a key of :data:`SPLITS`), in a fixed order."""
    templates, _, prefix = SPLITS[split]
    rows = [json.loads(line) for line in (EVAL / "steered_runs.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    held = [r for r in rows if r["split"] == split]
    tpl = json.loads(templates.read_text(encoding="utf-8"))
    steered = [r for r in held if r["condition"] != "no_steering"]
    labels = sorted({r["latent_label"] for r in steered if r["latent_label"]})
    answers: dict[str, dict] = {}
    for r in held:
        if r["condition"] == "no_steering" and r["label"] == "ontopic":
            answers.setdefault(r["prompt"], r)
    prompts = list(answers)
    items: list[dict] = []

    def add(category: str, prompt: str, response: str, attempts: list[tuple[str, bool]], label: str,
            source: dict) -> None:
        items.append({"id": f"{prefix}-{category}-{len(items):04d}", "split": prefix, "category": category,
                      "prompt_index": None, "prompt": prompt, "response": response, "latent_label": label,
                      "n_attempts": len(attempts), "attempts": [{"text": t, "on_topic": on} for t, on in attempts],
                      "source": source})

    for n, p in enumerate(prompts):
        text = answers[p]["response"].strip()
        add("on_topic", p, text, [(text, True)], labels[n % len(labels)], {"run": answers[p]["key"]})
    for k, t in enumerate(tpl["restart_words"]):
        p = next((q for q in prompts if t["for"] in q.lower()), None)
        if p is None:  # heldout4: no unsteered answer to that prompt was labelled on topic (see the docstring)
            continue
        resp = insert_after_sentence(answers[p]["response"].strip(), t["text"])
        add("restart_words", p, resp, [(resp, True)], labels[k % len(labels)],
            {"run": answers[p]["key"], "template": f"fresh-words-{k}", "kind": t["kind"]})
    email = [p for p in prompts if "email" in p.lower()]
    for k, t in enumerate(tpl["letters"]):
        p = next((q for q in prompts if t["for"] in q.lower()), None) if "for" in t else email[k % len(email)]
        if p is None:
            continue
        resp = answers[p]["response"].strip() + t["text"]
        add("restart_words", p, resp, [(resp, True)], labels[k % len(labels)],
            {"run": answers[p]["key"], "template": f"fresh-letter-{k}", "kind": t["kind"]})
    for k, t in enumerate(tpl["written_answers"]):
        add("restart_words", t["prompt"], t["text"], [(t["text"], True)], labels[(k + 3) % len(labels)],
            {"template": f"fresh-answer-{k}", "kind": t["kind"]})
    for n in range(N_MISMATCHED):
        p, other = prompts[n], prompts[(n + 5) % len(prompts)]
        text = answers[other]["response"].strip()
        add("mismatched", p, text, [(text, False)], labels[n % len(labels)], {"run": answers[other]["key"]})
    category = {"offtopic": "drift", "degenerate": "degenerate", "ontopic": "steered_on_topic"}
    for r in steered:
        text = r["response"].strip()
        if r["label"] in category:
            add(category[r["label"]], r["prompt"], text, [(text, r["label"] == "ontopic")],
                r["latent_label"], {"run": r["key"]})
        elif r["label"] == "restart":
            cut = text.index(r.get("cut", REAL_RESTART_CUT))
            add("restart", r["prompt"], text, [(text[:cut].strip(), False), (text[cut:].strip(), True)],
                r["latent_label"], {"run": r["key"], "kind": "real"})
    acks = tpl["acknowledgements"]
    made = {"offtopic": 0, "degenerate": 0}
    limit = {"offtopic": N_DRIFT_RESTARTS, "degenerate": N_DEGENERATE_RESTARTS}
    for r in steered:
        lab = r["label"]
        if lab not in made or made[lab] >= limit[lab] or r["prompt"] not in answers:
            continue
        off = off_topic_passage(r["response"]) if lab == "offtopic" else _cut_at_space(r["response"], DEGENERATE_CHARS)
        ack = acks[(made["offtopic"] + made["degenerate"]) % len(acks)]
        on = head(answers[r["prompt"]]["response"], 3)
        add("restart", r["prompt"], f"{off} {ack} {on}", [(off, False), (f"{ack} {on}", True)], r["latent_label"],
            {"runs": [r["key"], answers[r["prompt"]]["key"]], "acknowledgement": ack, "kind": lab})
        made[lab] += 1
    return items


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=sorted(SPLITS), default="heldout")
    split = ap.parse_args(argv).split
    items = build(split)
    out = SPLITS[split][1]
    atomic_write_text(out, "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items))
    from collections import Counter

    print(f"{len(items)} items -> {out}")
    for cat, n in sorted(Counter(it["category"] for it in items).items()):
        print(f"  {cat:18s} {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
