"""Steering-core speed on the embedded model (Qwen2.5-Coder-0.5B-Instruct), ratios from one run.

(a) steered + latent-capture batched generate  ÷  plain HF generate at the same batch (8 prompts, 64 tokens);
(b) tokens/s of one batched generate at batch 16  ÷  tokens/s of a per-prompt loop over the same 16 prompts.

The steering direction is a random SAE-shaped decoder row (the cost does not depend on which latent), the
capture reads 16 latents of a random ReLU SAE of width 8192 at the steering layer. Greedy decoding with
``min_new_tokens = max_new_tokens`` so every variant computes exactly the same number of tokens.

Run: ``.venv/bin/python benchmarks/bench_generate.py [--tokens 64] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "Explain how to bake bread.", "How do you change a flat bicycle tyre?", "Explain how to write a cover letter.",
    "How do you calculate compound interest?", "Explain how to plant a tomato seedling.",
    "How do you make a budget for a month?", "Explain how to iron a dress shirt.", "How do you fold a fitted sheet?",
    "Explain how to brew pour-over coffee.", "How do you prepare for a job interview?",
    "Explain how to clean a cast-iron pan.", "How do you compute the area of a triangle?",
    "Explain how to tie a bowline knot.", "How do you organise a small closet?",
    "Explain how to start composting at home.", "How do you write a polite follow-up email?",
]


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch
    from sae_lens import StandardSAE, StandardSAEConfig

    from esr_analysis.models.chat import format_chat
    from esr_analysis.models.loading import load_model, spec_of
    from esr_analysis.steering.generate import generate
    from esr_analysis.steering.interventions import AddLatent
    from esr_analysis.steering.results import LatentCapture
    from esr_analysis.steering.sampling import SamplingSettings
    from esr_analysis.tracing import hf_module
    from esr_analysis.tracing.plans import left_pad

    torch.manual_seed(0)
    lm = load_model(args.model)
    spec = spec_of(lm)
    hf, tok = hf_module(lm), lm.tokenizer
    layer = spec.steer_layer
    sae = StandardSAE(StandardSAEConfig(d_in=spec.d_model, d_sae=8192))
    n = args.tokens
    settings = SamplingSettings(max_new_tokens=n, min_new_tokens=n)
    iv = [AddLatent(latent=123, strength=0.3, layer=layer, unit="relative")]
    cap = LatentCapture(latents=tuple(range(16)), layer=layer)

    def plain(prompts):
        ids, mask = left_pad([format_chat(tok, p)[1] for p in prompts], tok)
        with torch.no_grad():
            hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                        pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)

    def steered(prompts, bs):
        generate(lm, prompts, interventions=iv, sae=sae, settings=settings, capture=cap, batch_size=bs,
                 progress=False)

    steered(PROMPTS[:2], 2)  # warm up (also caches the median residual norm)
    plain(PROMPTS[:2])
    b8 = PROMPTS[:8]
    # interleave the two variants so background load hits both alike; keep the best of each
    t_plain = t_steer = float("inf")
    for _ in range(args.repeats):
        t_plain = min(t_plain, timed(lambda: plain(b8), 1))
        t_steer = min(t_steer, timed(lambda: steered(b8, 8), 1))
    print(f"(a) batch 8 x {n} tokens: plain HF {t_plain:.2f} s, steered+capture {t_steer:.2f} s, "
          f"ratio {t_steer / t_plain:.3f} (target <= 1.10)")

    t_b16 = timed(lambda: steered(PROMPTS, 16), 1)
    t_loop = timed(lambda: [steered([p], 1) for p in PROMPTS], 1)
    tps_b16, tps_loop = 16 * n / t_b16, 16 * n / t_loop
    print(f"(b) 16 prompts x {n} tokens: batch 16 {tps_b16:.1f} tok/s, per-prompt loop {tps_loop:.1f} tok/s, "
          f"ratio {tps_b16 / tps_loop:.2f}x (target >= 4x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
