"""Exp 3's generation cost: steered generate with 26 latents ablated at the steering layer ÷ plain HF generate,
on the embedded model (8 prompts, 64 tokens, batch 8), ratio from one run (issue 12's goal: <= 1.10).

The steering is one ``AddLatent`` of the shipped SAE; the ablation is ``AblateLatents`` of 26 of its latents at the
same layer over every position (error term kept), as ``esr detectors ablate`` replays exp 1 trials. Greedy decoding
with ``min_new_tokens = max_new_tokens``, so both variants compute the same number of tokens; the two variants are
interleaved and the best of ``--repeats`` kept, so background load hits both alike.

Run: ``.venv/bin/python benchmarks/bench_ablation.py [--tokens 64] [--repeats 2]``
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
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--n-ablated", type=int, default=26)
    args = ap.parse_args()

    import torch

    from esr_analysis.models.chat import format_chat
    from esr_analysis.models.loading import load_model, spec_of
    from esr_analysis.sae.loading import load_sae
    from esr_analysis.steering.generate import generate
    from esr_analysis.steering.interventions import AblateLatents, AddLatent
    from esr_analysis.steering.sampling import SamplingSettings
    from esr_analysis.tracing import hf_module
    from esr_analysis.tracing.plans import left_pad

    lm = load_model("qwen2.5-coder-0.5b-instruct")
    sae = load_sae("shipped:qwen2.5-coder-0.5b-instruct-l12")
    layer = spec_of(lm).steer_layer
    hf, tok, n = hf_module(lm), lm.tokenizer, args.tokens
    settings = SamplingSettings(max_new_tokens=n, min_new_tokens=n)
    ivs = [AddLatent(latent=551, strength=0.6, layer=layer, unit="relative"),
           AblateLatents(latents=tuple(range(100, 100 + 37 * args.n_ablated, 37)), layer=layer)]

    def plain() -> None:
        ids, mask = left_pad([format_chat(tok, p)[1] for p in PROMPTS], tok)
        with torch.no_grad():
            hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                        pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)

    def ablated() -> None:
        generate(lm, PROMPTS, interventions=ivs, sae=sae, settings=settings, batch_size=8, progress=False)

    generate(lm, PROMPTS[:2], interventions=ivs, sae=sae, settings=SamplingSettings(max_new_tokens=2),
             progress=False)  # warm up (also caches the median residual norm)
    t_plain = t_abl = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plain()
        t_plain = min(t_plain, time.perf_counter() - t0)
        t0 = time.perf_counter()
        ablated()
        t_abl = min(t_abl, time.perf_counter() - t0)
    print(f"batch 8 x {n} tokens: plain HF {t_plain:.2f} s, steered + {args.n_ablated} latents ablated {t_abl:.2f} s, "
          f"ratio {t_abl / t_plain:.3f} (goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
