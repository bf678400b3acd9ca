"""Judge throughput against the local judge server (tests/judge_server.py) at a fixed server latency.

Starts the server in a subprocess (so it does not share our GIL), grades ``--n`` distinct requests with the
Claude judge (or ``--api openai``) through the real SDK and our runner, and prints gradings per second and
the ratio to the authors' Anthropic throttle of 3 requests/s. Then re-grades the same requests from the
grade cache (zero API calls) and prints that rate too.

Usage: ``python benchmarks/bench_judge.py [--n 1000] [--latency 0.1] [--concurrency 64] [--api anthropic]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from esr_analysis.judge import make_judge  # noqa: E402
from esr_analysis.judge.runner import run_grading  # noqa: E402
from esr_analysis.judge.types import GradeRequest  # noqa: E402

AUTHORS_RATE = 3.0  # requests per second: the authors' Anthropic rate limit (`docs/method.md#judge`)


def start_server(latency: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "judge_server.py"), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"judge server did not start: {line!r}")
    return proc, int(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of gradings")
    parser.add_argument("--latency", type=float, default=0.1, help="server latency per request, seconds")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--api", choices=["anthropic", "openai"], default="anthropic")
    args = parser.parse_args()

    # a dummy key: never send a real key to the benchmark server
    os.environ["ANTHROPIC_API_KEY"] = os.environ["OPENAI_API_KEY"] = "local-benchmark-dummy-key"
    proc, port = start_server(args.latency)
    try:
        if args.api == "anthropic":
            judge = make_judge("claude", base_url=f"http://127.0.0.1:{port}", max_retries=2, timeout=30)
        else:
            judge = make_judge(
                "openai:bench-model", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, timeout=30
            )
        reqs = [
            GradeRequest(prompt=f"bench prompt {i}", response=f"bench response {i}", latent_label="lava")
            for i in range(args.n)
        ]
        # warm up the SDK import and the connection pool outside the timed run
        run_grading(judge, [GradeRequest(prompt="warmup", response="x")], progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "bench.sqlite"
            t0 = time.perf_counter()
            report = run_grading(judge, reqs, concurrency=args.concurrency, cache=cache, progress=False)
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = run_grading(judge, reqs, concurrency=args.concurrency, cache=cache, progress=False)
            warm_s = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    s = report.stats
    rate = args.n / cold_s
    ideal = args.concurrency / args.latency if args.latency > 0 else float("inf")
    print(
        f"judge throughput ({args.api} SDK -> local server, {args.latency * 1000:.0f} ms latency, "
        f"concurrency {args.concurrency}, n={args.n}): {rate:.1f} gradings/s "
        f"= {rate / AUTHORS_RATE:.1f}x the authors' {AUTHORS_RATE:g} requests/s throttle "
        f"(ceiling at this concurrency {ideal:.0f}/s; goal >= 50/s: {'met' if rate >= 50 else 'NOT met'})"
    )
    print(f"  graded {s.graded}, errors {s.errors}, HTTP requests {s.http_requests}, wall {cold_s:.2f} s")
    print(
        f"cached re-grade: {args.n / warm_s:.0f} gradings/s, {again.stats.api_calls} API calls, "
        f"{again.stats.cached} cache hits, wall {warm_s:.2f} s"
    )
    if s.errors:
        raise SystemExit(f"{s.errors} gradings failed: {s.error_examples}")


if __name__ == "__main__":
    main()
