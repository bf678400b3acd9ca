"""The off-topic detector study for one model (issue 12): exp 1, discovery, exp 3 ablation, exp 10 matched null.

Steps (each resumable: the pipeline, the store runs and the generation/grade caches skip finished work):

1. exp 1 through the pipeline (``--preset`` with the size flags below) into ``--run-dir``;
2. discovery on the held-out prompts (``data/prompts/otd_discovery_prompts.txt``) at the model's read layer →
   ``data/detectors/<model>.json`` (+ ``<model>.profile.json.gz``); ``--rule`` with ``--fallback-rule`` when it
   selects nothing;
3. exp 3: a fixed seeded subset of ``--n-trials`` exp 1 trials replayed with the detectors ablated at the
   steering layer;
4. exp 10: ``--n-sets`` matched random sets replayed on the same subset;
5. the summary → ``data/results/detectors_<model>.json`` (with this command) and the Fig. 5-style figure.

Sizing on 2 CPU cores for the 0.5B model (about 20-30 min): the defaults (6 latents x 3 prompts, 64 new tokens,
20 discovery prompts with 96-token answers, 12 replayed trials x (1 + 20) ablated sets). Examples::

    python scripts/detectors_study.py --model qwen2.5-coder-0.5b-instruct
    python scripts/detectors_study.py --model qwen2.5-coder-0.5b-instruct-sc70
    python scripts/detectors_study.py --n-latents 2 --prompts-per-latent 2 --max-new-tokens 16 \\
        --discovery-prompts 4 --discovery-tokens 16 --n-trials 4 --n-sets 3 --out-root /tmp/smoke   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="registered model (base or organism)")
    p.add_argument("--preset", default="embedded-demo")
    p.add_argument("--judge", default=None, help="judge (default: the preset's)")
    p.add_argument("--n-latents", type=int, default=6)
    p.add_argument("--prompts-per-latent", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--discovery-prompts", type=int, default=20)
    p.add_argument("--discovery-tokens", type=int, default=96)
    p.add_argument("--n-derangements", type=int, default=3)
    p.add_argument("--rule", default="zero_on_topic")
    p.add_argument("--fallback-rule", default="ranked", help="used when --rule selects nothing ('' = none)")
    p.add_argument("--top-k", type=int, default=26)
    p.add_argument("--n-trials", type=int, default=12, help="exp 1 trials replayed per ablated set")
    p.add_argument("--n-sets", type=int, default=20)
    p.add_argument("--caliper", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0, help="discovery, subset and sampler seed")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra pipeline overrides")
    p.add_argument("--out-root", default=str(ROOT), help="where data/, runs/ and figures/ go (default: the repo)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import torch

    from esr_analysis.experiments.config import load_config
    from esr_analysis.experiments.pipeline import run_pipeline
    from esr_analysis.experiments.session import open_session
    from esr_analysis.mechanisms import detector_study as study
    from esr_analysis.plotting import fig5_detectors

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    args = parse(argv)
    command = "python scripts/detectors_study.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    root = Path(args.out_root)
    over = {"model": args.model, "n_prompts_per_latent": args.prompts_per_latent,
            "max_new_tokens": args.max_new_tokens, "selection.n_latents": args.n_latents,
            "batch_size": args.batch_size, "experiments": ["exp1"], "name": f"detectors-{args.model}",
            "output_dir": str(root / "runs")}
    if args.judge:
        over["judge"] = args.judge
    cfg = load_config(args.preset, over)
    cfg = load_config(cfg.model_dump(mode="json"), args.overrides or None)
    t0 = time.monotonic()
    session = open_session(cfg)
    res = run_pipeline(cfg, session=session, run_dir=root / "runs" / f"detectors-{args.model}")
    rd = res.run_dir
    print(f"exp 1: {rd} ({time.monotonic() - t0:.0f} s)", flush=True)
    det = root / "data" / "detectors" / f"{args.model}.json"
    det.parent.mkdir(parents=True, exist_ok=True)
    rec = study.discover_to_file(session.model, session.sae, det, model_name=args.model, layer=session.read_layer,
                                 n_prompts=args.discovery_prompts, max_new_tokens=args.discovery_tokens,
                                 rule=args.rule, fallback_rule=args.fallback_rule or None, top_k=args.top_k,
                                 n_derangements=args.n_derangements, seed=args.seed, batch_size=args.batch_size,
                                 command=command)
    print(f"discovery: {len(rec['off_topic_detectors'])} detectors ({rec['rule']}); per rule "
          + json.dumps({r: v["n"] for r, v in rec["rules"].items()}) + f" ({time.monotonic() - t0:.0f} s)", flush=True)
    if not rec["off_topic_detectors"]:
        print("no detectors: nothing to ablate", file=sys.stderr)
        return 1
    study.ablate_step(session, rd, det, n_trials=args.n_trials, subset_seed=args.seed)
    print(f"exp 3 done ({time.monotonic() - t0:.0f} s)", flush=True)
    study.null_step(session, rd, det, n_sets=args.n_sets, seed=args.seed, caliper=args.caliper, n_trials=args.n_trials,
                    subset_seed=args.seed)
    print(f"exp 10 done ({time.monotonic() - t0:.0f} s)", flush=True)
    out = root / "data" / "results" / f"detectors_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = study.summarize_step(rd, det, n_boot=args.n_boot, seed=args.seed, command=command, out=out)
    fig = root / "figures" / f"detectors_{args.model}.png"
    fig5_detectors(summary, fig, title=f"{args.model}: detector ablation vs matched random ablation")
    keys = ("n_detectors", "baseline", "detector_ablation", "random_multi_attempt_rates", "detector_percentile",
            "difference_ci")
    print(json.dumps({k: summary[k] for k in keys}, indent=1))
    print(f"wrote {det}, {out}, {fig} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
