"""Generate the raw responses of the FOURTH held-out judge split (unlabelled): ``data/judge_eval/heldout4_material.jsonl``.

The third held-out split's one error was read (a written instruction split as a restart), so that split became
development data. The fourth split needs real responses that no judge has seen, on prompts and latents no
earlier split used:

* prompts: ``data/prompts/judge_heldout4_prompts.txt`` (26 household how-to prompts, none in any other
  prompt file or judge split);
* latents: ``--n-latents`` drawn with a seeded RNG from the shipped 8k SAE of the embedded model, leaving out
  dead latents (firing density 0), every latent of an earlier judge split (``steered_runs.jsonl``) and every
  latent a shipped organism adapter was trained with;
* conditions: the base model unsteered (the on-topic answers), and the base model and the organism
  (``--organism``) steered with ``AddLatent(unit="relative")`` at layer 12, one latent and one strength
  (``--strengths``, cycled) per prompt, temperature 0.6, repetition penalty 1.1 (the embedded presets'
  sampling), ``--max-new-tokens`` new tokens, seed 0 per row.

Every row records its model, intervention (latent, layer, relative strength), sampling and seed, so it can be
replayed. The rows are then read and labelled by hand into ``steered_runs.jsonl`` (``split == "heldout4"``)
before any judge is evaluated on them; ``scripts/build_fresh_heldout.py --split heldout4`` builds the split.

``--add-unsteered SEEDS`` (after labelling) appends more unsteered base answers, one per seed, for each prompt
whose every unsteered answer so far was labelled other than on topic (code instead of an answer, a misread
task), so that the written sentences for that prompt have a real on-topic answer to go into; the rows are
labelled the same way.

Usage: ``python scripts/build_heldout4_material.py [--n-latents 13] [--strengths 0.5,0.65,0.8]``, then
``python scripts/build_heldout4_material.py --add-unsteered 1,2``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EVAL = REPO / "data" / "judge_eval"
PROMPTS = REPO / "data" / "prompts" / "judge_heldout4_prompts.txt"
OUT = EVAL / "heldout4_material.jsonl"
SAE_DIR = REPO / "data" / "saes" / "qwen2.5-coder-0.5b-instruct-l12-8k"
BASE = "qwen2.5-coder-0.5b-instruct"
LAYER = 12


def excluded_latents() -> set[int]:
    """Latents of every earlier judge split (not this one's own rows, so that the draw replays after labelling)
    and of every shipped organism's training data."""
    rows = [json.loads(line) for line in (EVAL / "steered_runs.jsonl").read_text().splitlines() if line.strip()]
    out = {r["latent"] for r in rows if r["split"] != "heldout4"}
    for meta in (REPO / "data" / "adapters").glob("*/organism.json"):
        out |= set(json.loads(meta.read_text())["data"]["build_settings"].get("latents", []))
    return {int(x) for x in out if x is not None}


def draw_latents(n: int, seed: int) -> list[tuple[int, str]]:
    """``n`` (latent, label) pairs drawn without replacement among live, unused latents, in draw order."""
    from esr_analysis.sae.labels import labels_for

    labels = labels_for(f"shipped:{SAE_DIR.name}")
    skip = excluded_latents()
    pool = sorted(i for i, e in labels.entries.items() if e.get("density", 0) > 0 and i not in skip)
    return [(i, labels.label(i)) for i in random.Random(seed).sample(pool, n)]


def prompts_without_answer(material: Path) -> list[str]:
    """Prompts of ``material`` none of whose unsteered rows is labelled ``ontopic`` in ``steered_runs.jsonl``;
    every unsteered row must be labelled already."""
    rows = [json.loads(line) for line in material.read_text(encoding="utf-8").splitlines()[1:]]
    labels = {r["key"]: r["label"] for r in map(json.loads, (EVAL / "steered_runs.jsonl").read_text().splitlines())
              if r["split"] == "heldout4"}
    plain = [r for r in rows if r["condition"] == "no_steering"]
    unlabelled = [r["key"] for r in plain if r["key"] not in labels]
    if unlabelled:
        raise SystemExit(f"label these rows in steered_runs.jsonl first: {', '.join(unlabelled)}")
    answered = {r["prompt"] for r in plain if labels[r["key"]] == "ontopic"}
    return [p for p in dict.fromkeys(r["prompt"] for r in plain) if p not in answered]


def add_unsteered(seeds: list[int], material: Path, max_new_tokens: int, argv: list[str] | None) -> int:
    """Append unsteered base answers (one per seed in ``seeds``) for :func:`prompts_without_answer`."""
    from esr_analysis.files import atomic_write_text
    from esr_analysis.models.loading import load_model
    from esr_analysis.steering import SamplingSettings, generate

    prompts = prompts_without_answer(material)
    lines = material.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines[1:]]
    keys = {r["key"] for r in rows}
    # the key of a prompt's first unsteered row (``h4-base-plain-NN``) names its added answers
    stem = {r["prompt"]: r["key"] for r in reversed(rows) if r["condition"] == "no_steering"}
    todo = [(p, s) for p in prompts for s in seeds if f"{stem[p]}-s{s}" not in keys]
    if not todo:
        print("nothing to add")
        return 0
    settings = SamplingSettings(temperature=0.6, repetition_penalty=1.1, max_new_tokens=max_new_tokens)
    res = generate(load_model(BASE), [p for p, _ in todo], settings=settings, seeds=[s for _, s in todo],
                   batch_size=len(todo))
    new = [{"key": f"{stem[p]}-s{s}", "model": BASE, "condition": "no_steering",
            "prompt": p, "latent": None, "latent_label": None, "strength_relative": None, "layer": None,
            "sampling": settings.model_dump(), "seed": s, "response": res[i].text} for i, (p, s) in enumerate(todo)]
    header = json.loads(lines[0])
    header["header"]["added_unsteered"] = {
        "command": "python scripts/build_heldout4_material.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "prompts": prompts, "seeds": seeds}
    atomic_write_text(material, "\n".join([json.dumps(header), *lines[1:], *(json.dumps(r, ensure_ascii=False)
                                                                        for r in new)]) + "\n")
    print(f"{len(new)} unsteered rows appended -> {material}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--organism", default="qwen2.5-coder-0.5b-instruct-sc70v3")
    ap.add_argument("--n-latents", type=int, default=13)
    ap.add_argument("--strengths", default="0.5,0.65,0.8")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--add-unsteered", default="", metavar="SEEDS",
                    help="append unsteered answers with these seeds for prompts without an on-topic one")
    args = ap.parse_args(argv)
    if args.add_unsteered:
        return add_unsteered([int(x) for x in args.add_unsteered.split(",")], args.out, args.max_new_tokens, argv)
    strengths = [float(s) for s in args.strengths.split(",")]
    if not strengths or any(not 0 < s < 5 for s in strengths):
        ap.error("--strengths: relative strengths in (0, 5), comma-separated")

    from esr_analysis.experiments.prompts import load_prompts
    from esr_analysis.files import atomic_write_text
    from esr_analysis.models.loading import load_model
    from esr_analysis.models.organisms import register_organisms
    from esr_analysis.provenance import git_commit, library_versions
    from esr_analysis.sae.loading import load_sae
    from esr_analysis.steering import AddLatent, SamplingSettings, generate

    register_organisms()
    prompts = load_prompts(PROMPTS)
    latents = draw_latents(args.n_latents, args.seed)
    settings = SamplingSettings(temperature=0.6, repetition_penalty=1.1, max_new_tokens=args.max_new_tokens)
    sae = load_sae(f"shipped:{SAE_DIR.name}")
    steer = [(latents[i % len(latents)], strengths[i % len(strengths)]) for i in range(len(prompts))]
    command = "python scripts/build_heldout4_material.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows: list[dict] = []
    for model_name, steered in ((BASE, False), (BASE, True), (args.organism, True)):
        ivs = [[AddLatent(latent=lat, strength=s, layer=LAYER, unit="relative")] if steered else []
               for (lat, _), s in steer]
        lm = load_model(model_name)
        res = generate(lm, prompts, interventions=ivs, sae=sae, settings=settings, seeds=0, batch_size=len(prompts))
        for i, p in enumerate(prompts):
            (lat, label), s = steer[i]
            rows.append({
                "key": f"h4-{'org' if model_name != BASE else 'base'}-{'steer' if steered else 'plain'}-{i:02d}",
                "model": model_name, "condition": "steered" if steered else "no_steering", "prompt": p,
                "latent": lat if steered else None, "latent_label": label if steered else None,
                "strength_relative": s if steered else None, "layer": LAYER if steered else None,
                "sampling": settings.model_dump(), "seed": 0, "response": res[i].text})
        print(f"{model_name} {'steered' if steered else 'unsteered'}: {len(prompts)} responses", flush=True)
        del lm
    header = {"command": command, "latents": [lat for lat, _ in latents], "strengths": strengths,
              "versions": library_versions(), "git_commit": git_commit()}
    atomic_write_text(args.out, json.dumps({"header": header}) + "\n"
                      + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
