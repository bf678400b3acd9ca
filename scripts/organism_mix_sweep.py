"""The mix-ratio sweep (issue 11 point 6, the paper's Fig. 7): organisms differing only in the self-correction
fraction ``p``, each evaluated on the same latents, prompts, seeds and judge; writes
``data/results/organism_mix_sweep.json`` and ``figures/fig7_mix_sweep.png``.

Build and evaluate each organism first (the recipe of ``make organism`` with another ``--fraction``; the data
stage of one build can be copied into the others' work directories, so every organism trains on the same pool)::

    python scripts/build_organism.py --fraction 0.3 --name qwen2.5-coder-0.5b-instruct-sc30v3 ...
    python scripts/evaluate_organism.py --organism qwen2.5-coder-0.5b-instruct-sc30v3 --max-new-tokens 128 \\
        --n-latents 24 --n-prompts-per-latent 5 --runs runs/organism-eval-v3 --only organism
    python scripts/organism_mix_sweep.py qwen2.5-coder-0.5b-instruct-sc30v3 qwen2.5-coder-0.5b-instruct-sc70v3 \\
        qwen2.5-coder-0.5b-instruct-sc90v3 --base-eval data/adapters/qwen2.5-coder-0.5b-instruct-sc70v3/eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from esr_analysis.paths import DATA_DIR


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("organisms", nargs="+", help="organism names (adapter directories under data/adapters)")
    ap.add_argument("--base-eval", type=Path, default=None,
                    help="an eval.json whose 'base' / 'base_no_steer' conditions are the base model's, same design")
    ap.add_argument("--out", type=Path, default=DATA_DIR / "results" / "organism_mix_sweep.json")
    ap.add_argument("--figure", type=Path, default=DATA_DIR.parent / "figures" / "fig7_mix_sweep.png")
    args = ap.parse_args(argv)

    from esr_analysis.files import atomic_write_json
    from esr_analysis.finetune.adapter import adapter_dir
    from esr_analysis.finetune.sweep import mix_sweep
    from esr_analysis.plotting import fig7_mix_sweep

    sweep = mix_sweep([adapter_dir(name) for name in args.organisms])
    base = None
    if args.base_eval is not None:
        ev = json.loads(args.base_eval.read_text())
        base = {"organism": ev["base"], "organism_no_steer": ev["base_no_steer"]}
        sweep["base"] = base
    sweep["command"] = "python scripts/organism_mix_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write_json(args.out, sweep)
    fig7_mix_sweep(sweep, args.figure, base=base, title="Self-correction fraction of the training mix (organism v3 recipe)")
    for r in sweep["rows"]:
        m, u = r.get("organism", {}), r.get("organism_no_steer", {})
        print(f"p={r['fraction']:.1f} mix={r['mix']['n_self_correction']}+{r['mix']['n_normal']} "
              f"multi={m.get('multi_attempt_rate')} esr={m.get('esr_rate')} first={m.get('first_attempt_score')} "
              f"unsteered multi={u.get('multi_attempt_rate')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
