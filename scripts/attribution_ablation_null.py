"""The control of the ``detectors_ablated`` counterfactual: the restart logit difference with the detectors
ablated against matched random latent sets ablated, on the same episodes; written to
``data/results/attribution_<model>_detectors_null.json``.

The random sets are the detector study's (``sampler.random_sets`` of a ``detectors_<model>.json`` summary,
matched on firing density and mean activation), so the control is the one exp 10 uses. Definitions in
:mod:`esr_analysis.mechanisms.attribution.ablation_null`. Usage::

    python scripts/attribution_ablation_null.py data/results/qwen2.5-coder-0.5b-instruct-sc70v3_recoveries.jsonl \\
        --detectors data/detectors/qwen2.5-coder-0.5b-instruct-sc70v3-ranked26.json \\
        --random-sets data/results/detectors_qwen2.5-coder-0.5b-instruct-sc70v3-ranked26.json --max-episodes 24

``--tiny`` runs on the tiny random Llama with a random SAE and three random sets (seconds; for trying it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("episodes", help="JSON list or JSONL file of episodes (scripts/export_recoveries.py)")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-sc70v3")
    ap.add_argument("--detectors", help="detector file or comma list")
    ap.add_argument("--random-sets", help="a detectors_<model>.json summary whose sampler holds the random sets")
    ap.add_argument("--max-episodes", type=int, default=None)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from esr_analysis.errors import ConfigError
    from esr_analysis.files import atomic_write_json
    from esr_analysis.mechanisms.attribution.ablation_null import ablation_effects, summarize_effects
    from esr_analysis.mechanisms.attribution.inputs import load_episodes
    from esr_analysis.mechanisms.study import read_latent_list
    from esr_analysis.provenance import git_commit, library_versions

    episodes = load_episodes(args.episodes)[: args.max_episodes]  # a bad file fails before any model loads
    if args.tiny:
        from esr_analysis.models.tiny import TINY_HIDDEN, load_tiny
        from esr_analysis.sae.random_sae import random_sae

        lm, sae, layer, name = load_tiny("llama", n_layers=3), random_sae(TINY_HIDDEN, 96, 3), 1, "tiny-llama"
        detectors = read_latent_list(args.detectors) or [5, 7]
        random_sets = [[11, 12], [20, 40], [60, 61]]
    else:
        if not args.detectors or not args.random_sets:
            raise ConfigError("--detectors and --random-sets are needed (or --tiny)")
        detectors = read_latent_list(args.detectors)
        summary = json.loads(Path(args.random_sets).read_text(encoding="utf-8"))
        random_sets = (summary.get("sampler") or {}).get("random_sets")
        if not detectors or not random_sets:
            raise ConfigError(f"no detectors in {args.detectors!r} or no sampler.random_sets in {args.random_sets}")
        if any(len(s) != len(detectors) for s in random_sets):
            raise ConfigError("the random sets are not the size of the detector set: not its matched null")
        from esr_analysis import load_model, load_sae
        from esr_analysis.models.loading import spec_of

        lm = load_model(args.model)
        spec = spec_of(lm)
        sae, layer, name = load_sae(spec.sae_source), spec.read_layer, args.model
    sets = {"detectors": detectors, **{f"random_{i:02d}": s for i, s in enumerate(random_sets)}}
    rows = ablation_effects(lm, episodes, sets, sae=sae, sae_layer=layer)
    result = summarize_effects(rows, n_boot=args.n_boot, seed=args.seed)
    result.update({
        "model": name, "sae_layer": layer, "metric": "restart logit difference, comparison token fixed unablated",
        "detectors": list(detectors), "random_sets": random_sets, "episodes": str(args.episodes),
        "rows": rows,
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0] if argv is None
                                                                  else "scripts/attribution_ablation_null.py",
                                                                  *(argv if argv is not None else sys.argv[1:])]),
        "versions": library_versions(), "git_commit": git_commit(),
    })
    out = Path(args.out) if args.out else ROOT / "data" / "results" / f"attribution_{name}_detectors_null.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    eff = result["detector_effect"]
    print(f"detectors: Δ {eff[0]:+.3f} [{eff[1]:+.3f}, {eff[2]:+.3f}] over {result['n_episodes']} episodes; "
          f"percentile among {result['n_random_sets']} random sets {result['detector_percentile']:.1f}; wrote {out}")
    return result


if __name__ == "__main__":
    main()
