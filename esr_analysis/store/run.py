"""Writing run directories: atomic manifest, append-only ``trials.jsonl``, crash-safe resume.

A run directory holds

* ``manifest.json``: the :class:`RunManifest`, always replaced atomically (temp file, fsync, ``os.replace``);
* ``trials.jsonl``: one :class:`Trial` per line, append-only.  Each line goes out as a single ``write`` of
  the whole line including its newline, then ``fsync``.  A crash can therefore only leave an
  *unterminated final line*; resuming truncates it and the experiment redoes that trial;
* ``.lock``: an advisory ``flock`` held by the one open writer (released by the OS if the process dies).

Typical use::

    with open_run("runs/exp1", RunManifest.collect(model_id=..., config=RunConfig(...))) as run:
        for spec in work:
            trial = Trial(**spec)          # trial_id is a content key of the spec
            if run.is_done(trial.trial_id):
                continue
            ...generate and grade...
            run.append(trial.model_copy(update={"response": ..., "grade": ...}))
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from ..files import acquire_lock, atomic_write_text, fsync_dir, release_lock
from .read import MANIFEST_NAME, TRIALS_NAME, LoadReport, RunFormatError, parse_trial_lines, read_manifest
from .schema import RunManifest, Trial, utcnow

__all__ = [
    "LOCK_NAME",
    "DuplicateTrialError",
    "RunConflictError",
    "RunLockedError",
    "RunWriter",
    "open_run",
    "write_manifest",
]

LOCK_NAME = ".lock"


class RunConflictError(ValueError):
    """The directory holds a run with a different identity (config, model, judge, ...)."""


class RunLockedError(RuntimeError):
    """Another open writer holds the run directory."""


class DuplicateTrialError(ValueError):
    """A trial with this ``trial_id`` is already recorded in the run."""


def write_manifest(directory: str | Path, manifest: RunManifest) -> Path:
    """Atomically write ``manifest.json`` into ``directory``."""
    path = Path(directory) / MANIFEST_NAME
    atomic_write_text(path, manifest.model_dump_json(indent=2) + "\n")
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _lock(directory: Path) -> int:
    try:
        return acquire_lock(directory / LOCK_NAME, blocking=False)
    except BlockingIOError:
        raise RunLockedError(
            f"{directory} is open in another writer (process or object); close it first"
        ) from None


def _unlock(fd: int | None) -> None:
    if fd is not None:
        release_lock(fd)


def _repair_tail(path: Path) -> tuple[bytes, int]:
    """Truncate an unterminated final line; return the remaining content and the number of bytes dropped."""
    fd = os.open(path, os.O_RDWR)
    try:
        data = b""
        while chunk := os.read(fd, 1 << 20):
            data += chunk
        if not data or data.endswith(b"\n"):
            return data, 0
        keep = data.rfind(b"\n") + 1
        os.ftruncate(fd, keep)
        os.fsync(fd)
        return data[:keep], len(data) - keep
    finally:
        os.close(fd)


class RunWriter:
    """An open run directory: append trials, query finished ones, close to stamp the end time.

    Created by :func:`open_run`; use it as a context manager.  Not thread-safe (one writer per run).
    """

    def __init__(
        self,
        directory: Path,
        manifest: RunManifest,
        *,
        done: set[str],
        lock_fd: int | None,
        fsync: bool,
        report: LoadReport | None,
        repaired_bytes: int,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.trials_path = directory / TRIALS_NAME
        self.report = report
        """The :class:`LoadReport` of the existing trials read on resume (``None`` for a new run)."""
        self.repaired_bytes = repaired_bytes
        """Bytes of an unterminated final line dropped on resume (0 when the file was clean)."""
        self.n_appended = 0
        self._done = done
        self._lock_fd = lock_fd
        self._fsync = fsync
        self._fd: int | None = os.open(self.trials_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    # -- queries ---------------------------------------------------------------------------------
    def done_ids(self) -> frozenset[str]:
        """The ``trial_id`` of every trial recorded in this run (before and during this session)."""
        return frozenset(self._done)

    def is_done(self, trial_id: str) -> bool:
        """Whether ``trial_id`` is already recorded."""
        return trial_id in self._done

    @property
    def n_trials(self) -> int:
        return len(self._done)

    @property
    def closed(self) -> bool:
        return self._fd is None

    # -- writing ---------------------------------------------------------------------------------
    def append(self, trial: Trial | dict[str, Any]) -> Trial:
        """Append one trial as one line (single write + fsync).  Raises :class:`DuplicateTrialError` if its
        ``trial_id`` is already recorded (check :meth:`is_done` first to skip finished work)."""
        if self._fd is None:
            raise ValueError(f"run {self.directory} is closed")
        if not isinstance(trial, Trial):
            trial = Trial.model_validate(trial)
        if trial.trial_id in self._done:
            raise DuplicateTrialError(f"trial {trial.trial_id} is already recorded in {self.trials_path}")
        line = trial.model_dump_json().encode("utf-8") + b"\n"
        _write_all(self._fd, line)
        if self._fsync:
            os.fsync(self._fd)
        self._done.add(trial.trial_id)
        self.n_appended += 1
        return trial

    def close(self, *, event: str = "closed", detail: str | None = None) -> None:
        """Close the trials file, stamp ``ended_at`` (for a normal close) and the history, release the lock."""
        if self._fd is None:
            return
        try:
            os.close(self._fd)
            self._fd = None
            now = utcnow()
            entry: dict[str, Any] = {"event": event, "at": now.isoformat(), "n_trials": len(self._done),
                                     "n_appended": self.n_appended}
            if detail:
                entry["detail"] = detail
            update: dict[str, Any] = {"history": [*self.manifest.history, entry]}
            if event == "closed":
                update["ended_at"] = now
            self.manifest = self.manifest.model_copy(update=update)
            write_manifest(self.directory, self.manifest)
        finally:
            _unlock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(event="interrupted", detail=f"{exc_type.__name__}: {exc}")

    def __del__(self) -> None:  # pragma: no cover - safety net only
        if getattr(self, "_fd", None) is not None:
            with contextlib.suppress(Exception):
                os.close(self._fd)  # type: ignore[arg-type]
            _unlock(getattr(self, "_lock_fd", None))


def open_run(
    directory: str | Path,
    manifest: RunManifest,
    *,
    resume: bool = True,
    overwrite: bool = False,
    fsync: bool = True,
    strict: bool = True,
) -> RunWriter:
    """Open (create or resume) the run directory ``directory`` for appending trials.

    * No manifest there: create the directory, write ``manifest`` (``started_at`` defaults to now) and an
      empty ``trials.jsonl``.
    * A manifest with the **same identity** (:meth:`RunManifest.identity`: experiment, model, dtype, SAE,
      layers, judge, rubric, config): with ``resume=True`` continue it: an unterminated final line left by a
      crash is truncated (its trial is redone), existing trials are read (corrupt/foreign lines raise
      :class:`RunFormatError` unless ``strict=False``) and their ids returned by :meth:`RunWriter.done_ids`;
      the stored manifest is kept and a ``resumed`` entry (with this session's git commit and versions) is
      added to its history.  With ``resume=False`` raise :class:`FileExistsError` unless ``overwrite=True``.
    * A manifest with a **different identity**: raise :class:`RunConflictError` naming the differing fields,
      unless ``overwrite=True``.
    * ``overwrite=True`` (with a different identity, or with ``resume=False``): delete the old trials and
      start afresh.

    ``fsync=False`` skips the per-line fsync (faster; a machine crash, not a process crash, may then lose the
    last lines, which a resume redoes).  Only one writer may hold a run (:class:`RunLockedError`).
    """
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise NotADirectoryError(f"{d} exists and is not a directory")
    d.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(d)
    try:
        return _open_locked(d, manifest, lock_fd, resume=resume, overwrite=overwrite, fsync=fsync, strict=strict)
    except BaseException:
        _unlock(lock_fd)
        raise


def _open_locked(
    d: Path, manifest: RunManifest, lock_fd: int | None, *, resume: bool, overwrite: bool, fsync: bool, strict: bool
) -> RunWriter:
    mpath, tpath = d / MANIFEST_NAME, d / TRIALS_NAME
    now = utcnow()
    fresh = True
    old: RunManifest | None = None
    if mpath.exists():
        old = read_manifest(d)
        diff = old.identity_diff(manifest)
        if diff and not overwrite:
            raise RunConflictError(
                f"{d} holds a run with a different {', '.join(diff)}; choose another directory, or pass "
                "overwrite=True to delete its trials and start again"
            )
        if not diff and not resume and not overwrite:
            raise FileExistsError(f"{d} already holds this run; pass resume=True to continue it or overwrite=True")
        fresh = bool(diff) or not resume
    elif tpath.exists() and tpath.stat().st_size > 0:
        raise RunFormatError(f"{d} has {TRIALS_NAME} but no {MANIFEST_NAME}; not a run directory made by open_run()")

    if fresh:
        with contextlib.suppress(FileNotFoundError):
            tpath.unlink()  # old trials go before the new manifest appears
        tpath.touch()
        fsync_dir(d)
        entry: dict[str, Any] = {"event": "created", "at": now.isoformat()}
        manifest = manifest.model_copy(
            update={"started_at": manifest.started_at or now, "ended_at": None, "history": [*manifest.history, entry]}
        )
        write_manifest(d, manifest)
        return RunWriter(d, manifest, done=set(), lock_fd=lock_fd, fsync=fsync, report=None, repaired_bytes=0)

    if not tpath.exists():
        tpath.touch()
    data, dropped = _repair_tail(tpath)
    if dropped:
        warnings.warn(
            f"{tpath}: dropped an unterminated final line ({dropped} bytes) left by an interrupted write; "
            "that trial is not marked done and will be redone",
            stacklevel=3,
        )
    assert old is not None
    trials, report = parse_trial_lines(data, tpath, strict=strict)
    entry = {"event": "resumed", "at": now.isoformat(), "n_trials": len(trials), "dropped_bytes": dropped,
             "git_commit": manifest.git_commit, "versions": manifest.versions}
    resumed = old.model_copy(update={"ended_at": None, "history": [*old.history, entry]})
    write_manifest(d, resumed)
    return RunWriter(
        d, resumed, done={t.trial_id for t in trials}, lock_fd=lock_fd, fsync=fsync, report=report,
        repaired_bytes=dropped,
    )
