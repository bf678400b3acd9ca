"""Ray's logs of a local NDIF: the error lines worth showing when a deploy fails (:func:`ray_log_errors`), and a
copy of the text logs kept past ``stop`` (:func:`keep_ray_logs`), so a failed run can be read after Ray's temp
folder is gone."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

RAY_ERROR_MARKS = ("Error creating actor", "Failed to get actor handle", "Traceback (most recent call last)",
                   " ERROR ")
"""Lines of Ray's worker logs worth showing when a deploy fails: ndif's controller logs a failed replica
creation ("Error creating actor ...") there and carries on, so it is the only place the cause appears."""


def _ray_sessions(ray_temp: Path) -> list[Path]:
    """The session folders under Ray's temp folder (``session_latest`` is a link to one of them)."""
    return sorted(p for p in ray_temp.glob("session_*") if p.is_dir() and not p.is_symlink())


def ray_log_errors(ray_temp: Path, limit: int = 80, after: int = 12) -> str:
    """Error lines (:data:`RAY_ERROR_MARKS`), each with the ``after`` lines that follow it, from the worker
    logs (``worker-*.out/.err``) of the Ray sessions under ``ray_temp``; at most ``limit`` lines in all."""
    out: list[str] = []
    for path in (p for s in _ray_sessions(ray_temp) for p in sorted((s / "logs").glob("worker-*"))):
        lines = path.read_text(errors="replace").splitlines()
        i = 0
        while i < len(lines) and len(out) < limit:
            if any(mark in lines[i] for mark in RAY_ERROR_MARKS):
                out += [f"[{path.name}]", *lines[i:i + 1 + after]]
                i += 1 + after
            else:
                i += 1
    return "\n".join(out[:limit]) if out else "(none found)"


def keep_ray_logs(ray_temp: Path, dest: Path, max_bytes: int = 5 * 2**20) -> None:
    """Copy the text logs (``*.log``, ``*.out``, ``*.err`` up to ``max_bytes`` each) of the Ray sessions under
    ``ray_temp`` to ``dest/<session>/`` before the temp folder is removed, so a failed run can be read."""
    for session in _ray_sessions(ray_temp):
        for path in (session / "logs").rglob("*"):
            if path.is_symlink() or not path.is_file() or path.suffix not in {".log", ".out", ".err"}:
                continue
            if path.stat().st_size > max_bytes:
                continue
            target = dest / session.name / path.relative_to(session / "logs")
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copyfile(path, target)
