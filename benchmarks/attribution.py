"""Attribution speed and agreement on one episode of the embedded model (Qwen2.5-Coder-0.5B-Instruct, offline).

Measured in one run: attribution patching of every head, MLP and block (3 passes: clean forward + backward,
counterfactual forward; counted by construction in ``Attribution.passes``), then activation patching of every
head and MLP one by one (batched rows of the clean run); prints both times, their ratio (goal <= 1/20) and the
Spearman correlation of AtP and patching effects over the top 30 sites by ``|AtP|`` (goal >= 0.7). The episode is
a fixed steered prefix with a hand-placed "Wait" (the timing and the first-order agreement do not depend on it
being a real recovery); the counterfactual is steering off. Usage::

    python benchmarks/attribution.py [--tiny] [--batch 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

RESPONSE = ("To bake bread, mix flour, water, salt and yeast. Knead the dough for ten minutes. Clowns love to "
            "juggle at the circus and everyone laughs at their funny jokes. Wait, that's not right. Let the "
            "dough rise for an hour, shape it and bake it at 220 degrees.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random Llama (seconds) instead of the embedded Qwen")
    ap.add_argument("--batch", type=int, default=16, help="rows per activation-patching forward")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from esr_analysis.mechanisms.attribution.inputs import (
        RecoveryPoint,
        counterfactual,
        prepare,
        restart_metric,
    )
    from esr_analysis.mechanisms.attribution.methods import (
        activation_patching,
        attribution_patching,
        parse_site,
    )
    from esr_analysis.mechanisms.attribution.study import spearman
    from esr_analysis.tracing import find_sites

    torch.set_num_threads(args.threads)
    if args.tiny:
        from esr_analysis.models.tiny import TINY_HIDDEN, load_tiny
        from esr_analysis.sae.random_sae import random_sae

        lm, sae, layer, latent = load_tiny("llama", n_layers=4), random_sae(TINY_HIDDEN, 96, 3), 2, 3
    else:
        from esr_analysis import load_model, load_sae

        lm, sae, layer, latent = load_model(), load_sae("shipped:qwen2.5-coder-0.5b-instruct-l12"), 12, 551
    ep = RecoveryPoint(prompt="Explain how to bake bread.", response=RESPONSE, correction_char=RESPONSE.index("Wait"),
                 interventions=[{"kind": "add_latent", "latent": latent, "strength": 0.6, "layer": layer,
                                 "unit": "relative"}], id="bench")
    prep = prepare(lm, ep)
    cf_ids, cf_ivs, _ = counterfactual(prep, "steering_off")
    metric = restart_metric(prep, lm.tokenizer)
    attribution_patching(lm, prep, cf_ids, cf_ivs, metric=metric, sae=sae, dla=False)  # warm-up (median norm)
    t = time.monotonic()
    att, state = attribution_patching(lm, prep, cf_ids, cf_ivs, metric=metric, sae=sae)
    t_atp = time.monotonic() - t
    sites = [n for n in att.atp if parse_site(n)[0] in ("head", "mlp_out")]
    t = time.monotonic()
    effects = activation_patching(lm, prep, state, [[n] for n in sites], sae=sae, batch_size=args.batch)
    t_patch = time.monotonic() - t
    n = find_sites(lm)
    top = sorted(range(len(sites)), key=lambda i: -abs(att.atp[sites[i]]))[:30]
    rho = spearman([att.atp[sites[i]] for i in top], [effects[i] for i in top])
    rho_all = spearman([att.atp[s] for s in sites], effects)
    print(f"{len(prep.ids)} tokens, {n.n_layers} layers x {n.n_heads} heads + {n.n_layers} MLPs = {len(sites)} sites")
    print(f"attribution patching (all sites, {att.passes} passes): {t_atp:.1f} s; activation patching of every "
          f"head and MLP: {t_patch:.1f} s; ratio {t_atp / t_patch:.4f} (goal <= 0.05)")
    print(f"Spearman(AtP, patching) over the top 30 sites by |AtP|: {rho:.3f} (goal >= 0.7); over all: {rho_all:.3f}")
    print(f"restart logit difference: clean {att.metric_clean:.3f}, steering off {att.metric_cf:.3f}; DLA total "
          f"{att.dla.get('total', float('nan')):.3f}")


if __name__ == "__main__":
    main()
