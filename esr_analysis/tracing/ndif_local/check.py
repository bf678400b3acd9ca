"""Running the ``ndif`` tests as their own step of ``make test`` (and so of CI), and checking afterwards that
every local NDIF they started is gone.

* :func:`run_ndif_tests` decides whether the step can run here (:func:`~.env.why_unavailable`), builds the
  server environment when needed (a cached build is reused), runs ``pytest`` with ``ESR_REQUIRE_NDIF=1`` in its
  own process (a stack that does not come up is a failure, never a skip), then checks for leftovers.
* The *ledger*: while the variable :data:`LEDGER_VAR` names a folder, every :class:`~.instance.LocalNdif` writes a
  copy of its state there (``<run_id>.json``: ports, pids with their start times) each time it saves its state,
  and the copy is never removed by ``stop``. The ledger therefore lists every stack the step started, even one
  whose ``stop`` never ran.
* :func:`leftovers` reads the ledger and names every process of those stacks still alive (found by the
  environment mark ``ESR_NDIF_RUN_ID`` or by recorded pid + start time) and every one of their ports something
  still listens on, with the owning process where it can be read. Only stacks in the ledger are "ours": a stack
  a user started with ``make ndif-up``, or another checkout's tests, are not touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from esr_analysis.tracing.ndif_local.env import NdifUnavailable, build_venv, why_unavailable
from esr_analysis.tracing.ndif_local.instance import LEDGER_VAR

if TYPE_CHECKING:
    from esr_analysis.tracing.ndif_local.instance import LocalNdif

REQUIRE_VAR = "ESR_REQUIRE_NDIF"
EXIT_LEFTOVERS = 3
"""Exit status of :func:`run_ndif_tests` when the tests passed but a process or port was left."""


def ledger_instances(ledger: str | Path) -> list[LocalNdif]:
    """The instances recorded in ``ledger`` (their last recorded state)."""
    from esr_analysis.tracing.ndif_local.instance import LocalNdif

    out = []
    for path in sorted(Path(ledger).glob("*.json")):
        data = json.loads(path.read_text())
        data["run_dir"] = Path(data["run_dir"])
        out.append(LocalNdif(**data))
    return out


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160] or "?"


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP ``port`` (IPv4 or IPv6, any address), from ``/proc/net/tcp{,6}``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def port_owners(port: int) -> list[int]:
    """PIDs (of the processes this user can inspect) holding a socket that listens on ``port``."""
    targets = {f"socket:[{i}]" for i in listening_inodes(port)}
    owners: list[int] = []
    if not targets:
        return owners
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in targets for fd in (entry / "fd").iterdir()):
                owners.append(int(entry.name))
        except OSError:
            continue
    return owners


def leftovers(ledger: str | Path) -> list[str]:
    """One line per process still alive and per port still listened on, of every stack in ``ledger``."""
    lines = []
    for inst in ledger_instances(ledger):
        for pid in inst.alive():
            lines.append(f"stack {inst.run_id}: process {pid} still running: {_cmdline(pid)}")
        for port in inst.open_ports():
            name = next((k for k, v in inst.ports.items() if v == port), "?")
            owners = ", ".join(f"{p} ({_cmdline(p)})" for p in port_owners(port)) or "owner not readable"
            lines.append(f"stack {inst.run_id}: port {port} ({name}) still open: {owners}")
        if inst.ray_temp.exists():
            lines.append(f"stack {inst.run_id}: Ray's temp folder {inst.ray_temp} was not removed")
    return lines


def clean(ledger: str | Path) -> list[str]:
    """Stop every stack of ``ledger`` again (by its mark and recorded pids only); what still survives."""
    for inst in ledger_instances(ledger):
        with contextlib.suppress(RuntimeError):  # what survives is reported just below
            inst.stop()
    return leftovers(ledger)


def _banner(lines: list[str]) -> str:
    bar = "=" * 100
    return "\n".join([bar, *lines, bar])


def run_ndif_tests(pytest_args: list[str], *, python: str = sys.executable) -> int:
    """The ``ndif`` step of ``make test``: run ``python -m pytest *pytest_args`` against a local NDIF, then
    check for leftovers. Returns the exit status:

    * the local NDIF cannot run here (no Python 3.12/3.13, no redis-server): one clear message; 0, so the
      rest of ``make test`` stands, unless ``ESR_REQUIRE_NDIF=1`` (CI), where it is 2;
    * else pytest's status, or :data:`EXIT_LEFTOVERS` when pytest passed but a process or port of a stack it
      started was left (the leftovers are named, then stopped).
    """
    required = os.environ.get(REQUIRE_VAR, "") == "1"
    reason = why_unavailable()
    if reason:
        verdict = "FAILED (ESR_REQUIRE_NDIF=1)" if required else "not run"
        print(_banner([f"ndif tests {verdict}: the local NDIF server cannot run on this machine: {reason}.",
                       "The rest of the test suite ran; these tests check the remote (NDIF) paths against a "
                       "real server (docs/remote.md)."]), file=sys.stderr, flush=True)
        return 2 if required else 0
    t0 = time.monotonic()
    try:
        build_venv()
    except NdifUnavailable as exc:
        print(_banner([f"ndif tests FAILED: {exc}"]), file=sys.stderr, flush=True)
        return 2
    t1 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="esr-ndif-ledger-") as ledger:
        env = dict(os.environ, **{REQUIRE_VAR: "1", LEDGER_VAR: ledger})
        proc = subprocess.Popen([python, "-m", "pytest", *pytest_args], env=env)
        # Ctrl-C reaches pytest too (same process group): it tears its fixture down; wait for it, then check.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        forward = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGINT))
        try:
            rc = proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, forward)
        left = leftovers(ledger)
        if left:
            survivors = clean(ledger)
            print(_banner(["ndif tests: the local NDIF left processes or ports behind after pytest:", *left,
                           "they were stopped now" if not survivors else f"STILL LEFT after a second stop: "
                           f"{survivors}"]), file=sys.stderr, flush=True)
            return rc or EXIT_LEFTOVERS
        stacks = len(ledger_instances(ledger))
        print(f"ndif tests: pytest exit status {rc}; {stacks} local NDIF stack(s) started and stopped, no process "
              f"and no port left; server environment {t1 - t0:.0f} s, tests {time.monotonic() - t1:.0f} s",
              file=sys.stderr, flush=True)
    return rc
