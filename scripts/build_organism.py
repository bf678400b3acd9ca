"""Build the self-correcting model organism from scratch: data from the base model's own text, then LoRA.

``make organism`` runs this. Stages resume from ``--work`` (default ``runs/organism/<name>``): the data build
is skipped when its files exist and training resumes from its last checkpoint, so a killed run can simply be
started again. The adapter, its ``organism.json`` and the training mix go to ``data/adapters/<name>/``.
See ``docs/organism.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

from esr_analysis.paths import DATA_DIR


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--fraction", type=float, default=0.5, help="self-correction fraction p of the mix")
    ap.add_argument("--name", default=None, help="adapter name; default <model>-sc<100p>")
    ap.add_argument("--preset", default="cpu", choices=("cpu", "paper"))
    ap.add_argument("--prompts", default=str(DATA_DIR / "prompts" / "finetune_prompts.txt"))
    ap.add_argument("--acknowledgements", default=None, help="default data/finetune/acknowledgements.txt")
    ap.add_argument("--segments", default=None,
                    help="train on an axolotl segments JSONL instead of building data (e.g. the authors')")
    ap.add_argument("--n-latents", type=int, default=24, help="SAE latents that steer the openings")
    ap.add_argument("--latent-seed", type=int, default=101)
    ap.add_argument("--strengths", default="0.5,0.6,0.7,0.8,0.9", help="relative strengths (x residual norm)")
    ap.add_argument("--answers-per-prompt", type=int, default=1)
    ap.add_argument("--answer-max-new-tokens", type=int, default=176)
    ap.add_argument("--opening-max-new-tokens", type=int, default=64)
    ap.add_argument("--attempts-per-prompt", type=int, default=1)
    ap.add_argument("--max-sentences", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=30)
    ap.add_argument("--keep-cut-answers", action="store_true",
                    help="train answers cut at the token limit as prefixes (no end of turn)")
    ap.add_argument("--offtopic-max-cosine", type=float, default=None,
                    help="keep an opening only if its MiniLM cosine with the prompt is at most this (off-topic check)")
    ap.add_argument("--steer-in-training", action="store_true",
                    help="train each self-correction example with its opening's steering on (organism v2 recipe)")
    ap.add_argument("--steer-scope", default="all", choices=("all", "opening"),
                    help="with --steer-in-training: steer all positions (v2) or only the prompt and opening (v3)")
    ap.add_argument("--data-only", action="store_true", help="stop after the data stage")
    ap.add_argument("--max-prompts", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--micro-batch", type=int, default=None)
    ap.add_argument("--grad-accum", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="default data/adapters/<name>")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    import torch

    from esr_analysis.experiments.prompts import load_prompts
    from esr_analysis.experiments.selection import select_latents
    from esr_analysis.finetune.build import BuildSettings
    from esr_analysis.finetune.data import load_acknowledgements, read_segments_jsonl
    from esr_analysis.finetune.organism import data_stage, steering_vectors, train_stage
    from esr_analysis.finetune.train import PRESETS
    from esr_analysis.models.embedded import load_embedded_hf
    from esr_analysis.models.loading import load_model
    from esr_analysis.models.registry import get_spec
    from esr_analysis.provenance import git_commit, library_versions
    from esr_analysis.sae.labels import labels_for
    from esr_analysis.sae.loading import load_sae
    from esr_analysis.steering.residuals import median_residual_norm

    torch.set_num_threads(args.threads)
    spec = get_spec(args.model)
    name = args.name or f"{spec.name}-sc{round(args.fraction * 100)}"
    work = args.work or Path("runs") / "organism" / name
    out = args.out or DATA_DIR / "adapters" / name
    settings = PRESETS[args.preset]
    changes = {k: v for k, v in (("epochs", args.epochs), ("max_length", args.max_length), ("lr", args.lr),
                                 ("micro_batch", args.micro_batch), ("grad_accum", args.grad_accum)) if v is not None}
    if changes:
        from dataclasses import replace

        settings = replace(settings, **changes)
    settings.check()
    prompts = load_prompts(args.prompts)[: args.max_prompts]
    acks = load_acknowledgements(args.acknowledgements)
    t0 = time.monotonic()
    recipe: dict = {}
    if args.segments:
        sc = [e for e in read_segments_jsonl(args.segments) if e.kind != "normal"]
        normal = [e for e in read_segments_jsonl(args.segments) if e.kind == "normal"]
        recipe = {"source": "segments file", "path": str(args.segments)}
    else:
        lm = load_model(spec)
        sae = load_sae(spec.sae_source)
        labels = labels_for(sae)
        chosen = select_latents(lm, sae, prompts, n_latents=args.n_latents, layer=spec.steer_layer,
                                candidate_factor=4, relevance_rule="zero", latent_info=labels.info,
                                seed=args.latent_seed)
        logging.info("opening latents: %s (%s)", chosen.latents, chosen.summary())
        build = BuildSettings(layer=spec.steer_layer, latents=tuple(chosen.latents),
                              strengths=tuple(float(x) for x in args.strengths.split(",")),
                              answers_per_prompt=args.answers_per_prompt,
                              answer_max_new_tokens=args.answer_max_new_tokens,
                              opening_max_new_tokens=args.opening_max_new_tokens,
                              attempts_per_prompt=args.attempts_per_prompt, max_sentences=args.max_sentences,
                              batch_size=args.batch_size, keep_cut_answers=args.keep_cut_answers,
                              offtopic_max_cosine=args.offtopic_max_cosine)
        sc, normal, recipe = data_stage(lm, sae, prompts, acks, build, work)
        recipe["median_residual_norm"] = median_residual_norm(lm, build.layer)
        recipe = {**recipe, "source": "base model's own text", "sae": spec.sae_source,
                  "prompts_file": os.path.relpath(args.prompts, DATA_DIR.parent),
                  "latent_labels": {str(i): labels.label(i) for i in build.latents}}
        del lm
    data_seconds = time.monotonic() - t0
    if args.data_only:
        logging.info("data stage done in %.0f s: %d self-correction, %d normal examples in %s", data_seconds,
                     len(sc), len(normal), work)
        return 0
    steering = None
    if args.steer_in_training:
        if args.segments:
            raise SystemExit("--steer-in-training needs the built data (its openings record their steering)")
        steering = steering_vectors(sc, sae, float(recipe["median_residual_norm"]))
    hf, tok = load_embedded_hf(spec.name, dtype=torch.float32)
    metadata = {"name": name, "base_model": spec.name, "fraction": args.fraction, "data": recipe,
                "data_seconds": data_seconds, "machine": f"{platform.machine()}, {os.cpu_count()} cpus, "
                f"{args.threads} torch threads", "git_commit": git_commit(), "versions": library_versions(),
                "command": "python scripts/build_organism.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    t1 = time.monotonic()
    _, meta = train_stage(hf, tok, sc, normal, args.fraction, settings, work, out, metadata, steering=steering,
                           steer_scope=args.steer_scope)
    logging.info("done: data %.0f s, training %.0f s (%.1f tokens/s); adapter in %s", data_seconds,
                 time.monotonic() - t1, meta["training_result"]["tokens_per_second"], out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
