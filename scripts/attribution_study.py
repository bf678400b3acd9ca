"""Which components drive a recovery: attribution over stored episodes, written to
``data/results/attribution_<model>.json``.

Episodes are a JSON list or a JSONL file of objects ``{"prompt", "response", "correction_char", "interventions",
"offtopic_char"?, "ontopic_char"? | "ontopic_text"?, "detectors"?, "id"?}`` (see
:mod:`esr_analysis.mechanisms.attribution.inputs`; ``interventions`` as stored with each trial, e.g.
``{"kind": "add_latent", "latent": 7808, "strength": 0.8, "layer": 12, "unit": "relative"}``). Per-episode
records are appended to ``<out>.records.jsonl`` as they finish, and episodes already there are skipped, so an
interrupted run resumes. The summary records the command, versions and every choice. Usage::

    python scripts/attribution_study.py EPISODES.jsonl --model qwen2.5-coder-0.5b-instruct-sc70v3 \\
        --sae shipped:qwen2.5-coder-0.5b-instruct-l12 --read-layer 12 \\
        --counterfactuals steering_off ontopic_span detectors_ablated [--remote] [--ig-steps 8]

``--tiny`` runs on the tiny random Llama with a random SAE (seconds; for trying the script).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("episodes", help="JSON list or JSONL file of episodes")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-sc70v3", help="registered model or organism")
    ap.add_argument("--sae", default=None, help="SAE source (load_sae); default: the model's")
    ap.add_argument("--read-layer", type=int, default=None, help="SAE read layer (default: the model spec's)")
    ap.add_argument("--counterfactuals", nargs="+", default=["steering_off", "ontopic_span", "detectors_ablated"])
    ap.add_argument("--summary-counterfactual", default="steering_off", help="the one the summary aggregates")
    ap.add_argument("--metric", default="restart", choices=("restart", "detectors"))
    ap.add_argument("--detectors", default=None,
                    help="detector latents for every episode (comma list or detector file), replacing the ones "
                         "stored with the episodes; used by --metric detectors and the detectors_ablated "
                         "counterfactual")
    ap.add_argument("--top-k", type=int, default=30, help="sites activation-patched one by one per episode")
    ap.add_argument("--ig-steps", type=int, default=0, help="integrated gradients steps (0: off)")
    ap.add_argument("--max-episodes", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--remote", action="store_true", help="run every trace on NDIF")
    ap.add_argument("--no-chat", action="store_true", help="episodes were generated without the chat template")
    ap.add_argument("--tiny", action="store_true", help="tiny random model and SAE (a smoke run)")
    ap.add_argument("--out", default=None, help="default: data/results/attribution_<model>.json")
    args = ap.parse_args(argv)

    from esr_analysis.errors import ConfigError
    from esr_analysis.files import atomic_write_json
    from esr_analysis.mechanisms.attribution.inputs import load_episodes
    from esr_analysis.mechanisms.attribution.study import STUDY_VERSION, aggregate, study_episode
    from esr_analysis.provenance import git_commit, library_versions

    labels = None
    if args.tiny:
        from esr_analysis.models.tiny import TINY_HIDDEN, load_tiny
        from esr_analysis.sae.random_sae import random_sae

        lm, sae, read_layer, name = load_tiny("llama", n_layers=3), random_sae(TINY_HIDDEN, 96, 3), 1, "tiny-llama"
    else:
        from esr_analysis import load_model, load_sae
        from esr_analysis.models.loading import load_remote_model, spec_of

        lm = load_remote_model(args.model) if args.remote else load_model(args.model)
        spec = spec_of(lm)
        sae = load_sae(args.sae or spec.sae_source)
        read_layer = args.read_layer if args.read_layer is not None else spec.read_layer
        name = args.model
        try:
            from esr_analysis.sae.labels import labels_for

            labels = labels_for(sae)
        except (FileNotFoundError, OSError):
            labels = None
    out = Path(args.out) if args.out else ROOT / "data" / "results" / f"attribution_{name}.json"
    records_path = out.with_suffix(".records.jsonl")
    done = {}
    if records_path.exists():
        for line in records_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["id"]] = r
    episodes = load_episodes(args.episodes)[: args.max_episodes]
    if args.detectors:
        from dataclasses import replace

        from esr_analysis.mechanisms.study import read_latent_list

        detectors = read_latent_list(args.detectors)
        if not detectors:
            raise ConfigError(f"--detectors {args.detectors!r} names no latent")
        episodes = [replace(ep, detectors=detectors) for ep in episodes]
    remote = bool(args.remote)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    for ep in episodes:
        if ep.id in done:
            continue
        rec = study_episode(lm, ep, sae=sae, read_layer=read_layer, counterfactuals=args.counterfactuals,
                            metric=args.metric, top_k=args.top_k, ig_steps=args.ig_steps, chat=not args.no_chat,
                            seed=args.seed, remote=remote)
        with records_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        done[ep.id] = rec
        print(f"episode {ep.id}: done ({time.monotonic() - t0:.0f} s)", flush=True)
    records = [done[e.id] for e in episodes if e.id in done]
    summary = aggregate(records, counterfactual=args.summary_counterfactual, labels=labels, seed=args.seed)
    result = {k: summary[k] for k in ("n_episodes", "top_components", "atp_vs_patching_spearman",
                                      "top10_patch_effect", "random10_patch_effect")}
    result.update({
        "details": {k: v for k, v in summary.items() if k not in result and k != "mean_atp"},
        "choices": {"model": name, "sae": getattr(sae, "esr_source", None) or args.sae, "read_layer": read_layer,
                    "metric": args.metric, "counterfactuals": args.counterfactuals, "top_k": args.top_k,
                    "ig_steps": args.ig_steps, "seed": args.seed, "remote": remote, "chat": not args.no_chat,
                    "study_version": STUDY_VERSION, "episodes": str(args.episodes),
                    "detectors": args.detectors or "as stored with the episodes",
                    "records": str(records_path)},
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None
                                                                                 else sys.argv[1:])]),
        "versions": library_versions(), "git_commit": git_commit(),
    })
    atomic_write_json(out, result)
    print(f"wrote {out} ({result['n_episodes']} episodes)")
    return result


if __name__ == "__main__":
    main()
