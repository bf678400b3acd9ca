"""Grade cache: one SQLite file mapping a content hash to a grade.

The **cache key** of a request is the sha256 (hex) of the JSON array
``[CACHE_FORMAT, cache_id, rubric_hash, prompt, response, latent_label, steered]``: the same judge, rubric and text
always hit the same entry, and any change to one of them is a miss. ``cache_id`` is the judge's identity
without post-processing (so a restart-gated run reuses the ungated grades).

Only successful grades are stored (grades with an error are retried next time). A stored grade is read
back with ``cached=True``. Re-grading a run therefore makes zero API calls.

Concurrency: SQLite in WAL mode with a busy timeout; every ``put`` is its own transaction and uses
``INSERT OR REPLACE``, so several threads or processes may share one file. Connections are per thread and
per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from esr_analysis.judge.types import Grade, GradeRequest

CACHE_FORMAT = "esr-grade-cache-v1"
DEFAULT_CACHE_NAME = "judge_grades.sqlite"


def cache_key(cache_id: str, rubric_hash: str, request: GradeRequest) -> str:
    """The content hash under which the grade of ``request`` by judge ``cache_id`` is stored."""
    payload = [CACHE_FORMAT, cache_id, rubric_hash, request.prompt, request.response, request.latent_label,
               request.steered]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()


def default_cache_path() -> Path:
    """``<esr cache dir>/judge_grades.sqlite`` (``$ESR_CACHE_DIR``, default ``~/.cache/esr-analysis``)."""
    from esr_analysis.paths import cache_dir

    return cache_dir() / DEFAULT_CACHE_NAME


class GradeCache:
    """A SQLite grade cache at ``path`` (created with its parent directory when missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._conn()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS grades (key TEXT PRIMARY KEY, judge_id TEXT NOT NULL, "
            "rubric_hash TEXT NOT NULL, grade TEXT NOT NULL, created REAL NOT NULL)"
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def get(self, key: str) -> Grade | None:
        """The cached grade under ``key`` (with ``cached=True``), or ``None``."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Grade]:
        """Cached grades for the keys that are present."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, Grade] = {}
        conn = self._conn()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for key, text in conn.execute(f"SELECT key, grade FROM grades WHERE key IN ({marks})", chunk):
                grade = Grade.model_validate_json(text)
                out[key] = grade.model_copy(update={"cached": True})
        return out

    def put(self, key: str, grade: Grade) -> bool:
        """Store ``grade`` under ``key``; grades with an error are not stored (returns ``False``)."""
        if grade.error is not None:
            return False
        text = grade.model_copy(update={"cached": False}).model_dump_json()
        self._conn().execute(
            "INSERT OR REPLACE INTO grades (key, judge_id, rubric_hash, grade, created) VALUES (?, ?, ?, ?, ?)",
            (key, grade.judge_id, grade.rubric_hash, text, time.time()),
        )
        return True

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM grades").fetchone()[0])

    def clear(self, judge_id: str | None = None) -> int:
        """Delete every entry (or those of one ``judge_id``); returns how many were deleted."""
        if judge_id is None:
            cur = self._conn().execute("DELETE FROM grades")
        else:
            cur = self._conn().execute("DELETE FROM grades WHERE judge_id = ?", (judge_id,))
        return cur.rowcount

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __repr__(self) -> str:
        return f"GradeCache({str(self.path)!r})"
