"""Build the labelled judge set ``data/judge_eval/judge_set.jsonl`` (offline judge v2 evaluation data).

Two stages, both resumable and both writing atomically:

1. ``generate``: the embedded model (Qwen2.5-Coder-0.5B-Instruct, shipped SAE at block 12) answers the
   prompts of ``data/prompts/judge_prompts.txt`` (disjoint from the evaluation prompts
   ``data/prompts/esr_prompts.txt``) unsteered and steered at a high strength (:data:`HIGH`, relative to
   the median residual norm), and some prompts also at a modest strength (:data:`MODEST`), in blocks of
   prompts (:func:`planned_rows`); temperature 0.6, repetition penalty 1.1, :data:`MAX_NEW_TOKENS` new tokens
   (:data:`HIGH_MAX_NEW_TOKENS` at high strength, where text degenerates within a few words). Raw rows go to
   ``data/judge_eval/generations.jsonl``; rows already there are not generated again.
2. ``assemble``: builds the labelled items from the generations, the hand labels
   (``data/judge_eval/hand_labels.json``: each steered output read and labelled degenerate / off-topic /
   on-topic / excluded; unsteered answers are on-topic unless labelled otherwise) and the written templates
   (``data/judge_eval/templates.json``). Per prompt ``i`` of a split, with ``j`` and ``k`` the next two prompts of
   the same split (among those with an answer):

   * ``on_topic``: the unsteered answer to ``i`` (1 attempt, on topic);
   * ``mismatched``: the unsteered answers to ``j`` and ``k`` (the next two prompts of the split) given for
     ``i`` (1 attempt each, off topic);
   * ``restart_words``: the answer to ``i`` with one ordinary sentence with restart-like words inserted after
     its first sentence, :data:`WORDS_PER_ANSWER` per prompt (1 attempt, on topic; never a restart);
   * ``restart``: two sentences of the answer to ``j`` (and to ``k``), an acknowledgement (strong or weak),
     three sentences of the answer to ``i`` (2 attempts: off topic, on topic); and for each degenerate
     steered output, that output, a strong acknowledgement and the answer to ``i``;
   * ``degenerate`` / ``drift`` / ``steered_on_topic``: the steered outputs by their hand label (1 attempt).

   Every item stores its attempts' texts and on-topic flags, its split and its sources.

Every item of this file is **development data** (``split == "train"``). The prompt-level held-out split it
first had (prompt ``i`` with ``i % 3 == 2``, with its own templates) was looked at while analysing the
judge, so its items moved to the development split (they carry ``source.was_heldout``). The development
split also holds the real steered responses of the development latents (1618, 7808, 1649, 6311 and the
regime study's latent 115) labelled in ``data/judge_eval/steered_runs.jsonl`` (``drift`` /
``degenerate`` / ``steered_on_topic``). The held-out split is now ``data/judge_eval/heldout_fresh.jsonl``
(``scripts/build_fresh_heldout.py``), written before the final judge was evaluated.

Usage: ``python scripts/build_judge_set.py generate`` then ``python scripts/build_judge_set.py assemble``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from esr_analysis.files import atomic_write_text  # noqa: E402

OUT = REPO / "data" / "judge_eval"
PROMPTS = REPO / "data" / "prompts" / "judge_prompts.txt"
GENERATIONS = OUT / "generations.jsonl"
MAX_NEW_TOKENS = 64
HIGH_MAX_NEW_TOKENS = 40
MODEST = 0.6
HIGH = 2.0
LAYER = 12
SAE_SOURCE = "shipped:qwen2.5-coder-0.5b-instruct-l12"
# concrete latents of the shipped SAE (label in data/saes/.../labels.jsonl.gz)
LATENTS: tuple[int, ...] = (115, 551, 1992, 2959, 7360, 2543, 6726, 4094)
SEED = 20261203
BLOCK = 20
WORDS_PER_ANSWER = 7


def read_prompts() -> list[str]:
    prompts = [p.strip() for p in PROMPTS.read_text(encoding="utf-8").splitlines() if p.strip()]
    evaluation = set((REPO / "data" / "prompts" / "esr_prompts.txt").read_text(encoding="utf-8").splitlines())
    overlap = evaluation.intersection(prompts)
    if overlap:
        raise SystemExit(f"judge prompts overlap the evaluation prompts: {sorted(overlap)}")
    return prompts


def is_heldout(prompt_index: int) -> bool:
    """Prompt-level split: every third prompt (index % 3 == 2) is held out."""
    return prompt_index % 3 == 2


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def latent_labels() -> dict[int, str]:
    """Labels of :data:`LATENTS` from the shipped SAE's ``labels.jsonl.gz``."""
    import gzip

    path = REPO / "data" / "saes" / "qwen2.5-coder-0.5b-instruct-l12-8k" / "labels.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = (json.loads(line) for line in fh)
        return {int(r["index"]): str(r["label"]) for r in rows if int(r["index"]) in LATENTS}


