"""The ``esr`` command line (also ``python -m esr_analysis``).

Commands::

    esr demo                                   # the offline main job: embedded-demo end to end, table + figure
    esr run <preset|config.json> [--set k=v]   # run a preset or a config file, with dotted overrides
    esr resume <run_dir>                       # continue a killed run (nothing is redone)
    esr report <run_dir>                       # metrics table with Wilson/t and latent-bootstrap intervals
    esr figures <run_dir> [--out DIR]          # paper-style figures of a run
    esr presets                                # list presets
    esr detectors discover|ablate|null ...     # off-topic detectors: discovery, exp 3 ablation, exp 10 null

Bad configs (unknown preset, latent outside the SAE, target outside 0-100, Claude judge without
ANTHROPIC_API_KEY) exit with status 2 and a message before anything is loaded or generated.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

EPILOG = """examples:
  esr demo
  esr run embedded-demo --set judge=claude            # the paper's judge (needs ANTHROPIC_API_KEY)
  esr run embedded-demo --set selection.n_latents=20 --set 'experiments=["exp1","exp8","exp2"]'
  esr run paper-llama-3.1-8b --set steer_layer=19 --set repetition_penalty=1.1
  esr resume runs/embedded-demo
  esr report runs/embedded-demo
  esr figures runs/embedded-demo --out figures
  esr detectors discover --model qwen2.5-coder-0.5b-instruct --out data/detectors/qwen.json
  esr detectors ablate runs/embedded-demo --detectors data/detectors/qwen.json --n-trials 12
  esr detectors null runs/embedded-demo --detectors data/detectors/qwen.json --n-trials 12 --n-sets 20 \
      --summary data/results/detectors_qwen.json

