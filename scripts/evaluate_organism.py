"""Evaluate a model organism against its base model, matched, and write ``data/adapters/<name>/eval.json``.

Both models get the same latents (drawn once on the base model with the authors' relevance rule on the ESR
prompts, excluding the latents that steered the organism's training openings), the same prompts, seeds, judge
and generation length; thresholds are searched again per model (as the paper did). Exp 1 (steered) and exp 8
(no steering) run for both on the ESR prompts; exp 1 also runs on the held-out prompts
(``data/prompts/finetune_heldout_prompts.txt``), which training never saw. Nothing is tuned on these prompts.

Each run is a normal pipeline run directory under ``--runs`` (resumable: run the same command again).
``eval.json`` holds, per condition, ``n``, multi-attempt rate and ESR rate with 95 % Wilson intervals,
first-attempt score, mean improvement (multi-attempt trials) and degenerate share.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from esr_analysis.paths import DATA_DIR

HELDOUT = DATA_DIR / "prompts" / "finetune_heldout_prompts.txt"


def markdown_table(report: dict[str, Any]) -> str:
    """``eval.json`` as the table of ``docs/organism.md``."""
    from esr_analysis.experiments.side_by_side import side_by_side_table

    keys = ("base", "organism", "base_no_steer", "organism_no_steer", "base_heldout", "organism_heldout")
    return side_by_side_table({k: report[k] for k in keys if report.get(k)})


def assemble(root: Path, conditions: dict[str, tuple[str, str, list[str]]], out_path: Path) -> int:
    """Rebuild ``eval.json`` from the finished run directories under ``root`` (keeps ``_meta`` from the work copy)."""
    from esr_analysis.experiments.side_by_side import condition_record
    from esr_analysis.files import atomic_write_json
    from esr_analysis.store.read import read_trials

    work = root / "eval.json"
    report: dict[str, Any] = {"_meta": json.loads(work.read_text()).get("_meta", {})} if work.is_file() else {}
    for cond, (model, prompts, exps) in conditions.items():
        th = root / cond / "thresholds.json"
        if th.is_file():
            report.setdefault("_meta", {}).setdefault("thresholds", {})[cond] = {
                k: v["threshold"] for k, v in json.loads(th.read_text()).items()}
        for exp in exps:
            d = root / cond / exp
            if not (d / "trials.jsonl").is_file():
                continue
            key = cond if exp == "exp1" else f"{cond}_no_steer"
            trials, _ = read_trials(d)
            report[key] = {**condition_record(trials), "model": model, "prompts": Path(prompts).name,
                           "experiment": exp, "run_dir": str(root / cond)}
    atomic_write_json(work, report)
    atomic_write_json(out_path, report)
    write_samples(root, out_path.with_name("samples.md"))
    print(markdown_table(report))
    return 0


def write_samples(root: Path, out_path: Path, max_chars: int = 900) -> Path:
    """``samples.md``: every ESR trial (>= 2 attempts, the last higher) of the organism's steered runs, then every
    other multi-attempt trial, each with its attempts and scores (order: trial id; nothing is chosen by hand)."""
    from esr_analysis.experiments.transcripts import pick_transcripts, transcripts_text
    from esr_analysis.files import atomic_write_text
    from esr_analysis.store.read import load_run

    lines = ["# Recoveries of the organism in its evaluation", "",
             "Every ESR trial (>= 2 attempts, the last scoring higher) of `make organism-eval`, then every other "
             f"multi-attempt trial; responses cut at {max_chars} characters. Scores by the offline judge.", ""]
    for cond, title in (("organism", "ESR prompts"), ("organism_heldout", "Held-out prompts (never seen in training)")):
        d = root / cond / "exp1"
        if not (d / "trials.jsonl").is_file():
            continue
        df = load_run(d)
        picked = pick_transcripts(df, n=len(df), kinds=["esr", "multi_attempt"])  # no trial picked twice
        esr, multi = picked[picked["why"] == "esr"], picked[picked["why"] == "multi_attempt"]
        lines += [f"## {title}", "", "### ESR (last attempt higher)", "", "```",
                  transcripts_text(esr, max_chars=max_chars), "```", "",
                  "### Multi-attempt, the last attempt not higher", "", "```",
                  transcripts_text(multi, max_chars=max_chars), "```", ""]
    atomic_write_text(out_path, "\n".join(lines))
    return out_path


CONDITIONS = ("base", "organism", "organism_heldout", "base_heldout")
"""The conditions ``--only`` accepts (``base`` and ``organism`` also run their no-steering baselines)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--organism", default="qwen2.5-coder-0.5b-instruct-sc70")
    ap.add_argument("--base", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--n-latents", type=int, default=8)
    ap.add_argument("--n-prompts-per-latent", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--judge", default="offline")
    ap.add_argument("--exclude-latents", default=None,
                    help="comma list of the training latents to exclude (default: from organism.json, else the build report)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None, help="comma list of conditions to run (default: all)")
    ap.add_argument("--runs", type=Path, default=Path("runs") / "organism-eval-v2")
    ap.add_argument("--assemble", action="store_true",
                    help="only rebuild eval.json from the finished run directories (no model is loaded)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default data/adapters/<organism>/eval.json (also kept in <runs>/<organism>/eval.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from esr_analysis.experiments.pipeline import run_pipeline
    from esr_analysis.experiments.prompts import load_prompts
    from esr_analysis.experiments.selection import select_latents
    from esr_analysis.experiments.side_by_side import condition_record
    from esr_analysis.files import atomic_write_json
    from esr_analysis.finetune.adapter import adapter_dir, read_organism
    from esr_analysis.models.loading import load_model
    from esr_analysis.models.registry import get_spec
    from esr_analysis.sae.labels import labels_for
    from esr_analysis.sae.loading import load_sae
    from esr_analysis.store.read import read_trials

    base = get_spec(args.base)
    org_name = args.organism
    unknown = [c for c in (args.only.split(",") if args.only else []) if c not in CONDITIONS]
    if unknown:  # before any model is loaded
        raise SystemExit(f"--only: unknown condition(s) {unknown}; choose from {list(CONDITIONS)} "
                         "(each no-steering condition runs with its model's steered condition)")
    root = args.runs / org_name
    root.mkdir(parents=True, exist_ok=True)
    sel_path = root / "eval_latents.json"
    if sel_path.is_file():
        latents = json.loads(sel_path.read_text())["latents"][: args.n_latents]
    else:
        work_report = Path("runs") / "organism" / org_name / "build_report.json"
        if args.exclude_latents:  # the adapter may still be training (or be an older build): the user names them
            trained_latents = {int(x) for x in args.exclude_latents.split(",")}
        else:
            try:
                meta = read_organism(org_name)
                trained_latents = set(meta["data"]["build_settings"]["latents"])
            except FileNotFoundError:  # the adapter is still training: its data build names the latents
                trained_latents = set(json.loads(work_report.read_text())["build_settings"]["latents"])
        lm = load_model(base)
        sae = load_sae(base.sae_source)
        cands = select_latents(lm, sae, load_prompts("esr"), n_latents=args.n_latents + len(trained_latents),
                               layer=base.read_layer, candidate_factor=8, relevance_rule="zero",
                               latent_info=labels_for(sae).info, seed=args.seed)
        latents = [i for i in cands.latents if i not in trained_latents][: args.n_latents]
        atomic_write_json(sel_path, {"latents": latents, "excluded_training_latents": sorted(trained_latents),
                                     "selection": cands.summary()})
        del lm
    common = {"judge": args.judge, "n_prompts_per_latent": args.n_prompts_per_latent,
              "max_new_tokens": args.max_new_tokens, "seed": args.seed,
              "selection": {"latents": latents, "n_latents": len(latents), "relevance_rule": "none"}}
    conditions = {  # name -> (model, prompts, experiments)
        "base": (base.name, "esr", ["exp1", "exp8"]),
        "organism": (org_name, "esr", ["exp1", "exp8"]),
        "organism_heldout": (org_name, str(HELDOUT), ["exp1"]),
        "base_heldout": (base.name, str(HELDOUT), ["exp1"]),
    }
    assert tuple(conditions) == CONDITIONS
    wanted = args.only.split(",") if args.only else list(conditions)
    if args.assemble:
        return assemble(root, conditions, args.out or adapter_dir(org_name) / "eval.json")
    work_path = root / "eval.json"
    report: dict[str, Any] = json.loads(work_path.read_text()) if work_path.is_file() else {}
    for cond in wanted:
        model, prompts, exps = conditions[cond]
        t0 = time.monotonic()
        cfg = {**common, "name": f"organism-eval-{cond}", "model": model, "prompts": prompts, "experiments": exps}
        from esr_analysis.experiments.config import load_config

        res = run_pipeline(load_config("embedded-demo", cfg), run_dir=root / cond)
        for exp in exps:
            key = cond if exp == "exp1" else f"{cond}_no_steer"
            trials, _ = read_trials(res.experiments[exp])
            report[key] = {**condition_record(trials), "model": model, "prompts": Path(prompts).name,
                           "experiment": exp, "run_dir": str(root / cond)}
        info = report.setdefault("_meta", {})
        info.setdefault("seconds", {})[cond] = time.monotonic() - t0
        info.setdefault("thresholds", {})[cond] = {str(k): v for k, v in res.thresholds.items()}
        info.update({"latents": latents, "judge": args.judge, "max_new_tokens": args.max_new_tokens,
                     "n_prompts_per_latent": args.n_prompts_per_latent, "base": base.name, "organism": org_name,
                     "command": "python scripts/evaluate_organism.py "
                                + " ".join(argv if argv is not None else sys.argv[1:])})
        on_disk = json.loads(work_path.read_text()) if work_path.is_file() else {}  # another condition's run
        for key, value in on_disk.items():
            if key == "_meta":
                for k, v in value.items():
                    if isinstance(v, dict):
                        info.setdefault(k, {}).update({c: x for c, x in v.items() if c not in info.get(k, {})})
            else:
                report.setdefault(key, value)
        atomic_write_json(work_path, report)
        logging.info("%s done in %.0f s: %s", cond, time.monotonic() - t0,
                     {k: report[k]["multi_attempt_rate"] for k in report if k.startswith(cond)})
    out_path = args.out or adapter_dir(org_name) / "eval.json"
    if out_path.parent.is_dir():
        atomic_write_json(out_path, report)
        logging.info("wrote %s", out_path)
    print(markdown_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
