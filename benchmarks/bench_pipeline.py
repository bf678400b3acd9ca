"""Pipeline speed: batched vs latent-by-latent calibration, and exp 1 trials/s at batch 16 vs batch 1.

Both comparisons run in one process, with the generation and grade caches off, so the printed ratios come
from one run on the same machine state. Default: the embedded Qwen2.5-Coder-0.5B-Instruct with a random SAE
(the timing does not depend on what the latents mean) and the offline judge; ``--tiny`` uses the tiny random
Llama instead (seconds). Usage::

    python benchmarks/bench_pipeline.py [--tiny] [--latents 8] [--steps 2] [--tokens 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random model instead of the embedded Qwen")
    ap.add_argument("--latents", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="bisection steps per latent")
    ap.add_argument("--tokens", type=int, default=16, help="new tokens per generation")
    ap.add_argument("--trials", type=int, default=16, help="exp 1 trials (latents x prompts)")
    args = ap.parse_args()

    from esr_analysis.experiments.calibration import calibrate, calibrate_sequential
    from esr_analysis.experiments.config import load_config
    from esr_analysis.experiments.esr import exp1_specs
    from esr_analysis.experiments.session import open_session
    from esr_analysis.experiments.trials import run_trials
    from esr_analysis.sae.random_sae import random_sae

    over = {"selection.n_latents": args.latents, "search.n_steps": args.steps, "search.max_new_tokens": args.tokens,
            "max_new_tokens": args.tokens, "search.measure_achieved": False, "batch_size": 16,
            "n_prompts_per_latent": 2}
    if args.tiny:
        from esr_analysis.models.tiny import TINY_HIDDEN, load_tiny

        over["model"] = "tiny-llama"
        cfg = load_config("embedded-demo", over)
        session = open_session(cfg, model=load_tiny("llama"), sae=random_sae(TINY_HIDDEN, 512), use_caches=False,
                               progress=False)
    else:
        cfg = load_config("embedded-demo", {**over, "sae": "random:4096"})
        session = open_session(cfg, use_caches=False, progress=False)
    latents = list(range(100, 100 + args.latents))
    warm = session.generate(session.prompts[:2], [[], []], [0, 1], session.settings(4))  # warm-up (model, judge)
    session.grade(session.prompts[:2], [g.text for g in warm], ["x", "x"])

    t = time.monotonic()
    calibrate(session, latents, cache=None)
    t_batched = time.monotonic() - t
    t = time.monotonic()
    calibrate_sequential(session, latents)
    t_seq = time.monotonic() - t
    print(f"calibration of {args.latents} latents x {args.steps} steps ({args.tokens} tokens): batched "
          f"{t_batched:.1f} s, latent-by-latent {t_seq:.1f} s, speed-up {t_seq / t_batched:.2f}x")

    n_lat = max(1, args.trials // 2)
    specs = exp1_specs(session, {lat: 5.0 for lat in latents[:n_lat]})[: args.trials]
    rates = {}
    for bs in (16, 1):
        session.config = session.config.model_copy(update={"batch_size": bs})
        with tempfile.TemporaryDirectory() as d:
            t = time.monotonic()
            run_trials(session, d, "exp1", specs)
            rates[bs] = len(specs) / (time.monotonic() - t)
    print(f"exp 1 ({len(specs)} trials, {args.tokens} tokens, generation + offline grading): batch 16 "
          f"{rates[16]:.2f} trials/s, batch 1 {rates[1]:.2f} trials/s, ratio {rates[16] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