override keys are dotted paths into the config (see `esr presets --show embedded-demo`); values are JSON
when they parse (numbers, lists, null, true/false), else strings."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esr", description="Endogenous Steering Resistance experiments: select "
                                "distractor latents, calibrate steering thresholds, run and grade the ESR "
                                "experiments, report metrics with intervals, draw paper-style figures.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", metavar="command")

    r = sub.add_parser("run", help="run a preset or a config .json file end to end")
    r.add_argument("config", help="preset name (see `esr presets`) or path to a config .json")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set search.target=50")
    r.add_argument("--run-dir", help="where to write the run (default <output_dir>/<name>)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument("--figures", action="store_true", help="also write the figures into figures/")
    r.add_argument("--dry-run", action="store_true", help="plan every remote request of the run (count, payload "
                   "and result sizes) without sending or running anything")

    s = sub.add_parser("resume", help="continue a pipeline run directory (skips finished trials)")
    s.add_argument("run_dir")
    s.add_argument("--no-progress", action="store_true")

    rep = sub.add_parser("report", help="print the metrics table of a run")
    rep.add_argument("run_dir")
    rep.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    rep.add_argument("--csv", help="also write the tables to this CSV file")

    f = sub.add_parser("figures", help="draw the paper-style figures of a run")
    f.add_argument("run_dir")
    f.add_argument("--out", default="figures", help="output directory (default figures/)")

    d = sub.add_parser("demo", help="run the embedded-demo preset offline on the base model and the shipped "
                                    "organism side by side, print the tables, write Fig. 2")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--run-dir", default=None)
    d.add_argument("--base-only", action="store_true", help="the base model only (no organism)")
    d.add_argument("--organism", default=None, help="shipped organism to put beside the base model "
                   "(default: models.organisms.DEFAULT_ORGANISM)")
    d.add_argument("--no-progress", action="store_true")

    g = sub.add_parser("regrade", help="grade a run's stored responses again with a judge, into a new directory")
    g.add_argument("src", help="a pipeline run directory or a store run")
    g.add_argument("dst", help="new directory (must not exist or be empty)")
    g.add_argument("--judge", default="offline", help="judge name (default: offline, its current version)")
    g.add_argument("--no-progress", action="store_true")

    pr = sub.add_parser("presets", help="list presets (or show one as JSON)")
    pr.add_argument("--show", metavar="NAME", help="print this preset's full config")
    _detector_parser(sub)
    return p


def _detector_parser(sub: Any) -> None:
    det = sub.add_parser("detectors", help="off-topic detector latents: discover, ablate (exp 3), null (exp 10)")
    dsub = det.add_subparsers(dest="detector_command", metavar="step", required=True)
    d = dsub.add_parser("discover", help="find detectors on held-out prompts; write the detector file + profile")
    d.add_argument("--model", required=True, help="registered model name (see docs/experiments.md)")
    d.add_argument("--sae", help="SAE source (default: the model's)")
    d.add_argument("--layer", type=int, help="read layer (default: the model's read layer)")
    d.add_argument("--prompts", default="otd_discovery", help="prompt set or file (default otd_discovery)")
    d.add_argument("--n-prompts", type=int, help="use the first N prompts")
    d.add_argument("--max-new-tokens", type=int, default=128, help="answer length (default 128)")
    d.add_argument("--temperature", type=float, default=0.6, help="answer sampling temperature (default 0.6)")
    d.add_argument("--n-derangements", type=int, default=3)
    d.add_argument("--rule", default="zero_on_topic", help="zero_on_topic | separability | ranked "
                   "(default zero_on_topic)")
    d.add_argument("--fallback-rule", default=None, help="rule used instead when --rule selects nothing, e.g. "
                   "ranked (recorded as rule_fallback_from; default: none)")
    d.add_argument("--top-k", type=int, default=26, help="k of the ranked rule (default 26)")
    d.add_argument("--min-off-fraction", type=float, default=0.8, help="zero_on_topic rule: least fraction of "
                   "off-topic pairs a detector fires on (default 0.8)")
    d.add_argument("--batch-size", type=int, default=8, help="pairs per forward pass (default 8)")
    d.add_argument("--chunk", type=int, default=2048, help="latents encoded at a time inside a trace (default 2048)")
    d.add_argument("--latents-per-pass", type=int, default=None, help="split the candidate latents over forward "
                   "passes of this many (default: all in one; a remote request ships only these encoder columns)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--remote", action="store_true", help="run the traces on NDIF")
    d.add_argument("--out", required=True, help="detector file to write (its profile goes next to it)")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")
    for name, helptext in (("ablate", "exp 3: replay exp 1 trials of a run with the detectors ablated"),
                           ("null", "exp 10: replay them with matched random sets ablated; write the summary")):
        a = dsub.add_parser(name, help=helptext)
        a.add_argument("run_dir", help="a pipeline run directory with an exp1 run")
        a.add_argument("--detectors", required=True, help="detector file (from `esr detectors discover`)")
        a.add_argument("--n-trials", type=int, help="seeded subset of exp 1 trials to replay (default all)")
        a.add_argument("--subset-seed", type=int, default=0)
        if name == "ablate":
            a.add_argument("--research-thresholds", action="store_true",
                           help="search each latent's threshold again with the detectors ablated and replay at it "
                                "(into <run>/exp3_researched; the summary reports it beside exp3)")
        if name == "null":
            a.add_argument("--n-sets", type=int, default=20)
            a.add_argument("--seed", type=int, default=0, help="sampler seed")
            a.add_argument("--caliper", type=float, default=0.25, help="matching caliper in log10 units")
            a.add_argument("--summary", help="also write the summary JSON here (needs the exp3 run)")
            a.add_argument("--n-boot", type=int, default=2000)
        a.add_argument("--no-progress", action="store_true")


SIDE_BY_SIDE_OVERRIDES = ["max_new_tokens=128", "search.max_new_tokens=64", "selection.n_latents=10",
                          "search.require_fluent_window=true"]
"""What the demo's side-by-side changes in ``embedded-demo``: 128 new tokens per trial (the organism needs about
that many to drift and come back; at 64 it showed no recovery), the search at half that length (as the paper
and ``make organism-eval`` do), and 10 candidate latents of which those with no fluent off-topic window on the
base model are dropped (the rule applies to the first model only, so both models run the same latents:
:func:`esr_analysis.experiments.side_by_side.run_side_by_side`). ``--set`` overrides come after these."""


def _demo_side_by_side(args: Any) -> int:
    from esr_analysis.experiments.report import report
    from esr_analysis.experiments.side_by_side import run_side_by_side
    from esr_analysis.finetune.adapter import list_adapters
    from esr_analysis.models.organisms import DEFAULT_ORGANISM
    from esr_analysis.models.registry import DEFAULT_MODEL, get_spec

    base = get_spec(DEFAULT_MODEL).name
    shipped = [n for n in list_adapters() if get_spec(n).base_model == base]
    wanted = args.organism or DEFAULT_ORGANISM
    if args.organism and args.organism not in shipped:
        raise ValueError(f"--organism {args.organism!r} is not a shipped organism of {base}; shipped: {shipped}")
    organisms = [wanted] if wanted in shipped else shipped
    if not organisms:
        raise ValueError("no shipped organism of the default model in data/adapters; run `esr demo --base-only`")
    root = Path(args.run_dir) if args.run_dir else Path("runs") / "embedded-demo-side-by-side"
    res = run_side_by_side("embedded-demo", [base, organisms[0]], root=root,
                           overrides=[*SIDE_BY_SIDE_OVERRIDES, *args.overrides], progress=not args.no_progress)
    print(report(res.runs[base].run_dir))
    print(f"\n## {base} vs {organisms[0]} (same latents, prompts, seeds and judge; thresholds per model)\n")
    print(res.table())
    t = sum(r.timings.get("total", 0.0) for r in res.runs.values())
    print(f"\nruns: {root}  time: {t:.0f} s\nrecoveries: {res.samples}")
    if res.figure is not None:
        import shutil

        Path("figures").mkdir(exist_ok=True)
        print(f"figure: {shutil.copy(res.figure, Path('figures') / res.figure.name)}")
    print(SIDE_BY_SIDE_NOTE)
    return 0


def _detectors(args: Any, argv: list[str] | None = None) -> int:
    import shlex

    from esr_analysis.mechanisms import detector_study as study

    command = "esr " + shlex.join(sys.argv[1:] if argv is None else argv)  # recorded in the files written
    if args.detector_command == "discover":
        from esr_analysis.experiments.prompts import load_prompts
        from esr_analysis.experiments.session import load_sae_source
        from esr_analysis.mechanisms.detectors import RULES
        from esr_analysis.models.loading import load_model, load_remote_model
        from esr_analysis.models.registry import get_spec

        spec = get_spec(args.model)
        fallback = args.fallback_rule or None
        for opt, r in (("--rule", args.rule), *((("--fallback-rule", fallback),) if fallback else ())):
            if r not in RULES:
                raise ValueError(f"unknown rule {r!r} ({opt}); choose one of {', '.join(RULES)}")
        for opt, v in (("--top-k", args.top_k), ("--batch-size", args.batch_size), ("--chunk", args.chunk),
                       ("--n-derangements", args.n_derangements), ("--max-new-tokens", args.max_new_tokens),
                       ("--latents-per-pass", 1 if args.latents_per_pass is None else args.latents_per_pass),
                       ("--n-prompts", 1 if args.n_prompts is None else args.n_prompts)):
            if v < 1:
                raise ValueError(f"{opt} must be >= 1, got {v}")
        if not 0.0 <= args.min_off_fraction <= 1.0:
            raise ValueError(f"--min-off-fraction must be in [0, 1], got {args.min_off_fraction}")
        load_prompts(args.prompts)
        source = args.sae or spec.sae_source
        if not source:
            raise ValueError(f"{spec.name} has no default SAE; pass --sae")
        sae = load_sae_source(str(source), spec.d_model)
        layer = spec.read_layer if args.layer is None else args.layer
        if not 0 <= layer < spec.n_layers:
            raise ValueError(f"--layer {layer} is outside {spec.name} (layers 0..{spec.n_layers - 1})")
        model = load_remote_model(spec.name) if args.remote else load_model(spec.name)
        rec = study.discover_to_file(model, sae, args.out, model_name=spec.name, layer=layer, prompts=args.prompts,
                                     n_prompts=args.n_prompts, max_new_tokens=args.max_new_tokens,
                                     temperature=args.temperature, rule=args.rule, fallback_rule=fallback,
                                     top_k=args.top_k, min_off_fraction=args.min_off_fraction,
                                     n_derangements=args.n_derangements, seed=args.seed, batch_size=args.batch_size,
                                     chunk=args.chunk, latents_per_pass=args.latents_per_pass, remote=args.remote,
                                     command=command, progress=not args.no_progress)
        chosen = rec["rule"] + (f", fallback from {rec['rule_fallback_from']}" if "rule_fallback_from" in rec else "")
        print(f"{len(rec['off_topic_detectors'])} detectors ({chosen}); every rule: "
              + ", ".join(f"{r} {v['n']}" for r, v in rec["rules"].items()) + f"; wrote {args.out}")
        return 0
    session = study.session_for_run(args.run_dir, progress=not args.no_progress)
    if args.detector_command == "ablate":
        out = study.ablate_step(session, args.run_dir, args.detectors, n_trials=args.n_trials,
                                subset_seed=args.subset_seed, research_thresholds=args.research_thresholds)
        print(f"detector ablation: {out}")
        return 0
    rep = study.null_step(session, args.run_dir, args.detectors, n_sets=args.n_sets, seed=args.seed,
                          caliper=args.caliper, n_trials=args.n_trials, subset_seed=args.subset_seed)
    print(f"{rep['n_sets']} matched random sets in {args.run_dir}/exp10")
    if args.summary:
        summ = study.summarize_step(args.run_dir, args.detectors, n_boot=args.n_boot, command=command,
                                    out=args.summary)
        print(json.dumps({k: summ[k] for k in ("n_detectors", "detector_percentile", "difference_ci")}))
    return 0


def _regrade(args: Any) -> int:
    from esr_analysis.experiments.regrade import regrade_run_dir
    from esr_analysis.judge import make_judge
    from esr_analysis.paths import cache_dir

    if Path(args.dst).exists() and any(Path(args.dst).iterdir()):
        raise ValueError(f"{args.dst} exists and is not empty: regrading never writes over a run")
    counts = regrade_run_dir(args.src, args.dst, make_judge(args.judge), grade_cache=cache_dir() / "judge_grades.sqlite",
                             progress=not args.no_progress)
    for name, c in counts.items():
        print(f"{name}: {c['n']} trials regraded, {c['changed_attempts']} with a different number of attempts")
    print(f"wrote {args.dst}")
    return 0


SIDE_BY_SIDE_NOTE = ("note: the side-by-side demo runs the base model's latents with a fluent off-topic window (of "
                     "10 candidates) x 3 prompts at 128 new tokens, a few minutes per model; the full-size "
                     "evaluation of the organism is `make organism-eval` (docs/organism.md)")

DEMO_NOTE = ("note: the demo is a small run (6 latents x 3 prompts, 64 new tokens per trial), too short for much "
             "recovery; the full-size embedded run is `esr run embedded-full` (30 latents x 5 prompts, 128 tokens; "
             "about 45-50 min on 2 quiet cores, estimated in docs/experiments.md)")


def _print_result(res, figures: bool) -> None:
    from esr_analysis.experiments.report import report

    print(report(res.run_dir))
    t = res.timings
    st = res.stats
    print(f"\nrun: {res.run_dir}  time: {t.get('total', 0):.0f} s (load {t.get('load', 0):.0f}, selection "
          f"{t.get('selection', 0):.0f}, calibration {t.get('calibration', 0):.0f}"
          + "".join(f", {k} {v:.0f}" for k, v in t.items() if k.startswith("exp")) + ")")
    print(f"generations: {int(st.get('generated', 0))} new, {int(st.get('gen_cached', 0))} from cache; grades: "
          f"{int(st.get('graded', 0))} new, {int(st.get('grade_cached', 0))} from cache")
    if figures:
        from esr_analysis.plotting import figures_for_run

        for p in figures_for_run(res.run_dir, "figures"):
            print(f"figure: {p}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``esr``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command is None:
        _parser().print_help()
        return 0
    os.environ.setdefault("MPLBACKEND", "Agg")
    from esr_analysis.errors import ConfigError

    try:
        if args.command == "presets":
            from esr_analysis.experiments.config import PRESETS, load_config

            if args.show:
                print(json.dumps(load_config(args.show).model_dump(mode="json"), indent=2))
            else:
                for name in PRESETS:
                    c = load_config(name)
                    print(f"{name:<22} model={c.model} judge={c.judge} latents={c.selection.n_latents}")
            return 0
        if args.command == "demo" and not args.base_only:
            return _demo_side_by_side(args)
        if args.command == "run" and args.dry_run:
            from esr_analysis.experiments.dryrun import plan_run

            print(plan_run(args.config, args.overrides or None).table())
            return 0
        if args.command in ("run", "demo"):
            from esr_analysis.experiments.pipeline import run_pipeline

            cfg = "embedded-demo" if args.command == "demo" else args.config
            res = run_pipeline(cfg, overrides=args.overrides or None, run_dir=args.run_dir,
                               progress=not args.no_progress)
            _print_result(res, figures=args.command == "demo" or getattr(args, "figures", False))
            if args.command == "demo":
                print(DEMO_NOTE)
            return 0
        if args.command == "resume":
            from esr_analysis.experiments.pipeline import resume_pipeline

            res = resume_pipeline(args.run_dir, progress=not args.no_progress)
            _print_result(res, figures=False)
            return 0
        if args.command == "report":
            from esr_analysis.experiments.report import report, report_tables

            print(report(args.run_dir, n_boot=args.n_boot))
            if args.csv:
                import pandas as pd

                tables = report_tables(args.run_dir, n_boot=args.n_boot)
                pd.concat([df.assign(experiment=k) for k, df in tables.items()]).to_csv(args.csv, index=False)
            return 0
        if args.command == "detectors":
            return _detectors(args, argv)
        if args.command == "regrade":
            return _regrade(args)
        if args.command == "figures":
            from esr_analysis.plotting import figures_for_run

            written = figures_for_run(args.run_dir, args.out)
            for p in written:
                print(f"figure: {p}")
            if not written:
                print(f"no figure-ready runs in {args.run_dir}", file=sys.stderr)
                return 1
            return 0
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"esr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with `esr resume <run_dir>`", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
