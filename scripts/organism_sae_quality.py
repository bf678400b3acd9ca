"""The base model's SAE on the organism: variance explained and CE loss recovered, beside the base model.

The paper used the base model's SAE with its fine-tuned model. This measures how well that SAE fits the
organism's layer-12 activations, on the same token windows for both models: the chat-formatted transcripts
(prompt + unsteered response) of the evaluation's exp 8 runs of both models (``scripts/evaluate_organism.py``),
cut to ``--window`` tokens. Definitions as in ``docs/sae.md`` (:func:`esr_analysis.sae.training.reconstruction_stats`
over ordinary positions, :func:`esr_analysis.sae.training.ce_loss_recovered`). Writes
``data/adapters/<name>/sae_quality.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--organism", default="qwen2.5-coder-0.5b-instruct-sc70v3")
    ap.add_argument("--runs", type=Path, default=Path("runs") / "organism-eval-v3")
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--window", type=int, default=96)
    args = ap.parse_args(argv)

    import torch

    from esr_analysis.files import atomic_write_json
    from esr_analysis.finetune.adapter import adapter_dir
    from esr_analysis.models.loading import load_model
    from esr_analysis.models.registry import get_spec
    from esr_analysis.sae.loading import load_sae
    from esr_analysis.sae.training import ce_loss_recovered, reconstruction_stats
    from esr_analysis.steering.residuals import ordinary_positions, residual_batch
    from esr_analysis.store.read import read_trials

    org = get_spec(args.organism)
    base = get_spec(org.base_model)
    texts: list[list[int]] = []
    used = []
    for cond in ("base", "organism"):
        run = args.runs / org.name / cond / "exp8"
        if not (run / "trials.jsonl").is_file():
            continue  # e.g. the evaluation ran --only organism: the organism's transcripts serve both models
        trials, _ = read_trials(run)
        texts += [list(t.input_ids or []) + list(t.output_ids or []) for t in trials]
        used.append(cond)
    windows = [ids[: args.window] for ids in texts if len(ids) >= args.window][: args.windows]
    if not windows:
        raise SystemExit("no transcripts long enough; run scripts/evaluate_organism.py first")
    tokens = torch.tensor(windows)
    sae = load_sae(base.sae_source)
    out: dict = {"windows": len(windows), "window_tokens": args.window, "sae": base.sae_source,
                 "layer": base.sae_layer, "source": f"exp 8 transcripts (prompt + unsteered response) of: {', '.join(used)}; the same windows for both models",
                 "command": "python scripts/organism_sae_quality.py " + " ".join(argv or sys.argv[1:])}
    for name in (base.name, org.name):
        lm = load_model(name)
        mask = torch.ones_like(tokens)
        h = residual_batch(lm, tokens, mask, base.sae_layer)
        keep = ordinary_positions(h, mask)
        stats = reconstruction_stats(sae, h[keep])
        stats.pop("fire_counts")
        ce = ce_loss_recovered(lm, sae, base.sae_layer, tokens)
        out[name] = {"fve": stats["fve"], "mean_l0": stats["mean_l0"], "n_tokens": stats["n_tokens"], **ce}
        print(name, out[name], flush=True)
        del lm
    atomic_write_json(adapter_dir(org.name) / "sae_quality.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
