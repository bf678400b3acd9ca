"""Harvest residual-stream activations of the embedded model for SAE training (resumable fp16 shards).

The corpus from ``scripts/build_sae_corpus.py`` is tokenized document by document (plain text followed by
``<|endoftext|>``; chat pairs rendered by the chat template with ``<|im_end|>`` after the answer), the
token stream is cut into non-overlapping windows of ``--seq-len`` tokens, and each batch of windows runs
through the model only up to block ``--layer`` (nnsight ``tracer.stop()`` via
:func:`esr_analysis.steering.residuals.residual_batch`). The first ``--drop-first`` positions of every window are
discarded: position 0 is an attention sink whose residual norm is an outlier (the per-position norms of
the first batch are written to ``stats.json`` as evidence).

Layout under ``<cache>/sae_acts/<model>-l<layer>/<split>/``: ``shard_00000.pt`` …, each
``{"acts": float16 [n_windows, seq_len - drop_first, d_model], "tokens": int32 [n_windows, seq_len],
"drop_first": int}``, written atomically; a rerun skips finished shards. ``--held-out-tokens`` worth of the
held-out split is harvested first, then the training split until ``--tokens`` (or until killed).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from esr_analysis.paths import cache_subdir
from esr_analysis.sae.harvest import acts_dir, harvest_split
from esr_analysis.steering.residuals import SINK_PREFIX


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--layer", type=int, default=None, help="block output to harvest (default: spec.sae_layer)")
    ap.add_argument("--tokens", type=int, default=1_000_000, help="training tokens kept (after dropping)")
    ap.add_argument("--held-out-tokens", type=int, default=32_000)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--drop-first", type=int, default=SINK_PREFIX)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--windows-per-shard", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--corpus", type=Path, default=None, help="corpus dir (default <cache>/sae_corpus)")
    args = ap.parse_args(argv)

    import torch

    from esr_analysis.models.loading import load_model, spec_of

    torch.set_num_threads(args.threads)
    lm = load_model(args.model, device="cpu", dtype="float32")
    spec = spec_of(lm)
    layer = spec.sae_layer if args.layer is None else args.layer
    corpus = args.corpus or cache_subdir("sae_corpus")
    root = acts_dir(spec.name, layer)
    t0 = time.time()
    n_ho = harvest_split(lm, lm.tokenizer, layer, corpus / "heldout.jsonl", root / "heldout",
                         n_tokens=args.held_out_tokens, seq_len=args.seq_len, drop_first=args.drop_first,
                         batch_size=args.batch_size, windows_per_shard=args.windows_per_shard,
                         stats_path=root / "stats.json")
    n_tr = harvest_split(lm, lm.tokenizer, layer, corpus / "train.jsonl", root / "train", n_tokens=args.tokens,
                         seq_len=args.seq_len, drop_first=args.drop_first, batch_size=args.batch_size,
                         windows_per_shard=args.windows_per_shard, stats_path=None)
    print(f"done: {n_tr} train + {n_ho} held-out tokens in {time.time() - t0:.0f} s -> {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
