"""Harvest recovery episodes from a model organism: exp 1 (steered) only, more trials than the evaluation.

The mechanism studies (``scripts/anatomy_study.py``, ``scripts/export_recoveries.py`` ->
``scripts/attribution_study.py``) need tens of recoveries; the matched evaluation
(``scripts/evaluate_organism.py``) gives a handful. This runs the same preset and the same latents as the
evaluation (read from its ``eval_latents.json``) on more prompts per latent with a different seed, so its
trials are new samples; thresholds are searched again for this seed. Nothing here is reported as an ESR rate
of the organism (that is ``eval.json``); the run is a source of episodes.

    python scripts/organism_episodes.py --organism qwen2.5-coder-0.5b-instruct-sc70v3 \
        --eval-runs runs/organism-eval-v3 --n-prompts-per-latent 10 --seed 1 --runs runs/organism-episodes
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--organism", required=True)
    ap.add_argument("--eval-runs", type=Path, required=True, help="the evaluation's --runs (its eval_latents.json)")
    ap.add_argument("--prompts", default="esr")
    ap.add_argument("--n-prompts-per-latent", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--judge", default="offline")
    ap.add_argument("--runs", type=Path, default=Path("runs") / "organism-episodes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sel = args.eval_runs / args.organism / "eval_latents.json"
    if not sel.is_file():
        raise SystemExit(f"{sel} not found: run scripts/evaluate_organism.py first (it draws the latents)")
    latents = [int(i) for i in json.loads(sel.read_text())["latents"]]

    from esr_analysis.experiments.config import load_config
    from esr_analysis.experiments.pipeline import run_pipeline

    cfg = {"name": "organism-episodes", "model": args.organism, "prompts": args.prompts, "experiments": ["exp1"],
           "judge": args.judge, "n_prompts_per_latent": args.n_prompts_per_latent,
           "max_new_tokens": args.max_new_tokens, "seed": args.seed,
           "selection": {"latents": latents, "n_latents": len(latents), "relevance_rule": "none"}}
    res = run_pipeline(load_config("embedded-demo", cfg), run_dir=args.runs / args.organism)
    print(f"exp1 trials in {res.experiments['exp1']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
