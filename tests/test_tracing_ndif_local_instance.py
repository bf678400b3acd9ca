"""The parts of the local NDIF's process handling that need no server: Ray's worker-log errors surfaced on
a failed deploy, Ray's logs kept past ``stop``, and the actor class the server is told to use."""

from __future__ import annotations

import ast
import os

from esr_analysis.tracing.ndif_local.instance import ACTOR_IMPORT_PATH, SERVER_DIR, LocalNdif
from esr_analysis.tracing.ndif_local.ray_logs import keep_ray_logs, ray_log_errors

CONTROLLER_ERR = """\
2026-12-03 13:40:01 INFO controller.py:300 -- deploying
2026-12-03 13:40:02 ERROR deployment.py:220 -- Error creating actor nnsight.modeling...tiny-llama.
Traceback (most recent call last):
  File "deployment.py", line 210, in create
    actor_class.options(
AttributeError: type object 'CpuModelActor' has no attribute 'options'
2026-12-03 13:40:03 INFO controller.py:310 -- carrying on
"""


def _ray_tree(tmp_path):
    temp = tmp_path / "esr-ndif-abc"
    logs = temp / "session_2026-12-03_13-39-00_1" / "logs"
    (logs / "events").mkdir(parents=True)
    (logs / "worker-aa-01-123.err").write_text(CONTROLLER_ERR)
    (logs / "worker-bb-01-124.out").write_text("all quiet\n" * 5)
    (logs / "raylet.out").write_text("Check failed: something ERROR here\n")
    (logs / "events" / "event_GCS.log").write_text("{}\n")
    (logs / "big.log").write_bytes(b"x" * 2048)
    (logs / "ports.json").write_text("{}")
    os.symlink(temp / "session_2026-12-03_13-39-00_1", temp / "session_latest")
    return temp


def test_ray_log_errors_shows_the_swallowed_actor_creation_error_once(tmp_path):
    temp = _ray_tree(tmp_path)
    text = ray_log_errors(temp)
    assert "Error creating actor" in text and "has no attribute 'options'" in text
    assert text.count("Error creating actor") == 1  # session_latest (a link) is not read twice
    assert text.startswith("[worker-aa-01-123.err]")
    assert "Check failed" not in text and "all quiet" not in text  # only the workers' logs, only error lines
    assert ray_log_errors(temp, limit=3).count("\n") == 2
    assert ray_log_errors(tmp_path / "nothing") == "(none found)"


def test_keep_ray_logs_copies_the_text_logs_of_each_session(tmp_path):
    temp = _ray_tree(tmp_path)
    dest = tmp_path / "kept"
    keep_ray_logs(temp, dest, max_bytes=1024)
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    session = "session_2026-12-03_13-39-00_1"
    assert kept == [f"{session}/events/event_GCS.log", f"{session}/raylet.out", f"{session}/worker-aa-01-123.err",
                    f"{session}/worker-bb-01-124.out"]
    assert (dest / session / "worker-aa-01-123.err").read_text() == CONTROLLER_ERR
    keep_ray_logs(tmp_path / "nothing", dest)  # no Ray folder: nothing to do, no error


def test_the_actor_class_named_to_the_server_is_a_ray_actor_class():
    """ndif's controller calls ``.options(...)`` on the class ``NDIF_MODEL_IMPORT_PATH`` names and only logs a
    failure: a plain subclass of ``BaseModelDeployment`` never gives a replica. The name must be bound by
    ``ray.remote`` (a decorator or a call) in the server module, and the server environment must name it."""
    module, _, name = ACTOR_IMPORT_PATH.rpartition(".")
    tree = ast.parse((SERVER_DIR / f"{module}.py").read_text())

    def is_ray_remote(node):
        call = node.func if isinstance(node, ast.Call) and isinstance(node.func, ast.Call) else node
        target = call.func if isinstance(call, ast.Call) else call
        return isinstance(target, ast.Attribute) and target.attr == "remote" and \
            isinstance(target.value, ast.Name) and target.value.id == "ray"

    bound = [n for n in tree.body
             if (isinstance(n, ast.ClassDef) and n.name == name and any(map(is_ray_remote, n.decorator_list)))
             or (isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
                 and is_ray_remote(n.value))]
    assert len(bound) == 1
    inst = LocalNdif(run_dir=SERVER_DIR, models={}, ports={k: 1 for k in ("redis", "store", "client", "gcs",
                                                                           "dashboard", "api")})
    env = inst._env()
    assert env["NDIF_MODEL_IMPORT_PATH"] == ACTOR_IMPORT_PATH
    assert env["PYTHONPATH"] == str(SERVER_DIR)


STOP_AT_EXIT = """
import sys
from pathlib import Path
from esr_analysis.tracing.ndif_local.instance import LocalNdif
inst = LocalNdif(run_dir=Path(sys.argv[1]), models={})
inst.alive = lambda: [1]
inst.stop = lambda: print("STOPPED", flush=True)
inst._arm_stop_at_exit()
if sys.argv[2] == "detach":
    inst.detach()
print("EXITING", flush=True)
"""


def test_a_started_stack_is_stopped_at_exit_unless_detached(tmp_path):
    """The pytest fixture's stack ends with its process; ``ndif-up`` detaches, so its stack stays up after the
    command returns (it used to be stopped by the exit handler as soon as ``up`` printed its address)."""
    import subprocess
    import sys
    from pathlib import Path

    import esr_analysis

    root = str(Path(esr_analysis.__file__).resolve().parents[1])

    def run(mode):
        return subprocess.run([sys.executable, "-c", STOP_AT_EXIT, str(tmp_path), mode], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": root}).stdout.split()

    assert run("keep") == ["EXITING", "STOPPED"]
    assert run("detach") == ["EXITING"]
