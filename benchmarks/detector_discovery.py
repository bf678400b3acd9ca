"""Detector discovery: streamed batched pooling vs per-pair full capture, speed and peak memory from one run.

* **streamed** (:func:`esr_analysis.mechanisms.detectors.discover`): pairs in left-padded batches, latents encoded
  ``--chunk`` at a time and max-pooled over the assistant turn inside the trace; only per-latent running
  statistics are kept.
* **full capture** (the naive way): one pair per forward pass, the whole ``[T, d_sae]`` latent tensor of the pair
  returned (``forward_with_plan`` with a read of every latent) and held for all pairs; pooling and statistics
  afterwards.

Both read the same pairs (``--n-prompts`` prompts, their on-topic pairs and ``--n-derangements`` derangements of
off-topic pairs) with fixed answers (deterministic texts of about ``--answer-tokens`` tokens cut from the shipped
fine-tuning prompts, so no generation is timed), and the benchmark checks that they give the same statistics.
Each method runs in a fresh process; its **peak memory** is the peak resident set size during the method minus
the resident size just before it (the kernel's peak counter is reset first via ``/proc/self/clear_refs``), so
loading the model does not count; it is measured in a second process per method whose glibc mmap threshold is fixed
(freed tensors leave the resident set), while time is measured with the default allocator. Time is the CPU time of the method alone (``time.process_time``, one torch thread
by default: on a shared, loaded machine wall time mostly measures the other jobs) and its wall time.

``--remote`` runs both methods through a real NDIF server started on this machine (``esr_analysis.tracing.
ndif_local``, the stack the ``ndif`` tests use; its Python 3.12 environment must be built: ``make ndif-venv``):
the client model is weightless, each forward pass is one request, and the full capture downloads its
``[T, d_sae]`` tensor per pair while the streamed way downloads per-latent statistics per batch. Time is then
wall time (the server does the compute) and memory is the client's. This is the regime the library is built for
on Llama-3.3-70B, where a request's round trip and download, not the GPU forward, dominate.

Run: ``.venv/bin/python benchmarks/detector_discovery.py [--model embedded|tiny] [--n-prompts 22] [--remote]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _setup(args: argparse.Namespace):
    import torch

    from esr_analysis.experiments.prompts import load_prompts

    torch.set_num_threads(args.threads)
    if args.remote:
        from esr_analysis.tracing.ndif_local.client import folder_model, point_client_at
        from esr_analysis.tracing.ndif_local.models import embedded_model_folder, tiny_model_folder

        point_client_at(os.environ["ESR_BENCH_NDIF_URL"])
    if args.remote and args.model == "tiny":
        from esr_analysis.models.tiny import TINY_HIDDEN
        from esr_analysis.sae.random_sae import random_sae

        lm, sae, layer = folder_model(tiny_model_folder()), random_sae(TINY_HIDDEN, args.d_sae, 0), 1
    elif args.remote:
        from esr_analysis.models.registry import get_spec
        from esr_analysis.sae.loading import load_sae

        lm = folder_model(embedded_model_folder())
        sae, layer = load_sae("shipped:qwen2.5-coder-0.5b-instruct-l12"), get_spec("qwen2.5-coder-0.5b-instruct").read_layer
    elif args.model == "tiny":
        from esr_analysis.models.tiny import TINY_HIDDEN, load_tiny
        from esr_analysis.sae.random_sae import random_sae

        lm, sae, layer = load_tiny("llama"), random_sae(TINY_HIDDEN, args.d_sae, 0), 1
    else:
        from esr_analysis.models.loading import load_model, spec_of
        from esr_analysis.sae.loading import load_sae

        lm = load_model("qwen2.5-coder-0.5b-instruct")
        sae, layer = load_sae("shipped:qwen2.5-coder-0.5b-instruct-l12"), spec_of(lm).read_layer
    prompts = load_prompts("otd_discovery")[: args.n_prompts]
    words = " ".join(load_prompts(ROOT / "data" / "prompts" / "finetune_prompts.txt")).split()
    tok = lm.tokenizer
    answers = []
    for i in range(len(prompts)):
        ids = tok(" ".join(words[i * 7:]), add_special_tokens=False)["input_ids"][: args.answer_tokens]
        answers.append(list(ids))
    return lm, sae, layer, prompts, answers


def _streamed(args, lm, sae, layer, prompts, answers):
    from esr_analysis.mechanisms.detectors import discover

    d = discover(lm, sae, prompts, layer=layer, answers=answers, n_derangements=args.n_derangements,
                 batch_size=args.batch_size, chunk=args.chunk, remote=args.remote, progress=False)
    return d.stats.off.max, d.stats.on.mean


def _full(args, lm, sae, layer, prompts, answers):
    import torch

    from esr_analysis.mechanisms.detectors import discovery_pairs
    from esr_analysis.models.chat import format_chat
    from esr_analysis.sae.sliced import SlicedSAE, sae_width
    from esr_analysis.tracing.plans import LayerPlan, left_pad, step0_masks
    from esr_analysis.tracing.run import forward_with_plan

    read = SlicedSAE.from_sae(sae, range(sae_width(sae)[1])).params(dtype=torch.float32)
    held = []
    pairs = discovery_pairs(len(prompts), args.n_derangements, 0)
    for i, a, off in pairs:
        p_ids = format_chat(lm.tokenizer, prompts[i])[1]
        ids, mask = left_pad([p_ids + answers[a]], lm.tokenizer)
        acts, _ = forward_with_plan(lm, ids, mask, [LayerPlan(layer=layer, read=read)], step0_masks(mask),
                                    stop_after_last=True, remote=args.remote)
        held.append((acts[layer][0], len(p_ids), off))  # [T, d_sae] per pair, kept until the end
    pooled_off = torch.stack([x[s:].max(0).values for x, s, o in held if o]).double()
    pooled_on = torch.stack([x[s:].max(0).values for x, s, o in held if not o]).double()
    return pooled_off.max(0).values, pooled_on.mean(0)


def worker(args: argparse.Namespace) -> None:
    import torch

    lm, sae, layer, prompts, answers = _setup(args)
    fn = _streamed if args.worker == "streamed" else _full
    fn(args, lm, sae, layer, prompts[:2], [answers[0], answers[1]])  # warm-up (first-trace costs)
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    off_max, on_mean = fn(args, lm, sae, layer, prompts, answers)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status_kb("VmHWM")
    out = {"seconds": seconds, "cpu": cpu, "peak_kb": peak - before, "off_max": off_max.tolist(), "on_mean": on_mean.tolist(),
           "n_pairs": len(prompts) * (1 + args.n_derangements), "tokens": [len(a) for a in answers]}
    del torch
    Path(args.result).write_text(json.dumps(out))


@contextmanager
def _server(args: argparse.Namespace, tmp: Path) -> Iterator[str | None]:
    """With ``--remote``, a local NDIF serving the benchmark's model for the duration (stopped after); its URL."""
    if not args.remote:
        yield None
        return
    from esr_analysis.tracing.ndif_local import LocalNdif, why_unavailable
    from esr_analysis.tracing.ndif_local.models import served_models

    reason = why_unavailable()
    if reason:
        raise SystemExit(f"--remote needs the local NDIF: {reason}")
    inst = LocalNdif(tmp / "ndif", served_models(embedded=args.model == "embedded")).start()
    try:
        yield inst.url
    finally:
        inst.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("embedded", "tiny"), default="embedded")
    # defaults: the shipped discovery's sizes (detector_study.discover_to_file: the 22 held-out discovery prompts,
    # 3 derangements, answers of up to 128 new tokens)
    ap.add_argument("--n-prompts", type=int, default=22)
    ap.add_argument("--n-derangements", type=int, default=3)
    ap.add_argument("--answer-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--d-sae", type=int, default=16384, help="random SAE width (tiny model only)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--remote", action="store_true", help="both methods through a local NDIF server (wall time)")
    ap.add_argument("--worker", choices=("streamed", "full"), help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.worker:
        worker(args)
        return 0
    import tempfile

    import numpy as np

    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, _server(args, Path(tmp)) as url:
        for name in ("streamed", "full"):
            for measure in ("time", "memory"):
                path = Path(tmp) / f"{name}-{measure}.json"
                cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", name, "--result", str(path)]
                env = {**os.environ, "PYTHONPATH": str(ROOT), **({"ESR_BENCH_NDIF_URL": url} if url else {})}
                if measure == "memory":
                    # a fixed mmap threshold: large tensors go back to the OS when freed, so the peak RSS follows
                    # the peak of live data instead of glibc's adaptive heap (which also slows many temporaries)
                    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
                subprocess.run(cmd, check=True, env=env)
                r = json.loads(path.read_text())
                res.setdefault(name, {}).update(r if measure == "time" else {"peak_kb": r["peak_kb"]})
    s, f = res["streamed"], res["full"]
    gap = max(float(np.abs(np.array(s["off_max"]) - np.array(f["off_max"])).max()),
              float(np.abs(np.array(s["on_mean"]) - np.array(f["on_mean"])).max()))
    print(f"model {args.model}: {s['n_pairs']} pairs, answers {min(s['tokens'])}-{max(s['tokens'])} tokens, "
          f"batch {args.batch_size}, chunk {args.chunk}; largest statistic difference {gap:.2e}")
    for name, r in (("streamed batched", s), ("per-pair full", f)):
        print(f"{name:17s}: CPU {r['cpu']:7.2f} s (wall {r['seconds']:7.2f} s), peak +{r['peak_kb'] / 1024:8.1f} MiB")
    where = "through a local NDIF server (wall time counts; client CPU does not)" if args.remote else "local"
    print(f"{where}: speed ratio {f['cpu'] / s['cpu']:.2f}x CPU time, {f['seconds'] / s['seconds']:.2f}x wall "
          f"(goal >= 5x); peak-memory ratio {f['peak_kb'] / max(s['peak_kb'], 1):.1f}x (goal >= 10x)")
    return 0 if gap < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
