"""Run a judge over many requests: cache, bounded concurrency, budget, item retries, progress.

For a list of requests, :func:`grade_async`

1. computes each request's cache key and reads hits from the cache (``cached=True``, no API call);
   identical requests in one run are graded once;
2. checks the **budget**: ``max_calls`` caps the number of judge API calls (one call = one grading
   request, including the SDK's internal HTTP retries; item-level retries count as extra calls). When the
   cache misses exceed it, ``on_budget="raise"`` raises :class:`BudgetExceededError` before any call, and
   ``on_budget="record"`` grades the first ``max_calls`` misses and gives the others the error
   ``"budget exceeded: ..."``. Item-level retries that run past the budget record the same error;
3. grades the misses with at most ``concurrency`` requests in flight (an ``asyncio.Semaphore``). HTTP
   retries (429 with ``retry-after``, 5xx, timeouts) happen inside the SDK; a malformed body
   (:class:`TransientJudgeError`) is retried up to ``item_retries`` times with exponential backoff
   (``retry_backoff * 2**n`` seconds, jittered); each grading is bounded by the judge's
   ``item_deadline_s``. A :class:`JudgeFatalError` (bad key, unknown model) or any unexpected exception
   cancels the run and is raised (grades finished so far are already in the cache);
4. stores each successful grade in the cache as soon as it arrives (an interrupted run loses nothing),
   then applies the judge's :meth:`~esr_analysis.judge.base.Judge.finalize` (e.g. restart gating).

Every request comes back with a grade, in input order: graded, or carrying its error.
:func:`grade_all` is the synchronous wrapper; it also works inside Jupyter, where an event loop is already
running (it then runs the grading on a worker thread with its own loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from esr_analysis.judge.cache import GradeCache, cache_key
from esr_analysis.judge.types import BudgetExceededError, Grade, GradeRequest, TransientJudgeError

if TYPE_CHECKING:  # annotations only: base.Judge imports this module to grade, never the other way
    from esr_analysis.judge.base import Judge

log = logging.getLogger(__name__)
T = TypeVar("T")

CacheArg = GradeCache | str | os.PathLike[str] | None


@dataclass
class RunStats:
    """Counts of one grading run.

    ``api_calls``: gradings sent to the judge's API (including item-level retries); ``http_requests``:
    HTTP requests the judge reports for this run (including SDK retries); ``cached``: requests answered
    from the cache; ``deduplicated``: requests identical to an earlier one in the same run.
    """

    n_requests: int = 0
    cached: int = 0
    deduplicated: int = 0
    api_calls: int = 0
    http_requests: int = 0
    item_retries: int = 0
    graded: int = 0
    errors: int = 0
    budget_skipped: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    elapsed_s: float = 0.0
    error_examples: list[str] = field(default_factory=list)


@dataclass
class GradingReport:
    """The grades (aligned with the requests) and the run's :class:`RunStats`."""

    grades: list[Grade]
    stats: RunStats


def _as_cache(cache: CacheArg) -> GradeCache | None:
    if cache is None or isinstance(cache, GradeCache):
        return cache
    return GradeCache(cache)


def _as_requests(requests: Sequence[Any]) -> list[GradeRequest]:
    out = []
    for i, r in enumerate(requests):
        if isinstance(r, GradeRequest):
            out.append(r)
        elif isinstance(r, dict):
            out.append(GradeRequest(**r))
        elif isinstance(r, tuple | list) and len(r) in (2, 3):
            out.append(GradeRequest(prompt=r[0], response=r[1], latent_label=r[2] if len(r) == 3 else ""))
        else:
            raise TypeError(f"request {i}: expected GradeRequest, dict or (prompt, response[, label]) tuple")
    return out


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="grade", leave=False)