def planned_rows(prompts: list[str]) -> list[dict]:
    """The rows to generate, in the order they are generated: prompts in blocks of :data:`BLOCK`, each block
    unsteered then high-strength; then modest-strength rows for every third prompt. (On a loaded CPU the
    run can stop after any block and still give complete, matched data for the prompts it covers.)"""
    rows = []
    for lo in range(0, len(prompts), BLOCK):
        block = range(lo, min(lo + BLOCK, len(prompts)))
        rows += [{"key": f"p{i:02d}-unsteered", "prompt_index": i, "prompt": prompts[i], "condition": "unsteered",
                  "latent": None, "strength": 0.0} for i in block]
        rows += [{"key": f"p{i:02d}-high", "prompt_index": i, "prompt": prompts[i], "condition": "high",
                  "latent": LATENTS[(i + 3) % len(LATENTS)], "strength": HIGH} for i in block]
    rows += [{"key": f"p{i:02d}-modest", "prompt_index": i, "prompt": prompts[i], "condition": "modest",
              "latent": LATENTS[i % len(LATENTS)], "strength": MODEST}
             for i in range(len(prompts)) if (i // 3) % 3 == 0]
    return rows


def read_generations() -> dict[str, dict]:
    """Every generated row, from ``generations.jsonl`` and its per-condition siblings
    ``generations-<condition>.jsonl`` (written by ``generate --condition``)."""
    rows: dict[str, dict] = {}
    for path in sorted(OUT.glob("generations*.jsonl")):
        rows.update((r["key"], r) for r in read_jsonl(path))
    return rows


def generate(batch_size: int, condition: str | None = None, limit: int | None = None) -> None:
    import esr_analysis as esr

    prompts = read_prompts()
    out_path = GENERATIONS if condition is None else OUT / f"generations-{condition}.jsonl"
    present = read_generations()
    done = {r["key"]: r for r in read_jsonl(out_path)}
    todo = [r for r in planned_rows(prompts) if r["key"] not in present
            and (condition is None or r["condition"] == condition)][:limit]
    print(f"{len(done)} generations present, {len(todo)} to generate", flush=True)
    if not todo:
        return
    lm = esr.load_model()
    sae = esr.load_sae(SAE_SOURCE)
    labels = latent_labels()
    batches: list[list[dict]] = []
    for r in todo:  # batches of one condition (the token budget differs by condition)
        if batches and len(batches[-1]) < batch_size and batches[-1][0]["condition"] == r["condition"]:
            batches[-1].append(r)
        else:
            batches.append([r])
    for n, chunk in enumerate(batches, start=1):
        max_new = HIGH_MAX_NEW_TOKENS if chunk[0]["condition"] == "high" else MAX_NEW_TOKENS
        settings = esr.SamplingSettings(temperature=0.6, repetition_penalty=1.1, max_new_tokens=max_new)
        steers = [
            [] if r["latent"] is None
            else [esr.AddLatent(latent=r["latent"], strength=r["strength"], layer=LAYER, unit="relative")]
            for r in chunk
        ]
        seeds = [SEED + 1000 * r["prompt_index"] + ("unsteered", "modest", "high").index(r["condition"]) for r in chunk]
        t0 = time.monotonic()
        results = esr.generate(lm, [r["prompt"] for r in chunk], interventions=steers, sae=sae, settings=settings,
                               seeds=seeds, batch_size=batch_size, progress=False)
        for r, res, seed in zip(chunk, results, seeds, strict=True):
            done[r["key"]] = {**r, "seed": seed, "text": res.text,
                              "latent_label": labels.get(r["latent"]) if r["latent"] is not None else None,
                              "max_new_tokens": max_new, "temperature": 0.6, "repetition_penalty": 1.1}
        atomic_write_text(out_path, "".join(json.dumps(done[k]) + "\n" for k in sorted(done)))
        print(f"batch {n}/{len(batches)}: {len(chunk)} {chunk[0]['condition']} rows in {time.monotonic() - t0:.0f}s",
              flush=True)


_SENTENCE = re.compile(r"[^.!?\n]*[.!?]+(?=\s|$)|[^\n]+(?=\n)")


def complete_sentences(text: str) -> list[str]:
    """The text's complete sentences (ending in ``.``, ``!`` or ``?``, or a whole line), in order, stripped;
    a trailing fragment cut by the token limit is dropped."""
    return [m.group(0).strip() for m in _SENTENCE.finditer(text) if m.group(0).strip()]


def head(text: str, n: int) -> str:
    """The first ``n`` complete sentences joined by spaces (the text itself when it has none)."""
    parts = complete_sentences(text)
    return " ".join(parts[:n]) if parts else text.strip()


def insert_after_first_sentence(answer: str, sentence: str) -> str:
    """``answer`` with ``sentence`` inserted after its first complete sentence."""
    m = _SENTENCE.search(answer)
    cut = m.end() if m else len(answer)
    joiner = "" if sentence.startswith("\n") else " "
    return f"{answer[:cut].rstrip()}{joiner}{sentence}{joiner}{answer[cut:].lstrip()}".strip()


def assemble() -> None:
    """Stage 2: the labelled items (module docstring) from the generations, hand labels and templates."""
    prompts = read_prompts()
    gens = read_generations()
    hand = json.loads((OUT / "hand_labels.json").read_text(encoding="utf-8"))["labels"]
    templates = json.loads((OUT / "templates.json").read_text(encoding="utf-8"))
    labels = latent_labels()

    def label_of(key: str) -> str:
        return hand.get(key, {}).get("label", "ontopic" if key.endswith("unsteered") else "unlabelled")

    items: list[dict] = []

    def add(category: str, i: int, response: str, attempts: list[tuple[str, bool]], label: str, source: dict) -> None:
        source = {**source, "was_heldout": True} if is_heldout(i) else source
        items.append({"id": f"{category}-{len(items):04d}", "split": "train",
                      "category": category, "prompt_index": i, "prompt": prompts[i], "response": response,
                      "latent_label": label, "n_attempts": len(attempts),
                      "attempts": [{"text": t, "on_topic": on} for t, on in attempts], "source": source})

    for split in ("train", "heldout"):
        idx = [i for i in range(len(prompts)) if ("heldout" if is_heldout(i) else "train") == split]
        answers = [i for i in idx if f"p{i:02d}-unsteered" in gens and label_of(f"p{i:02d}-unsteered") == "ontopic"]
        words = templates["restart_words"][split]
        acks = templates["acknowledgements"][split]
        ack_list = [(a, "strong") for a in acks["strong"]] + [(a, "weak") for a in acks["weak"]]
        for n, i in enumerate(answers):
            text = gens[f"p{i:02d}-unsteered"]["text"].strip()
            label = labels[LATENTS[i % len(LATENTS)]]
            add("on_topic", i, text, [(text, True)], label, {"generation": f"p{i:02d}-unsteered"})
            for k in range(WORDS_PER_ANSWER):
                t = (WORDS_PER_ANSWER * n + k) % len(words)
                resp = insert_after_first_sentence(text, words[t])
                add("restart_words", i, resp, [(resp, True)], label, {"generation": f"p{i:02d}-unsteered",
                                                                       "template": f"{split}-words-{t}"})
            for k in (1, 2):  # two other answers of the same split: mismatched, and the start of a restart
                other = answers[(n + k) % len(answers)]
                other_text = gens[f"p{other:02d}-unsteered"]["text"].strip()
                add("mismatched", i, other_text, [(other_text, False)], label,
                    {"generation": f"p{other:02d}-unsteered"})
                a = (2 * n + k) % len(ack_list)
                ack, kind = ack_list[a]
                off, on = head(other_text, 2), head(text, 3)
                add("restart", i, f"{off} {ack} {on}", [(off, False), (f"{ack} {on}", True)], label,
                    {"generations": [f"p{other:02d}-unsteered", f"p{i:02d}-unsteered"],
                     "acknowledgement": ack, "kind": kind})
        for i in idx:
            for condition in ("high", "modest"):
                key = f"p{i:02d}-{condition}"
                if key not in gens:
                    continue
                g, lab = gens[key], label_of(key)
                text = g["text"].strip()
                if lab == "degenerate":
                    add("degenerate", i, text, [(text, False)], g["latent_label"], {"generation": key})
                    if i in answers:  # a degenerate first attempt, then a strong restart and an answer
                        ack = acks["strong"][i % len(acks["strong"])]
                        on = head(gens[f"p{i:02d}-unsteered"]["text"], 3)
                        add("restart", i, f"{text} {ack} {on}", [(text, False), (f"{ack} {on}", True)],
                            g["latent_label"], {"generations": [key, f"p{i:02d}-unsteered"],
                                                "acknowledgement": ack, "kind": "strong"})
                elif lab == "offtopic":
                    add("drift", i, text, [(text, False)], g["latent_label"], {"generation": key})
                elif lab == "ontopic":
                    add("steered_on_topic", i, text, [(text, True)], g["latent_label"], {"generation": key})
    category = {"offtopic": "drift", "degenerate": "degenerate", "ontopic": "steered_on_topic"}
    for r in read_jsonl(OUT / "steered_runs.jsonl"):  # real steered text of the development latents
        if r["split"] == "train" and r["label"] in category:
            text = r["response"].strip()
            items.append({"id": f"{category[r['label']]}-{len(items):04d}", "split": "train",
                          "category": category[r["label"]], "prompt_index": None, "prompt": r["prompt"],
                          "response": text, "latent_label": r["latent_label"] or labels.get(r["latent"], ""), "n_attempts": 1,
                          "attempts": [{"text": text, "on_topic": r["label"] == "ontopic"}],
                          "source": {"run": r["key"]}})
    body = "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items)
    atomic_write_text(OUT / "judge_set.jsonl", body)
    from collections import Counter

    counts = Counter((it["category"], it["split"]) for it in items)
    print(f"{len(items)} items -> {OUT / 'judge_set.jsonl'}")
    for (cat, split), n in sorted(counts.items()):
        print(f"  {cat:18s} {split:8s} {n}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("generate", "assemble"))
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--condition", choices=("unsteered", "high", "modest"),
                        help="generate only this condition's rows (into generations-<condition>.jsonl)")
    parser.add_argument("--limit", type=int, help="generate at most this many rows")
    args = parser.parse_args(argv)
    if args.stage == "generate":
        generate(args.batch_size, args.condition, args.limit)
    else:
        assemble()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
