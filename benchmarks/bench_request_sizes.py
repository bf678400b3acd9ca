"""Serialised request sizes of 70B-shaped traces (issue 15, point 4), measured without sending anything.

A weightless Llama-3.3-70B (the shipped config, ``data/model_configs``) runs the toolkit's real ``generate``
under :func:`esr_analysis.tracing.sizing.measure_request`: ``--rows`` rows, each steering one latent at the
steering layer (33), ablating ``--ablate`` latents at the ablation layer (33) and capturing ``--capture`` latents
at the read layer (50), with a stand-in sliced SAE of the real SAE's shape (65,536 latents on 8,192) that holds
only the touched latents. Prints the request as posted (zstd, nnsight's default) and raw, against the 10 MiB goal,
and what the same three reads would cost with the whole SAE instead of a slice.

Usage: ``python benchmarks/bench_request_sizes.py [--rows 16] [--capture 64] [--ablate 26] [--new-tokens 512]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODEL = "meta-llama/Llama-3.3-70B-Instruct"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--capture", type=int, default=64)
    ap.add_argument("--ablate", type=int, default=26)
    ap.add_argument("--new-tokens", type=int, default=512)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from esr_analysis.experiments.dryrun import REQUEST_LIMIT_BYTES, planning_model, standin_sae
    from esr_analysis.experiments.prompts import load_prompts
    from esr_analysis.models.registry import get_spec
    from esr_analysis.steering.generate import generate
    from esr_analysis.steering.interventions import AblateLatents, AddLatent
    from esr_analysis.steering.residuals import remember_median_norm
    from esr_analysis.steering.results import LatentCapture
    from esr_analysis.steering.sampling import SamplingSettings
    from esr_analysis.tracing.sizing import measure_request

    spec = get_spec(MODEL)
    lm, note = planning_model(spec)
    B, k_cap, k_abl = args.rows, args.capture, args.ablate
    steer_ids = list(range(B))
    cap_ids = list(range(B, B + k_cap))
    abl_ids = list(range(B + k_cap, B + k_cap + k_abl))
    sae = standin_sae(steer_ids + cap_ids + abl_ids, spec.d_model, int(spec.sae_width))
    rows = [[AblateLatents(latents=tuple(abl_ids), layer=spec.ablate_layer),
             AddLatent(latent=j, strength=10.0, layer=spec.steer_layer)] for j in steer_ids]
    prompts = load_prompts("esr")[:B]
    remember_median_norm(lm, spec.steer_layer, 1.0)  # measured once per run by the dry run; not this request
    t0 = time.monotonic()
    size = measure_request(lm, generate, lm, prompts, interventions=rows, sae=sae,
                           capture=LatentCapture(latents=tuple(cap_ids), layer=spec.read_layer),
                           settings=SamplingSettings(temperature=0.6, max_new_tokens=args.new_tokens,
                                                     repetition_penalty=spec.repetition_penalty),
                           seeds=list(range(B)), batch_size=B, remote=True, progress=False)
    dt = time.monotonic() - t0
    whole = int(spec.sae_width) * 2 * spec.d_model * 4  # float32 W_enc + W_dec of every latent
    print(f"{MODEL} (weightless), {B} rows: steer 1 latent/row @ layer {spec.steer_layer}, ablate {k_abl} @ layer "
          f"{spec.ablate_layer}, capture {k_cap} @ layer {spec.read_layer}, {args.new_tokens} new tokens")
    if note:
        print(f"note: {note}")
    print(f"request as posted ({'zstd' if size.compressed else 'raw'}): {size.sent_bytes / 2**20:.2f} MiB; "
          f"raw {size.raw_bytes / 2**20:.2f} MiB; goal {REQUEST_LIMIT_BYTES / 2**20:.0f} MiB: "
          f"{'met' if size.sent_bytes <= REQUEST_LIMIT_BYTES else 'NOT met'} (measured in {dt:.1f} s)")
    print(f"the sliced SAE ships only the {B + k_cap + k_abl} touched latents; the whole SAE's encoder + decoder "
          f"would be {whole / 2**30:.2f} GiB per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
