"""Recoveries of stored runs as attribution inputs: ``data/results/<model>_recoveries.jsonl``.

Reads the recoveries (>= 2 attempts, the last scoring higher) of ``--runs``, places their correction with the
offline annotator (:func:`esr_analysis.mechanisms.study.annotate`), and writes one
:class:`~esr_analysis.mechanisms.attribution.inputs.RecoveryPoint` per line for ``scripts/attribution_study.py``.
Recoveries whose correction is unclear are left out (counted on stdout).

    python scripts/export_recoveries.py --runs runs/organism-eval/<organism>/organism/exp1 [--detectors FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, type=Path)
    ap.add_argument("--detectors", default=None, help="comma list or JSON file of detector latents")
    ap.add_argument("--max-attempts", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="default data/results/<model>_recoveries.jsonl")
    args = ap.parse_args(argv)

    from esr_analysis.mechanisms.attribution.inputs import recovery_points, write_recovery_points
    from esr_analysis.mechanisms.episodes import episodes_from_runs
    from esr_analysis.mechanisms.study import annotate, read_latent_list
    from esr_analysis.paths import DATA_DIR

    recoveries, _ = episodes_from_runs(args.runs, max_attempts=args.max_attempts, n_baseline=0)
    if not recoveries:
        print(f"no recovery in {', '.join(map(str, args.runs))}", file=sys.stderr)
        return 1
    points, dropped = recovery_points(recoveries, annotate(recoveries), read_latent_list(args.detectors) or None)
    model = (recoveries[0].model or "model").replace("/", "_")
    out = args.out or DATA_DIR / "results" / f"{model}_recoveries.jsonl"
    write_recovery_points(out, points)
    print(f"{len(points)} recoveries written to {out} (of {len(recoveries)}; left out: {dropped or 'none'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
