"""Train, evaluate and ship the SAE of the embedded model (sae-lens SAETrainer on harvested shards).

Steps: load the training shards of ``<cache>/sae_acts/<model>-l<layer>/train``, drop sink positions (norm
> 10x median: the one attention-sink rule, :func:`esr_analysis.steering.residuals.ordinary_positions`),
train with sae-lens, save the inference SAE in sae-lens format (fp16) to ``data/saes/<name>/`` with ``training_config.json``, then measure it on the
held-out shards (FVE, L0, dead latents, CE loss recovered through the real model) and write
``quality_report.json`` / ``quality_report.md``. Labels are built by ``scripts/label_sae.py``.

Re-train from scratch: ``scripts/build_sae_corpus.py && scripts/harvest_activations.py && scripts/train_sae.py
&& scripts/label_sae.py`` (``make sae``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from esr_analysis.paths import DATA_DIR, cache_subdir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--d-sae", type=int, default=8192)
    ap.add_argument("--architecture", default="standard", choices=("standard", "jumprelu"))
    ap.add_argument("--l1", type=float, default=5.0)
    ap.add_argument("--samples", type=int, default=1_000_000, help="training samples (epochs over the shards)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop training early after this long")
    ap.add_argument("--lr-scheduler", default="cosineannealing")
    ap.add_argument("--max-train-tokens", type=int, default=None)
    ap.add_argument("--ce-windows", type=int, default=16, help="held-out windows for CE loss recovered")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None, help="default <model>-l<layer>-<d_sae/1024>k")
    ap.add_argument("--out", type=Path, default=None, help="default data/saes/<name>")
    ap.add_argument("--skip-ce", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from esr_analysis.sae import training as st
    from esr_analysis.steering.residuals import ordinary_positions

    torch.set_num_threads(args.threads)
    name = args.name or f"{args.model}-l{args.layer}-{args.d_sae // 1024}k"
    out = args.out or DATA_DIR / "saes" / name
    root = cache_subdir("sae_acts") / f"{args.model}-l{args.layer}"
    t0 = time.time()
    train = st.load_shards(root / "train", args.max_train_tokens)
    keep = ordinary_positions(train.acts)
    acts = train.acts[keep]
    print(f"train tokens: {len(train)} ({int((~keep).sum())} sink positions dropped)", flush=True)
    settings = st.TrainSettings(d_sae=args.d_sae, architecture=args.architecture, l1_coefficient=args.l1,
                                total_samples=args.samples, batch_size=args.batch_size, lr=args.lr,
                                max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
                                lr_scheduler=args.lr_scheduler,
                                hook_name=f"model.layers.{args.layer}", model_name=args.model)
    sae = st.train_sae(acts, settings)
    train_s = time.time() - t0
    samples = int(getattr(settings, "samples_trained", settings.total_samples))
    sae = sae.to(dtype=torch.float16) if hasattr(sae, "to") else sae
    sae.cfg.dtype = "float16"
    out.mkdir(parents=True, exist_ok=True)
    sae.save_model(out)
    meta = {"name": name, "model": args.model, "layer": args.layer, "hook": f"model.layers.{args.layer}",
            "settings": settings.to_dict(), "unique_train_tokens": int(acts.shape[0]),
            "samples_trained": samples, "epochs": samples / max(1, int(acts.shape[0])),
            "sink_positions_dropped": int((~keep).sum()), "harvest_stats": _read_json(root / "stats.json"),
            "corpus_manifest": _read_json(cache_subdir("sae_corpus") / "manifest.json"),
            "train_seconds": round(train_s), "machine": f"{platform.machine()}, torch threads {args.threads}",
            "trainer": "sae_lens.SAETrainer", "normalize_activations": "expected_average_only_in (folded)"}
    (out / "training_config.json").write_text(json.dumps(meta, indent=1))
    print(f"trained in {train_s:.0f} s -> {out}", flush=True)

    # quality on held-out text, with the fp32 copy of the shipped (fp16) weights
    from sae_lens import SAE

    sae32 = SAE.load_from_disk(out, device="cpu", dtype="float32")
    held = st.load_shards(root / "heldout")
    hkeep = ordinary_positions(held.acts)
    rs = st.reconstruction_stats(sae32, held.acts[hkeep])
    fires = rs.pop("fire_counts")
    report: dict = {"sae": name, "heldout_tokens": rs["n_tokens"],
                    "heldout_sink_positions_excluded": int((~hkeep).sum()), **rs}
    tr_sample = acts[torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(1))[:50_000]]
    rs_tr = st.reconstruction_stats(sae32, tr_sample)
    report["dead_fraction_heldout_plus_50k_train"] = float(((fires + rs_tr.pop("fire_counts")) == 0).float().mean())
    report["train_sample_fve"] = rs_tr["fve"]
    if not args.skip_ce:
        from esr_analysis.models.loading import load_model

        lm = load_model(args.model, device="cpu", dtype="float32")
        report.update(st.ce_loss_recovered(lm, sae32, args.layer, held.tokens[:args.ce_windows]))
    report["targets"] = {"fve": ">= 0.75", "ce_loss_recovered": ">= 0.80", "dead_fraction": "<= 0.15"}
    report["training"] = {k: meta[k] for k in ("unique_train_tokens", "epochs", "train_seconds", "machine")}
    report["training"]["samples"] = samples
    (out / "quality_report.json").write_text(json.dumps(report, indent=1))
    (out / "quality_report.md").write_text(quality_markdown(report))
    print(json.dumps(report, indent=1))
    return 0


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def quality_markdown(r: dict) -> str:
    """The quality report as a markdown table."""
    def fmt(x):
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    rows = [("fraction of variance explained (held-out)", "fve", ">= 0.75"),
            ("mean L0 (held-out)", "mean_l0", ""),
            ("dead latents (never active on held-out tokens)", "dead_fraction", "<= 0.15"),
            ("dead latents (held-out + 50k training tokens)", "dead_fraction_heldout_plus_50k_train", "<= 0.15"),
            ("CE loss recovered", "ce_loss_recovered", ">= 0.80"),
            ("CE clean / SAE / zero-ablated (nats)", None, "")]
    lines = [f"# Quality of `{r['sae']}`", "", "| metric | value | target |", "|---|---|---|"]
    for label, key, target in rows:
        if key is None:
            val = " / ".join(fmt(r.get(k, "n/a")) for k in ("ce_clean", "ce_sae", "ce_zero"))
        else:
            val = fmt(r.get(key, "n/a"))
        lines.append(f"| {label} | {val} | {target} |")
    t = r["training"]
    lines += ["", f"Held-out tokens: {r['heldout_tokens']} (sink positions excluded: "
              f"{r['heldout_sink_positions_excluded']}); CE over {r.get('n_predictions', 'n/a')} predictions.",
              f"Training: {t['samples']} samples over {t['unique_train_tokens']} unique tokens "
              f"({t['epochs']:.2f} epochs), {t['train_seconds']} s on {t['machine']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
