"""files.py: atomic writes never leave a partial or missing file, locks exclude, hashes are SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

from esr_analysis import files


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_atomic_writes_round_trip(tmp_path):
    p = files.atomic_write_text(tmp_path / "sub" / "a.txt", "héllo")
    assert p.read_text(encoding="utf-8") == "héllo"
    files.atomic_write_json(tmp_path / "b.json", {"x": [1, 2]}, indent=None)
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2]}
    files.atomic_write_bytes(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "keep.json"
    files.atomic_write_text(p, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write_text(p, "new")
    assert p.read_text() == "old" and _leftovers(tmp_path) == []


def test_an_exception_inside_atomic_path_writes_nothing(tmp_path):
    p = tmp_path / "fig.png"
    with pytest.raises(RuntimeError), files.atomic_path(p) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("renderer crashed")
    assert not p.exists() and _leftovers(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="nothing was written"), files.atomic_path(p):
        pass


def test_atomic_directory_replaces_only_when_complete(tmp_path):
    d = tmp_path / "copy"
    with files.atomic_directory(d) as tmp:
        (tmp / "f").write_text("1")
    assert (d / "f").read_text() == "1"
    with pytest.raises(RuntimeError), files.atomic_directory(d) as tmp:
        (tmp / "f").write_text("2")
        raise RuntimeError("conversion failed")
    assert (d / "f").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["copy"]
    with files.atomic_directory(d) as tmp:
        (tmp / "g").write_text("3")
    assert sorted(p.name for p in d.iterdir()) == ["g"] and sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_lock_excludes_and_releases(tmp_path):
    lock = tmp_path / "locks" / "x.lock"
    with files.file_lock(lock):
        with pytest.raises(BlockingIOError):
            files.acquire_lock(lock, blocking=False)
        order = []

        def waiter():
            with files.file_lock(lock):
                order.append("waiter")

        t = threading.Thread(target=waiter)
        t.start()
        t.join(0.3)
        order.append("holder")
    t.join(5)
    assert order == ["holder", "waiter"]
    fd = files.acquire_lock(lock, blocking=False)
    files.release_lock(fd)


def test_sha256_file(tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 17)  # crosses the 4 MiB read block
    (tmp_path / "d").write_bytes(data)
    assert files.sha256_file(tmp_path / "d") == hashlib.sha256(data).hexdigest()
