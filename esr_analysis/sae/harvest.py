"""Harvesting residual-stream activations into resumable fp16 shards (used by ``scripts/harvest_activations.py``).

The corpus (``build_sae_corpus.py`` JSONL: ``kind`` "plain" with ``text``, or "chat" with ``prompt`` and
``response``) is tokenized document by document — plain text followed by ``<|endoftext|>``, chat pairs
rendered by the tokenizer's chat template with ``<|im_end|>`` after the answer — and the token stream is cut
into non-overlapping windows of ``seq_len`` tokens. Each batch is read with the toolkit's one residual reader
(:func:`esr_analysis.steering.residuals.residual_batch`, which stops after block ``layer``). The first
``drop_first`` positions of every window (the sink prefix of the one attention-sink rule,
:func:`esr_analysis.steering.residuals.ordinary_positions`) are discarded; the rule's norm outliers are kept
in the shards and dropped where the shards are used (:mod:`esr_analysis.sae.training`).

Shard format: ``{"acts": float16 [n_windows, seq_len - drop_first, d_model], "tokens": int32
[n_windows, seq_len], "drop_first": int}``, written atomically; existing shards are skipped on a rerun.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from esr_analysis.files import atomic_path, atomic_write_json
from esr_analysis.paths import cache_subdir
from esr_analysis.steering.residuals import SINK_PREFIX

if TYPE_CHECKING:  # pragma: no cover
    import torch


def token_windows(tokenizer, corpus_file: Path, seq_len: int, max_windows: int) -> list[list[int]]:
    """The first ``max_windows`` windows of ``seq_len`` tokens of the packed token stream of one split."""
    from esr_analysis.models.chat import format_chat

    eot = tokenizer("<|endoftext|>", add_special_tokens=False)["input_ids"]
    im_end = tokenizer("<|im_end|>\n", add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    need = max_windows * seq_len
    with corpus_file.open() as f:
        for line in f:
            d = json.loads(line)
            if d["kind"] == "chat":
                stream += format_chat(tokenizer, d["prompt"], response=d["response"])[1] + im_end
            else:
                stream += tokenizer(d["text"], add_special_tokens=False)["input_ids"] + eot
            if len(stream) >= need:
                break
    n = min(max_windows, len(stream) // seq_len)
    return [stream[i * seq_len:(i + 1) * seq_len] for i in range(n)]


def batches(windows: list[list[int]], batch_size: int) -> Iterator[list[list[int]]]:
    for i in range(0, len(windows), batch_size):
        yield windows[i:i + batch_size]


def harvest_split(lm, tokenizer, layer: int, corpus_file: Path, out: Path, *, n_tokens: int, seq_len: int,
                  drop_first: int, batch_size: int, windows_per_shard: int, stats_path: Path | None) -> int:
    """Harvest one split into ``out``; returns the number of kept tokens on disk."""
    import torch
    from tqdm import tqdm

    from esr_analysis.steering.residuals import residual_batch

    out.mkdir(parents=True, exist_ok=True)
    per_window = seq_len - drop_first
    n_windows = -(-n_tokens // per_window)
    windows = token_windows(tokenizer, corpus_file, seq_len, n_windows)
    n_shards = -(-len(windows) // windows_per_shard)
    done = 0
    bar = tqdm(total=len(windows) * per_window, desc=out.name, unit="tok", mininterval=10)
    for s in range(n_shards):
        path = out / f"shard_{s:05d}.pt"
        chunk = windows[s * windows_per_shard:(s + 1) * windows_per_shard]
        if path.exists():
            bar.update(len(chunk) * per_window)
            done += len(chunk) * per_window
            continue
        accs = []
        for b in batches(chunk, batch_size):
            ids = torch.tensor(b, dtype=torch.long)
            mask = torch.ones_like(ids)
            h = residual_batch(lm, ids, mask, layer)
            if stats_path is not None and not stats_path.exists():
                norms = h.norm(dim=-1)  # [B, T]
                med = float(norms[:, drop_first:].median())
                stats = {"layer": layer, "median_norm_kept": med,
                         "median_norm_by_position_0_7": [float(x) for x in norms[:, :8].median(dim=0).values],
                         "fraction_kept_tokens_over_5x_median": float((norms[:, drop_first:] > 5 * med)
                                                                        .float().mean()),
                         "drop_first": drop_first}
                atomic_write_json(stats_path, stats, indent=1)
                print("position norms:", json.dumps(stats), flush=True)
            accs.append(h[:, drop_first:].to(torch.float16))
            bar.update(h.shape[0] * per_window)
        acts = torch.cat(accs)
        with atomic_path(path) as tmp:
            torch.save({"acts": acts, "tokens": torch.tensor(chunk, dtype=torch.int32), "drop_first": drop_first},
                       tmp)
        done += acts.shape[0] * acts.shape[1]
    bar.close()
    return done


def acts_dir(model_name: str, layer: int) -> Path:
    """Where the shards of ``model_name`` at ``layer`` live: ``<cache>/sae_acts/<model>-l<layer>``."""
    return cache_subdir("sae_acts") / f"{model_name}-l{layer}"


def residuals_for_texts(lm, texts: list[str], layer: int, *, drop_first: int = SINK_PREFIX, chat: bool = False,
                        drop_sinks: bool = True) -> torch.Tensor:
    """Block-``layer`` residuals ``[N, D]`` (float32) of ``texts``, one forward each, without the first
    ``drop_first`` positions of each text and (with ``drop_sinks``) without the norm outliers of the one
    attention-sink rule (:func:`esr_analysis.steering.residuals.ordinary_positions`).

    With ``chat`` each text is a user prompt rendered by the chat template; else it is tokenized as is,
    without special tokens (as the harvest tokenizes plain text).
    """
    import torch

    from esr_analysis.models.chat import format_chat
    from esr_analysis.steering.residuals import ordinary_positions, read_residuals

    ids = [format_chat(lm.tokenizer, t)[1] if chat else lm.tokenizer(t, add_special_tokens=False)["input_ids"]
           for t in texts]
    h = torch.cat([r[drop_first:] for r in read_residuals(lm, ids, layer, batch_size=1)])
    return h[ordinary_positions(h)] if drop_sinks else h
