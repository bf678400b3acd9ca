"""Anatomy of a recovery (paper exp 6 + exp 9) on stored runs: write ``data/results/anatomy_<model>.json``.

Recoveries (>= 2 attempts, the last scoring higher) come from ``--runs`` (store run directories, e.g.
``runs/organism-eval-v2/qwen2.5-coder-0.5b-instruct-sc70/organism/exp1``), a baseline of single-attempt on-topic
answers from ``--baseline-runs`` (default: the same runs). Each recovery is annotated (offline annotator on the
judge's attempt split, or ``--annotator claude``), replayed teacher-forced with the steering off and on, and
summarised: region means (before / during / after the correction, baseline) and paired tests per latent group
(steered latent, ``--detectors``, backtracking latents by label and by correlation, ``--latents``). The JSON
records the command, versions and git commit. Example (the organism)::

    python scripts/anatomy_study.py --runs runs/organism-eval-v2/qwen2.5-coder-0.5b-instruct-sc70/organism/exp1 \\
        --baseline-runs runs/organism-eval-v2/qwen2.5-coder-0.5b-instruct-sc70/organism/exp1 \\
        --detectors data/results/detectors_qwen2.5-coder-0.5b-instruct-sc70.json
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any


def _default(manifest: Any, name: str) -> Any:
    layers = manifest.layers
    if name == "layer":
        for v in (layers.read, layers.steer):
            if v is not None:
                return v[0] if isinstance(v, list) else v
        return None
    src = manifest.sae_source
    return src.get("source") if isinstance(src, dict) else src


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, type=Path, help="run directories with the recoveries")
    ap.add_argument("--baseline-runs", nargs="+", type=Path, default=None, help="default: --runs")
    ap.add_argument("--model", default=None, help="default: the runs' model_id")
    ap.add_argument("--sae", default=None, help="default: the runs' SAE source")
    ap.add_argument("--layer", type=int, default=None, help="default: the runs' read (else steer) layer")
    ap.add_argument("--annotator", choices=("offline", "claude"), default="offline")
    ap.add_argument("--annotator-model", default=None, help="Claude model id (default Sonnet 4.5)")
    ap.add_argument("--detectors", default=None, help="comma list or JSON file of off-topic detector latents")
    ap.add_argument("--latents", default=None, help="comma list of further latents to trace")
    ap.add_argument("--n-label", type=int, default=16, help="backtracking latents by label search")
    ap.add_argument("--n-corr", type=int, default=16, help="backtracking latents by correlation")
    ap.add_argument("--corr-holdout", type=float, default=0.5,
                    help="share of episodes held out from the correlation search and used to test its latents "
                         "(0: select and test on all, recorded as circular)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the selection/test split")
    ap.add_argument("--max-attempts", type=int, default=None, help="2 = the paper's exactly-two-attempt episodes")
    ap.add_argument("--n-baseline", type=int, default=50)
    ap.add_argument("--baseline-min-score", type=float, default=50.0)
    ap.add_argument("--max-episodes", type=int, default=None)
    ap.add_argument("--window", type=int, default=150)
    ap.add_argument("--conditions", default="off,on", help="steering conditions to trace: off,on")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--remote", action="store_true", help="trace on NDIF (needs NDIF_API_KEY)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=None, help="default data/results/anatomy_<model>.json")
    ap.add_argument("--figures", type=Path, default=None, help="also save the trace and aligned figures here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from esr_analysis.files import atomic_write_json
    from esr_analysis.mechanisms.episodes import episodes_from_runs
    from esr_analysis.mechanisms.study import read_latent_list, run_anatomy
    from esr_analysis.models.loading import load_model, load_remote_model
    from esr_analysis.paths import DATA_DIR
    from esr_analysis.provenance import git_commit, library_versions
    from esr_analysis.sae.loading import load_sae
    from esr_analysis.store.read import read_manifest

    manifest = read_manifest(args.runs[0])
    model_name = args.model or manifest.model_id
    sae_source = args.sae or _default(manifest, "sae")
    layer = args.layer if args.layer is not None else _default(manifest, "layer")
    if not model_name or not sae_source or layer is None:
        ap.error("cannot tell the model, SAE or layer from the run manifest; pass --model, --sae and --layer")
    recoveries, baseline = episodes_from_runs(args.runs, args.baseline_runs, max_attempts=args.max_attempts,
                                              n_baseline=args.n_baseline,
                                              baseline_min_score=args.baseline_min_score)
    if args.max_episodes is not None:
        recoveries = recoveries[: args.max_episodes]
    logging.info("%d recoveries, %d baseline episodes", len(recoveries), len(baseline))
    if not recoveries:
        print("no recovery episode in the runs; nothing to study", file=sys.stderr)
        return 1
    annotator: Any = "offline"
    if args.annotator == "claude":
        from esr_analysis.mechanisms.annotator import DEFAULT_ANNOTATOR_MODEL, ClaudeAnnotator

        annotator = ClaudeAnnotator(args.annotator_model or DEFAULT_ANNOTATOR_MODEL)
    labels = None
    try:
        from esr_analysis.sae.labels import labels_for

        labels = labels_for(sae_source)
    except (FileNotFoundError, ValueError) as exc:
        logging.warning("no SAE labels (%s): no label search", exc)
    lm = load_remote_model(model_name) if args.remote else load_model(model_name)
    sae = load_sae(sae_source)
    result = run_anatomy(lm, sae, recoveries, baseline, layer=int(layer), annotator=annotator,
                         detectors=read_latent_list(args.detectors), user_latents=read_latent_list(args.latents),
                         labels=labels, n_label=args.n_label, n_corr=args.n_corr, window=args.window,
                         conditions=[c for c in args.conditions.split(",") if c], batch_size=args.batch_size,
                         remote=bool(args.remote), corr_holdout=args.corr_holdout, seed=args.seed)
    out = args.out or DATA_DIR / "results" / f"anatomy_{model_name}.json"
    summary = {**result.summary, "model": model_name, "sae": sae_source,
               "runs": [str(p) for p in args.runs],
               "baseline_runs": [str(p) for p in (args.baseline_runs or args.runs)],
               "command": " ".join(shlex.quote(a) for a in ["python", "scripts/anatomy_study.py",
                                                            *(sys.argv[1:] if argv is None else argv)]),
               "git_commit": git_commit(), "versions": library_versions()}
    atomic_write_json(out, summary, allow_nan=False)
    print(f"wrote {out}: {summary['n_episodes']} episodes, {summary['n_baseline']} baseline")
    if args.figures:
        from esr_analysis.mechanisms.plots import plot_aligned, plot_trace

        args.figures.mkdir(parents=True, exist_ok=True)
        for key, traces in result.traces.items():
            if traces:
                names = ["steered", *[g for g in summary["groups"] if g != "steered"]]
                plot_trace(traces[0], names).savefig(args.figures / f"anatomy_trace_{key}.png", dpi=150)
                plot_aligned(result.aligned[key], title=f"{model_name}, {key}").savefig(
                    args.figures / f"anatomy_aligned_{key}.png", dpi=150)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
