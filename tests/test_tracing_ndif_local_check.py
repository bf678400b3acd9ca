"""The ndif step of ``make test`` without a server (``tracing/ndif_local/check.py``): the ledger names every stack
a pytest run started, a process or port of one left behind is found, named and stopped, and the step's exit
status says what happened (no server here, required or not; pytest's status; leftovers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from esr_analysis.tracing.ndif_local import check
from esr_analysis.tracing.ndif_local.instance import RUN_ID_VAR, LocalNdif, free_port, port_open

LISTENER = ("import socket, sys, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(120)\n")


def _start_listener(run_id: str, port: int) -> subprocess.Popen:
    """A stand-in for a stack's service: carries the stack's mark and listens on ``port``."""
    env = dict(os.environ, **{RUN_ID_VAR: run_id})
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, str(port)], env=env, start_new_session=True)
    t0 = time.monotonic()
    while not port_open(port):
        assert time.monotonic() - t0 < 60 and proc.poll() is None, "the listener did not come up"
        time.sleep(0.1)
    return proc


def test_the_ledger_records_each_save_and_finds_what_a_stack_left(tmp_path, monkeypatch):
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    monkeypatch.setenv(check.LEDGER_VAR, str(ledger))
    port = free_port()
    inst = LocalNdif(tmp_path / "run", {"tiny": "/nowhere"}, ports={"redis": port})
    inst.run_dir.mkdir()
    proc = _start_listener(inst.run_id, port)
    try:
        inst.pids["redis"] = proc.pid
        from esr_analysis.tracing.ndif_local.instance import _start_time

        inst.starts["redis"] = _start_time(proc.pid)
        inst.save_state()
        assert json.loads((ledger / f"{inst.run_id}.json").read_text())["pids"] == {"redis": proc.pid}
        left = check.leftovers(ledger)
        assert any(f"process {proc.pid} still running" in line for line in left)
        assert any(f"port {port} (redis) still open: {proc.pid} (" in line for line in left)
        assert check.port_owners(port) == [proc.pid]
        assert check.clean(ledger) == []
        assert proc.wait(timeout=30) is not None and not port_open(port)
        assert (ledger / f"{inst.run_id}.json").exists()  # stop removes the state file, never the ledger's copy
        assert not (inst.run_dir / "state.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_without_a_server_the_step_says_why_and_fails_only_when_required(monkeypatch, capsys):
    monkeypatch.setattr(check, "why_unavailable", lambda: "no Python 3.12 or 3.13 found for the NDIF server")
    monkeypatch.setattr(check, "build_venv", lambda **kw: pytest.fail("must not build"))
    monkeypatch.delenv(check.REQUIRE_VAR, raising=False)
    assert check.run_ndif_tests(["-m", "ndif"], python="/nonexistent/python") == 0
    err = capsys.readouterr().err
    assert "ndif tests not run" in err and "no Python 3.12" in err and "The rest of the test suite ran" in err
    monkeypatch.setenv(check.REQUIRE_VAR, "1")
    assert check.run_ndif_tests(["-m", "ndif"], python="/nonexistent/python") == 2
    assert "ndif tests FAILED (ESR_REQUIRE_NDIF=1)" in capsys.readouterr().err


FAKE_PYTEST = r'''
import json, os, subprocess, sys, time
from pathlib import Path
mode = os.environ["FAKE_MODE"]
assert sys.argv[1:3] == ["-m", "pytest"] and os.environ["ESR_REQUIRE_NDIF"] == "1", sys.argv
ledger, run_id, port = Path(os.environ["ESR_NDIF_LEDGER"]), "fake0001", int(os.environ["FAKE_PORT"])
if mode != "none":
    env = dict(os.environ, ESR_NDIF_RUN_ID=run_id)
    child = subprocess.Popen([sys.executable, "-c", os.environ["FAKE_LISTENER"], str(port)], env=env,
                             start_new_session=True)
    stat = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
    state = {"run_dir": os.environ["FAKE_RUN_DIR"], "models": {}, "run_id": run_id, "ports": {"api": port},
             "pids": {"api": child.pid}, "starts": {"api": int(stat[19])}}
    (ledger / f"{run_id}.json").write_text(json.dumps(state))
    import socket
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    if mode == "clean":
        child.kill(); child.wait()
sys.exit(int(os.environ["FAKE_RC"]))
'''


@pytest.mark.parametrize(("mode", "rc", "want"), [("clean", 0, 0), ("clean", 1, 1), ("none", 0, 0),
                                                  ("leave", 0, check.EXIT_LEFTOVERS), ("leave", 1, 1)])
def test_the_step_returns_pytests_status_and_fails_loudly_on_leftovers(tmp_path, monkeypatch, capsys, mode, rc,
                                                                        want):
    script = tmp_path / "fake_pytest.py"
    script.write_text(FAKE_PYTEST)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    python.chmod(0o755)
    port = free_port()
    monkeypatch.setattr(check, "why_unavailable", lambda: None)
    monkeypatch.setattr(check, "build_venv", lambda **kw: None)
    monkeypatch.delenv(check.REQUIRE_VAR, raising=False)
    for key, value in dict(FAKE_MODE=mode, FAKE_RC=str(rc), FAKE_PORT=str(port), FAKE_LISTENER=LISTENER,
                           FAKE_RUN_DIR=str(tmp_path)).items():
        monkeypatch.setenv(key, value)
    assert check.run_ndif_tests(["-q"], python=str(python)) == want
    err = capsys.readouterr().err
    if mode == "leave":
        assert "left processes or ports behind" in err and f"port {port} (api) still open" in err
        assert "they were stopped now" in err
    else:
        assert f"pytest exit status {rc}; {0 if mode == 'none' else 1} local NDIF stack(s)" in err
    t0 = time.monotonic()
    while port_open(port) and time.monotonic() - t0 < 10:
        time.sleep(0.1)
    assert not port_open(port)
