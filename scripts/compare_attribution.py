"""Compare two models' attribution records on the same episodes (issue 14 point 8: does the organism's mechanism
exist in the base model?) and write the comparison JSON with the command that made it.

Both record files come from ``scripts/attribution_study.py`` run on the same episodes file with the same
counterfactual (``<out>.records.jsonl``). Definitions: :mod:`esr_analysis.mechanisms.attribution.compare`. Usage::

    python scripts/compare_attribution.py \\
        data/results/attribution_qwen2.5-coder-0.5b-instruct-sc70v3.records.jsonl \\
        data/results/attribution_qwen2.5-coder-0.5b-instruct_on_sc70v3.records.jsonl \\
        --names organism base --out data/results/attribution_base_vs_qwen2.5-coder-0.5b-instruct-sc70v3.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def _read(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("records_a", help="records JSONL of the first model (the organism)")
    ap.add_argument("records_b", help="records JSONL of the second model (the base), same episodes")
    ap.add_argument("--names", nargs=2, default=["organism", "base"], metavar=("A", "B"))
    ap.add_argument("--counterfactual", default="steering_off")
    ap.add_argument("--k", type=int, default=20, help="top-k sites for the overlap")
    ap.add_argument("--seed", type=int, default=0, help="control derangement and bootstrap seed")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    for p in (args.records_a, args.records_b):
        if not Path(p).is_file():
            ap.error(f"no records file {p}")
    from esr_analysis.files import atomic_write_json
    from esr_analysis.mechanisms.attribution.compare import compare_records
    from esr_analysis.provenance import git_commit, library_versions

    out = compare_records(_read(args.records_a), _read(args.records_b), counterfactual=args.counterfactual,
                          k=args.k, seed=args.seed, names=tuple(args.names))
    cmd = "python scripts/compare_attribution.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = {**out, "records": [args.records_a, args.records_b], "command": cmd, "git_commit": git_commit(),
           "versions": library_versions()}
    atomic_write_json(args.out, out)
    a, b = args.names
    print(f"{out['n_episodes']} episodes ({len(out['excluded'])} excluded), {out['n_sites']} component sites, "
          f"k = {out['k']} (chance overlap {out['chance_overlap']:.3f})")
    for key in ("top_k_overlap", "rank_agreement"):
        print(key, {m: [round(x, 3) for x in v] for m, v in out[key].items()})
    for name in (a, b):
        print(name, {m: [round(x, 2) for x in v] for m, v in out["per_model"][name].items()})
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
