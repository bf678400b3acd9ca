"""Label every latent of a shipped SAE from its top activating contexts (no external API).

Contexts and automatic labels come from the held-out harvest shards (sink positions excluded); latents that
never fire there get them from ``--fallback-tokens`` training tokens instead (marked ``"source": "train"``).
Writes ``data/saes/<name>/labels.jsonl.gz`` (see :mod:`esr_analysis.sae.labels`).
"""

from __future__ import annotations

import argparse
import json
import time

from esr_analysis.paths import cache_subdir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sae", default="shipped:qwen2.5-coder-0.5b-instruct-l12")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--fallback-tokens", type=int, default=40_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from esr_analysis.models.embedded import hf_cache_dir
    from esr_analysis.sae.labels import LABELS_FILE, build_labels, most_common_label_tokens
    from esr_analysis.sae.loading import load_sae, parse_source
    from esr_analysis.sae.training import Activations, load_shards
    from esr_analysis.steering.residuals import ordinary_positions

    torch.set_num_threads(args.threads)
    t0 = time.time()
    sae = load_sae(args.sae)
    out_dir = parse_source(args.sae)[1]
    tok = AutoTokenizer.from_pretrained(str(hf_cache_dir(args.model)))
    root = cache_subdir("sae_acts") / f"{args.model}-l{args.layer}"

    def no_sinks(a: Activations) -> Activations:
        m = ordinary_positions(a.acts)
        return Activations(a.acts[m], a.tokens, a.window[m], a.pos[m])

    held = no_sinks(load_shards(root / "heldout"))
    fallback = no_sinks(load_shards(root / "train", args.fallback_tokens))
    labels = build_labels(sae, tok, held, k=8, n_contexts=5, source="heldout", fallback=fallback)
    labels.save(out_dir / LABELS_FILE)
    n_held = sum(e["density"] > 0 and e["source"] == "heldout" for e in labels.entries.values())
    n_train = sum(e["density"] > 0 and e["source"] == "train" for e in labels.entries.values())
    summary = {"latents": len(labels), "labelled_from_heldout": n_held, "labelled_from_train_fallback": n_train,
               "inactive_on_both": len(labels) - n_held - n_train, "heldout_tokens": len(held),
               "fallback_tokens": len(fallback), "seconds": round(time.time() - t0),
               "most_common_labels": most_common_label_tokens(labels, 10)}
    (out_dir / "labels_summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