async def grade_async(
    judge: Judge,
    requests: Sequence[GradeRequest],
    *,
    cache: CacheArg = None,
    concurrency: int | None = None,
    max_calls: int | None = None,
    on_budget: Literal["raise", "record"] = "raise",
    item_retries: int = 2,
    retry_backoff: float = 0.5,
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "judging",
) -> GradingReport:
    """Grade ``requests`` with ``judge`` (see the module docstring). Options are checked before any call."""
    reqs = _as_requests(requests)
    concurrency = judge.default_concurrency if concurrency is None else concurrency
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if max_calls is not None and max_calls < 0:
        raise ValueError(f"max_calls must be >= 0 or None, got {max_calls}")
    if on_budget not in ("raise", "record"):
        raise ValueError(f"on_budget must be 'raise' or 'record', got {on_budget!r}")
    if item_retries < 0:
        raise ValueError(f"item_retries must be >= 0, got {item_retries}")
    store = _as_cache(cache)
    stats = RunStats(n_requests=len(reqs))
    t0 = time.monotonic()
    http_before = getattr(judge, "http_requests", 0)

    keys = [cache_key(judge.cache_id, judge.rubric_hash, r) for r in reqs]
    raw: dict[str, Grade] = store.get_many(keys) if store is not None else {}
    stats.cached = sum(1 for k in keys if k in raw)
    todo: dict[str, GradeRequest] = {}
    for k, r in zip(keys, reqs, strict=True):
        if k in raw:
            continue
        if k in todo:
            stats.deduplicated += 1
        else:
            todo[k] = r

    budget = max_calls if (max_calls is not None and judge.uses_api) else None
    if budget is not None and len(todo) > budget and on_budget == "raise":
        raise BudgetExceededError(
            f"{len(todo)} gradings are not in the cache but max_calls={budget}; raise max_calls, pass "
            f"on_budget='record' to grade the first {budget}, or grade fewer requests"
        )
    calls_left = [budget]  # mutable budget counter (single event loop: no lock needed)

    def take_call() -> bool:
        if calls_left[0] is None:
            return True
        if calls_left[0] <= 0:
            return False
        calls_left[0] -= 1
        return True

    def budget_error() -> Grade:
        stats.budget_skipped += 1
        return Grade(
            error=f"budget exceeded: max_calls={budget} judge API calls already used in this run",
            judge_id=judge.cache_id,
            rubric_hash=judge.rubric_hash,
        )

    multiplicity = Counter(keys)
    bar = _progress(len(reqs), progress, desc)
    bar.update(stats.cached)

    def record(key: str, grade: Grade) -> None:
        raw[key] = grade
        if grade.usage:
            stats.input_tokens += grade.usage.get("input_tokens", 0)
            stats.output_tokens += grade.usage.get("output_tokens", 0)
        if store is not None and grade.error is None:
            store.put(key, grade)
        bar.update(multiplicity[key])

    sem = asyncio.Semaphore(concurrency)

    async def one(key: str, req: GradeRequest) -> None:
        async with sem:
            grade: Grade | None = None
            for attempt in range(item_retries + 1):
                if not take_call():
                    grade = budget_error()
                    break
                stats.api_calls += 1
                try:
                    if judge.item_deadline_s is not None:
                        grade = await asyncio.wait_for(judge.grade_one(req), judge.item_deadline_s)
                    else:
                        grade = await judge.grade_one(req)
                    break
                except TransientJudgeError as exc:
                    if attempt >= item_retries:
                        grade = Grade(
                            error=f"{exc} (after {item_retries} item retries)",
                            judge_id=judge.cache_id,
                            rubric_hash=judge.rubric_hash,
                        )
                        break
                    stats.item_retries += 1
                    await asyncio.sleep(retry_backoff * (2**attempt) * (0.75 + 0.25 * random.random()))
                except TimeoutError:
                    grade = Grade(
                        error=f"grading exceeded its deadline of {judge.item_deadline_s:g} s (long retry-after?)",
                        judge_id=judge.cache_id,
                        rubric_hash=judge.rubric_hash,
                    )
                    break
            assert grade is not None
            record(key, grade)

    async def batched(items: list[tuple[str, GradeRequest]]) -> None:
        grades = await judge.grade_batch([r for _, r in items])
        for (key, _), grade in zip(items, grades, strict=True):
            record(key, grade)

    try:
        pending = list(todo.items())
        if judge.supports_batch:
            for i in range(0, len(pending), batch_size):
                await batched(pending[i : i + batch_size])
        else:
            tasks = [asyncio.ensure_future(one(k, r)) for k, r in pending]
            try:
                await asyncio.gather(*tasks)
            except BaseException:  # JudgeFatalError, a bug, or cancellation: stop every grading
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
    finally:
        bar.close()
        await judge.aclose()

    grades = []
    for key, req in zip(keys, reqs, strict=True):
        grade = judge.finalize(raw[key], req)
        grades.append(grade)
        if grade.error is None:
            stats.graded += 1
        else:
            stats.errors += 1
            if len(stats.error_examples) < 5:
                stats.error_examples.append(grade.error[:300])
    stats.http_requests = getattr(judge, "http_requests", 0) - http_before
    stats.elapsed_s = time.monotonic() - t0
    if stats.errors:
        log.warning(
            "judge %s: %d of %d requests carry an error", judge.judge_id, stats.errors, stats.n_requests
        )
    return GradingReport(grades=grades, stats=stats)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, also when an event loop is already running in
    this thread (Jupyter): then it runs on a worker thread with a fresh loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="esr-judge") as pool:
        return pool.submit(asyncio.run, coro).result()


def run_grading(judge: Judge, requests: Sequence[GradeRequest], **options: Any) -> GradingReport:
    """Synchronous :func:`grade_async`: grades and run statistics."""
    return run_sync(grade_async(judge, requests, **options))


def grade_all(judge: Judge, requests: Sequence[GradeRequest], **options: Any) -> list[Grade]:
    """Synchronous grading (usable from scripts and Jupyter): one grade per request, in order.

    ``options`` are those of :func:`grade_async`: ``cache``, ``concurrency``, ``max_calls``, ``on_budget``,
    ``item_retries``, ``retry_backoff``, ``progress``."""
    return run_grading(judge, requests, **options).grades
