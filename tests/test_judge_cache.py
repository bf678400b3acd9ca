"""The SQLite grade cache: keys, round trips, errors not stored, concurrent writers (threads, processes)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from esr_analysis.judge.cache import GradeCache, cache_key
from esr_analysis.judge.types import Attempt, Grade, GradeRequest

REQ = GradeRequest(prompt="p", response="r", latent_label="l")


def _grade(score: float = 50.0, judge_id: str = "j") -> Grade:
    return Grade(
        attempts=[Attempt(text="t", score=score)], raw_response="raw", judge_id=judge_id, rubric_hash="h"
    )


def test_cache_key_depends_on_every_field():
    base = cache_key("j", "h", REQ)
    assert base == cache_key("j", "h", GradeRequest(prompt="p", response="r", latent_label="l"))
    assert len(base) == 64
    variants = [
        cache_key("j2", "h", REQ),
        cache_key("j", "h2", REQ),
        cache_key("j", "h", GradeRequest(prompt="p2", response="r", latent_label="l")),
        cache_key("j", "h", GradeRequest(prompt="p", response="r2", latent_label="l")),
        cache_key("j", "h", GradeRequest(prompt="p", response="r", latent_label="l2")),
        # field boundaries are unambiguous: moving text between fields changes the key
        cache_key("j", "h", GradeRequest(prompt="pr", response="", latent_label="l")),
    ]
    assert len({base, *variants}) == 7


def test_round_trip_marks_cached_and_skips_errors(tmp_path: Path):
    cache = GradeCache(tmp_path / "sub" / "c.sqlite")
    key = cache_key("j", "h", REQ)
    assert cache.get(key) is None
    assert cache.put(key, _grade(42.0))
    got = cache.get(key)
    assert got is not None and got.cached and got.attempts[0].score == 42.0 and got.raw_response == "raw"
    err_key = cache_key("j", "h", GradeRequest(prompt="x", response="y"))
    assert not cache.put(err_key, Grade(error="boom", judge_id="j", rubric_hash="h"))
    assert cache.get(err_key) is None
    assert len(cache) == 1
    # a fresh handle on the same file sees it; replacing a key keeps one row
    other = GradeCache(tmp_path / "sub" / "c.sqlite")
    other.put(key, _grade(7.0))
    assert len(cache) == 1 and cache.get(key).attempts[0].score == 7.0
    assert cache.clear(judge_id="other") == 0 and cache.clear() == 1 and len(cache) == 0


def test_concurrent_threads(tmp_path: Path):
    cache = GradeCache(tmp_path / "c.sqlite")
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(100):
                req = GradeRequest(prompt=f"{t}-{i}", response="r")
                cache.put(cache_key("j", "h", req), _grade(float(i)))
                assert cache.get(cache_key("j", "h", req)) is not None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(cache) == 600


_WRITER = """
import sys
from esr_analysis.judge.types import Attempt, Grade, GradeRequest
from esr_analysis.judge.cache import GradeCache, cache_key
cache = GradeCache(sys.argv[1])
for i in range(150):
    req = GradeRequest(prompt=f"{sys.argv[2]}-{i}", response="r")
    g = Grade(attempts=[Attempt(text="t", score=1)], judge_id="j", rubric_hash="h")
    cache.put(cache_key("j", "h", req), g)
    # every process also rewrites one shared key
    cache.put(cache_key("j", "h", GradeRequest(prompt="shared", response="r")), g)
"""


def test_concurrent_processes(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    GradeCache(path)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(n)]) for n in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert len(GradeCache(path)) == 3 * 150 + 1
