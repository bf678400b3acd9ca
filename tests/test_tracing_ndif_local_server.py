"""The server side of the local NDIF (``server/esr_ndif_server.py``), checked in the server's own Python 3.12
environment without starting the stack: the actor class ndif's controller is told to use is one it can
create replicas from, it loads the served folder on the CPU with the same logits as transformers here, and the
deploy step fails fast instead of waiting forever."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from esr_analysis.tracing.ndif_local.instance import ACTOR_IMPORT_PATH, SERVER_DIR, model_key

pytestmark = pytest.mark.ndif

IDS = [[5, 6, 7, 8, 9]]

SERVER_CHECKS = r'''
import json, os, sys, threading, time
import torch
torch.set_num_threads(1)
folder, key, path, ids = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
import esr_ndif_server as srv
from ndif.services.ray.deployments.controller.cluster.deployment import Deployment, DeploymentLevel

out = {}
# ndif's own resolution of the configured class, and the call its controller makes to create a replica
dep = Deployment(model_key=key, replica_id="r0", deployment_level=DeploymentLevel.HOT, gpus={0: 1},
                 size_bytes=1, actor_class=path)
cls = dep._resolve_actor_class()
out["cacheable"] = dep.cacheable
try:
    cls.options(name=dep.name, resources={"node:127.0.0.1": 0.01}, namespace="NDIF", lifetime="detached",
                runtime_env={"env_vars": {"NDIF_SERVICE": "model"}})
    out["options"] = "ok"
except Exception as exc:
    out["options"] = repr(exc)

def refusal(p):
    try:
        srv.check_actor_class(p)
    except SystemExit as exc:
        return str(exc)
    return None

out["refuse_configured"] = refusal(path)
out["refuse_plain"] = refusal("esr_ndif_server.CpuModelDeployment")
out["refuse_missing"] = refusal("esr_ndif_server.NoSuchActor")

# what the actor's constructor loads (the constructor itself needs a Ray worker)
actor = object.__new__(srv.CpuModelDeployment)
actor.model_key, actor.dtype_name, actor.kwargs = key, "float32", {"trust_remote_code": True}
model = actor.load_from_disk()
params = list(model._module.parameters())
out["devices"] = sorted({p.device.type for p in params})
out["dtypes"] = sorted({str(p.dtype) for p in params})
out["grad"] = any(p.requires_grad for p in params)
with torch.no_grad():
    out["logits"] = model._module(torch.tensor(ids)).logits.tolist()

# the deploy step's wait, with ndif's deploy and the controller's status replaced
def wait(deploy, states, timeout=3.0):
    t0 = time.monotonic()
    try:
        srv.deploy_and_wait([{}, {}], timeout, deploy=deploy, states=states, poll_s=0.05)
    except SystemExit as exc:
        return [str(exc), time.monotonic() - t0]
    return [None, time.monotonic() - t0]

def forever(specs):
    threading.Event().wait()

def boom(specs):
    raise RuntimeError("boom")

def quick(specs):
    time.sleep(0.2)

running = lambda: {"a": "RUNNING", "b": "RUNNING"}
out["wait_dead"] = wait(forever, lambda: {"a": "RUNNING", "b": "UNHEALTHY"})
out["wait_raises"] = wait(boom, lambda: {"a": "DEPLOYING"})
out["wait_ready"] = wait(quick, running)
out["wait_deploy_pending"] = wait(forever, running, timeout=1.0)
out["wait_one_short"] = wait(quick, lambda: {"a": "RUNNING", "b": "DEPLOYING"}, timeout=1.0)
print("RESULT " + json.dumps(out), flush=True)
'''


@pytest.fixture(scope="module")
def server_checks(ndif_server_python):
    from esr_analysis.tracing.ndif_local.models import tiny_model_folder

    folder = str(tiny_model_folder())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(SERVER_DIR), NDIF_MODEL_IMPORT_PATH=ACTOR_IMPORT_PATH, HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([ndif_server_python, "-c", SERVER_CHECKS, folder, model_key(folder), ACTOR_IMPORT_PATH,
                           json.dumps(IDS)], env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"server-side checks failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return folder, json.loads(lines[-1][len("RESULT "):])


def test_the_configured_actor_class_is_one_ndif_can_create_replicas_from(server_checks):
    """ndif's controller creates a replica with ``actor_class.options(...).remote(...)`` and swallows any error
    there: the class must be a Ray actor class (the plain subclass had no ``options``, so no replica ever came
    up), and not cacheable (parking it would call CUDA)."""
    _, out = server_checks
    assert out["options"] == "ok"
    assert out["cacheable"] is False
    assert out["refuse_configured"] is None
    assert "not a Ray actor class" in out["refuse_plain"]
    assert "does not import" in out["refuse_missing"]


def test_the_actor_loads_the_served_folder_on_the_cpu_like_transformers(server_checks):
    from transformers import AutoModelForCausalLM

    folder, out = server_checks
    assert out["devices"] == ["cpu"] and out["dtypes"] == ["torch.float32"] and out["grad"] is False
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        want = ref(torch.tensor(IDS)).logits
    torch.testing.assert_close(torch.tensor(out["logits"]), want, atol=1e-5, rtol=1e-5)


def test_the_deploy_step_fails_fast_and_waits_for_every_replica(server_checks):
    _, out = server_checks
    msg, secs = out["wait_dead"]
    assert "died" in msg and secs < 2.0
    msg, secs = out["wait_raises"]
    assert "deploy failed" in msg and "boom" in msg and secs < 2.0
    assert out["wait_ready"][0] is None
    assert "not running after" in out["wait_deploy_pending"][0]  # every actor alive, but ndif's deploy not done
    assert "not running after" in out["wait_one_short"][0]
