"""Regime study: where does steering the embedded model give fluent off-topic text?

Steers Qwen2.5-Coder-0.5B-Instruct at several decoder layers and strengths along a few topical directions, on
prompts that are **not** evaluation prompts (``data/prompts/otd_discovery_prompts.txt``), and measures per
(layer, strength) the share of responses that are fluent (not degenerate, :mod:`esr_analysis.metrics.fluency`)
and off-topic (offline judge first-attempt score below the threshold search's target).

Directions: the shipped SAE is trained on layer 12 only, so every layer is steered along the same **unit
layer-12 SAE decoder row** of each latent (used as a plain residual direction at layers 4/8/16, i.e. the
layer-12 direction carried to other layers unchanged), scaled to ``r`` times the median residual norm of the
steered layer (:func:`esr_analysis.steering.residuals.median_residual_norm`). At layer 12 this equals
``AddLatent(unit="relative")``.

Two phases (both resumable; generations are appended to ``--work``/generations.jsonl):

* ``generate``: every (grid point, latent, prompt) row not yet generated;
* ``score``: grade + fluency for every row, aggregate, write ``data/results/regime_study.json`` (with the
  command that made it) and ``figures/regime_study.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
LATENTS = (115, 2959, 1992, 2)  # shipped-SAE labels: money/worth, God/worship, love/hate, JPEG


def _row_key(r: dict) -> str:
    return json.dumps([r["grid"], r["layer"], r["strength"], r["latent"], r["prompt"], r["temperature"],
                       r["repetition_penalty"], r["scope"], r["max_new_tokens"]])


def grid_rows(args: argparse.Namespace, prompts: list[str]) -> list[dict]:
    """Every row of the study: the layer x strength grid at the base sampling, then the sampling grid."""
    rows = []
    base = {"temperature": args.temperature, "repetition_penalty": args.repetition_penalty, "scope": "all",
            "max_new_tokens": args.max_new_tokens}
    for p in prompts:
        rows.append({"grid": "layers", "layer": None, "strength": 0.0, "latent": None, "prompt": p, **base})
        for layer in args.layers:
            for r in args.strengths:
                for lat in args.latents:
                    rows.append({"grid": "layers", "layer": layer, "strength": r, "latent": lat, "prompt": p,
                                 **base})
    for t, rp, scope in args.sampling:
        samp = {"temperature": t, "repetition_penalty": rp, "scope": scope, "max_new_tokens": args.max_new_tokens}
        for p in prompts:
            rows.append({"grid": "sampling", "layer": None, "strength": 0.0, "latent": None, "prompt": p, **samp})
            for r in args.sampling_strengths:
                for lat in args.latents:
                    rows.append({"grid": "sampling", "layer": args.sampling_layer, "strength": r, "latent": lat,
                                 "prompt": p, **samp})
    return rows


def generate_phase(args: argparse.Namespace) -> None:
    from esr_analysis.experiments.prompts import load_prompts
    from esr_analysis.experiments.session import load_sae_source
    from esr_analysis.models.loading import load_model
    from esr_analysis.models.registry import DEFAULT_MODEL, get_spec
    from esr_analysis.seeds import derive_seed
    from esr_analysis.steering.generate import generate
    from esr_analysis.steering.interventions import AddVector
    from esr_analysis.steering.residuals import median_residual_norm
    from esr_analysis.steering.sampling import SamplingSettings

    prompts = load_prompts("otd_discovery")[: args.n_prompts]
    out = Path(args.work) / "generations.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        for line in out.read_text().splitlines():
            try:
                done.add(_row_key(json.loads(line)))
            except ValueError:
                continue
    todo = [r for r in grid_rows(args, prompts) if _row_key(r) not in done]
    print(f"{len(todo)} rows to generate ({len(done)} done)", flush=True)
    if not todo:
        return
    spec = get_spec(DEFAULT_MODEL)
    model = load_model(DEFAULT_MODEL, device="cpu")
    sae = load_sae_source(spec.sae_source, spec.d_model)
    w = sae.W_dec.detach().float()
    unit = {lat: (w[lat] / w[lat].norm()).tolist() for lat in args.latents}
    norms = {layer: median_residual_norm(model, layer) for layer in sorted({r["layer"] for r in todo} - {None})}
    print("median residual norms:", {k: round(v, 2) for k, v in norms.items()}, flush=True)
    groups: dict[tuple, list[dict]] = {}
    for r in todo:
        groups.setdefault((r["temperature"], r["repetition_penalty"], r["max_new_tokens"]), []).append(r)
    for (t, rp, n), rows in groups.items():
        settings = SamplingSettings(temperature=t, repetition_penalty=rp, max_new_tokens=n)
        for lo in range(0, len(rows), args.chunk):
            chunk = rows[lo:lo + args.chunk]
            ivs = [[] if r["latent"] is None else
                   [AddVector(vector=tuple(unit[r["latent"]]), strength=r["strength"] * norms[r["layer"]],
                              layer=r["layer"], scope=r["scope"], name=f"sae12-unit-{r['latent']}")]
                   for r in chunk]
            seeds = [derive_seed(args.seed, "regime", r["prompt"]) for r in chunk]
            t0 = time.monotonic()
            gens = generate(model, [r["prompt"] for r in chunk], interventions=ivs, settings=settings, seeds=seeds,
                            batch_size=args.batch_size, progress=False)
            dt = time.monotonic() - t0
            with out.open("a") as f:
                for r, g, s in zip(chunk, gens, seeds, strict=True):
                    f.write(json.dumps({**r, "seed": s, "text": g.text, "n_tokens": len(g.output_ids),
                                        "median_norm": norms.get(r["layer"])}) + "\n")
            print(f"{lo + len(chunk)}/{len(rows)} rows (t={t}, rp={rp}): {dt:.0f} s for {len(chunk)}", flush=True)


def score_phase(args: argparse.Namespace, argv: list[str]) -> None:
    """Grade every generated row with the offline judge, measure fluency, aggregate per grid point, and write
    the JSON (with its command) and the figure."""
    import statistics

    from esr_analysis.files import atomic_write_json
    from esr_analysis.judge import make_judge
    from esr_analysis.judge.runner import run_grading
    from esr_analysis.judge.types import GradeRequest
    from esr_analysis.metrics.fluency import FLUENCY_VERSION, fluency_measures
    from esr_analysis.sae.labels import labels_for
    from esr_analysis.sae.loading import load_sae

    rows = [json.loads(line) for line in (Path(args.work) / "generations.jsonl").read_text().splitlines() if line]
    sae = load_sae("shipped:qwen2.5-coder-0.5b-instruct-l12-8k")
    labels = labels_for(sae)
    judge = make_judge("offline")
    reqs = [GradeRequest(prompt=r["prompt"], response=r["text"],
                         latent_label=labels.label(r["latent"]) if r["latent"] is not None else "",
                         steered=r["latent"] is not None) for r in rows]
    grades = run_grading(judge, reqs, progress=False).grades
    for r, g in zip(rows, grades, strict=True):
        scores = [a.score for a in g.attempts if a.score is not None] if g.error is None else []
        r["first_score"] = scores[0] if scores else None
        r["n_attempts"] = len(scores)
        r["fluency"] = fluency_measures(r["text"]).as_dict()
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["grid"], r["layer"], r["strength"], r["temperature"], r["repetition_penalty"],
                          r["scope"]), []).append(r)
    table = []
    for (grid, layer, strength, t, rp, scope), rs in sorted(cells.items(), key=lambda kv: str(kv[0])):
        scored = [r for r in rs if r["first_score"] is not None]
        fluent = [r for r in rs if not r["fluency"]["degenerate"]]
        off = [r for r in scored if r["first_score"] < args.target]
        both = [r for r in off if not r["fluency"]["degenerate"]]
        table.append({"grid": grid, "layer": layer, "strength_relative": strength, "temperature": t,
                      "repetition_penalty": rp, "scope": scope, "n": len(rs),
                      "fluent_share": len(fluent) / len(rs), "degenerate_share": 1 - len(fluent) / len(rs),
                      "off_topic_share": len(off) / len(scored) if scored else None,
                      "fluent_off_topic_share": len(both) / len(rs),
                      "mean_first_score": statistics.fmean(r["first_score"] for r in scored) if scored else None})
    examples = [{k: r[k] for k in ("layer", "strength", "latent", "prompt", "first_score", "n_attempts")}
                | {"degenerate": r["fluency"]["degenerate"], "text": r["text"][:400]}
                for r in rows if r["layer"] in (12,) and r["latent"] == args.latents[0]]
    opts = " ".join(a for a in argv if a not in ("generate", "score"))
    out = {"command": f"python scripts/regime_study.py generate {opts} && python scripts/regime_study.py score {opts}",
           "judge": judge.judge_id,
           "fluency": FLUENCY_VERSION, "target": args.target, "prompts": "otd_discovery (not evaluation prompts)",
           "latents": {str(lat): labels.label(lat) for lat in args.latents},
           "directions": "unit layer-12 SAE decoder row of each latent, added at the steered layer, scaled to "
                         "strength_relative x the median residual norm of that layer",
           "median_residual_norms": {str(r["layer"]): r["median_norm"] for r in rows if r["layer"] is not None},
           "table": table, "examples": examples}
    dest = ROOT / "data" / "results" / "regime_study.json"
    atomic_write_json(dest, out, indent=1)
    print(f"wrote {dest}")
    _figure(table, ROOT / "figures" / "regime_study.png")
    for row in table:
        print(f"{row['grid']:<8} L{row['layer']} r={row['strength_relative']:<5} n={row['n']:<3} fluent "
              f"{row['fluent_share']:.2f} off {row['off_topic_share']} fluent&off {row['fluent_off_topic_share']:.2f} "
              f"mean {row['mean_first_score']}")


def _figure(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    rows = [r for r in table if r["grid"] == "layers" and r["layer"] is not None]
    for layer in sorted({r["layer"] for r in rows}):
        rs = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r["strength_relative"])
        x = [r["strength_relative"] for r in rs]
        axes[0].plot(x, [r["fluent_off_topic_share"] for r in rs], marker="o", label=f"layer {layer}")
        axes[1].plot(x, [r["degenerate_share"] for r in rs], marker="o", label=f"layer {layer}")
    axes[0].set_title("fluent and off-topic")
    axes[1].set_title("degenerate")
    for ax in axes:
        ax.set_xlabel("strength (x median residual norm of the layer)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of responses")
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    print(f"wrote {path}")


def _parse_sampling(text: str) -> tuple[float, float, str]:
    t, rp, scope = text.split(":")
    return float(t), float(rp), scope


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("phase", choices=["generate", "score"])
    ap.add_argument("--work", default=str(ROOT / "runs" / "regime_study"))
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 8, 12, 16])
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0, 1.5])
    ap.add_argument("--latents", type=int, nargs="+", default=list(LATENTS))
    ap.add_argument("--n-prompts", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--repetition-penalty", type=float, default=1.1)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--sampling", type=_parse_sampling, nargs="*", default=[],
                    help="extra sampling settings as temperature:repetition_penalty:scope")
    ap.add_argument("--sampling-layer", type=int, default=12)
    ap.add_argument("--sampling-strengths", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--chunk", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=30.0, help="off-topic: first-attempt score below this")
    args = ap.parse_args(argv)
    if args.phase == "generate":
        generate_phase(args)
    else:
        score_phase(args, argv if argv is not None else sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
