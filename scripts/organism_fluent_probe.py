"""Restart language inside the fluent window: base vs organism, held-out prompts, same latents/strengths/seeds.

The exp 1 thresholds of the offline-judge calibration can sit far outside the fluent window (the text is word
salad there, and nothing can recover). This probe steers both models at fixed relative strengths inside it
(``--strengths`` times the median residual norm, layer 12) with the evaluation's latents (never used in
training) on the held-out prompts, and counts responses with restart language
(:func:`esr_analysis.judge.restart.has_restart`) and degenerate responses
(:func:`esr_analysis.metrics.is_degraded`), with Wilson 95 % intervals. Writes
``data/adapters/<name>/fluent_probe.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from esr_analysis.paths import DATA_DIR


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--organism", default="qwen2.5-coder-0.5b-instruct-sc70")
    ap.add_argument("--runs", type=Path, default=Path("runs") / "organism-eval-v2")
    ap.add_argument("--strengths", default="0.6,0.9")
    ap.add_argument("--n-prompts", type=int, default=12)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--no-steer", action="store_true", help="also generate without steering")
    args = ap.parse_args(argv)

    from esr_analysis.experiments.prompts import load_prompts
    from esr_analysis.files import atomic_write_json
    from esr_analysis.finetune.adapter import adapter_dir
    from esr_analysis.judge.restart import has_restart
    from esr_analysis.metrics import is_degraded
    from esr_analysis.metrics.intervals import wilson_interval
    from esr_analysis.models.loading import load_model
    from esr_analysis.models.registry import get_spec
    from esr_analysis.sae.loading import load_sae
    from esr_analysis.steering import AddLatent, SamplingSettings, generate

    org = get_spec(args.organism)
    latents = json.loads((args.runs / org.name / "eval_latents.json").read_text())["latents"][:8]
    prompts = load_prompts(DATA_DIR / "prompts" / "finetune_heldout_prompts.txt")[: args.n_prompts]
    strengths = [float(x) for x in args.strengths.split(",")]
    rows, ivs = [], []
    for i, p in enumerate(prompts):
        for j, s in enumerate(strengths):
            rows.append(p)
            ivs.append([AddLatent(latent=latents[(i + j) % len(latents)], strength=s, layer=org.steer_layer,
                                  unit="relative")])
    if args.no_steer:
        rows += prompts
        ivs += [[] for _ in prompts]
    sae = load_sae(org.sae_source)
    settings = SamplingSettings(temperature=0.6, repetition_penalty=1.1, max_new_tokens=args.max_new_tokens)
    out: dict = {"latents": latents, "strengths": strengths, "n_prompts": len(prompts), "layer": org.steer_layer,
                 "max_new_tokens": args.max_new_tokens,
                 "command": "python scripts/organism_fluent_probe.py " + " ".join(argv or sys.argv[1:])}
    for name in (org.base_model, org.name):
        lm = load_model(name)
        res = generate(lm, rows, interventions=ivs, sae=sae, settings=settings, seeds=0, batch_size=len(rows))
        for label, sel in (("steered", [k for k, iv in enumerate(ivs) if iv]),
                           ("no_steer", [k for k, iv in enumerate(ivs) if not iv])):
            if not sel:
                continue
            texts = [res[k].text for k in sel]
            n_restart = sum(has_restart(t) for t in texts)
            out[f"{name}:{label}"] = {
                "n": len(texts), "restart_rate": n_restart / len(texts),
                "restart_ci": list(wilson_interval(n_restart, len(texts))),
                "degenerate_share": sum(is_degraded(t) for t in texts) / len(texts),
                "examples": [t for t in texts if has_restart(t)][:4]}
            print(name, label, n_restart, "/", len(texts), flush=True)
        del lm
    atomic_write_json(adapter_dir(org.name) / "fluent_probe.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
