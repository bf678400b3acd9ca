"""Runs inside the NDIF server's own Python 3.12 environment (never imported by the toolkit): a CPU model
actor and the deploy step of a local NDIF started by :mod:`esr_analysis.tracing.ndif_local`.

Only this folder is on the server's ``PYTHONPATH``, so the server cannot import ``esr_analysis``: whatever a
trace needs from the toolkit must travel with the request (:mod:`esr_analysis.tracing.kernels`).

* :class:`CpuModelDeployment`: ndif 0.1.2's model actor loads onto GPUs and calls CUDA (``set_device``,
  ``synchronize``); this subclass loads the model on the CPU and skips the CUDA calls. Not cacheable (there
  is no GPU to park it from).
* :data:`CpuModelActor`: the same class made a Ray actor class (``ray.remote``), which is what
  ``NDIF_MODEL_IMPORT_PATH`` must name. ndif's controller creates a replica with
  ``actor_class.options(...).remote(...)`` and *swallows* any exception there (it only logs "Error creating
  actor" in its own Ray worker log): a plain subclass of ``BaseModelDeployment`` has no ``options``, so no
  replica is ever created while the deploy step waits forever for it. :func:`check_actor_class` refuses
  such a class before deploying.
* ``python esr_ndif_server.py ray-start ARGS``: ``ray start`` with a patient node start-up (see
  :func:`ray_start`).
* ``python esr_ndif_server.py deploy SPECS_JSON TIMEOUT_S``: pre-deploys the models (ndif 0.1.2 with nnsight
  0.8.1 cannot auto-deploy on the first request) and waits until every model actor is running; it fails as
  soon as a replica is known to be dead, or when ndif's deploy (which itself waits without a deadline) raises.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable

import ray
from ndif.services.ray.deployments.modeling.base import BaseModelDeployment
from ndif.services.ray.sandbox import host
from ndif.services.ray.sandbox.model import SandboxModelDeployment

ACTOR_IMPORT_PATH_VAR = "NDIF_MODEL_IMPORT_PATH"


class CpuModelDeployment(BaseModelDeployment):
    """A model actor's behaviour for the CPU: loads the model with ``device_map="cpu"`` in the requested dtype
    (``self.dtype_name``, from the deploy spec's ``dtype``), no gradients, no CUDA calls. A plain class: Ray
    runs it as :data:`CpuModelActor`."""

    CACHEABLE = False

    def load_from_disk(self):
        from nnsight.modeling.huggingface import HuggingFaceModel

        model = HuggingFaceModel.from_model_key(self.model_key, dispatch=True, dtype=self.dtype_name,
                                                device_map="cpu", **self.kwargs)
        model._module.requires_grad_(False)
        return model

    def cleanup(self) -> None:
        self.kill_switch.clear()
        self.kill_reason = None
        self.execution_ident = None
        self.model.interleaver.cancel()
        gc.collect()


RUNNER_SPAWN_TIMEOUT_S = float(os.environ.get("ESR_NDIF_RUNNER_SPAWN_TIMEOUT_S", "300"))
"""How long a sandbox runner may take to start (import torch and nnsight, build its meta model) before the
request fails; ndif's own 30 s is missed on a loaded 2-core machine."""

RUNNER_EXTRA_ENV: tuple[str, ...] = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ESR_NDIF_RUN_ID")
"""Variables a runner inherits on top of ndif's allowlist (``sandbox.host.RUNNER_ENV``): offline mode, so its
meta-model build never looks for the Hub, and the stack's run id, so the stop finds and kills runners too."""


def _patient_pool_class() -> type:
    """ndif's runner pool with :data:`RUNNER_SPAWN_TIMEOUT_S` for a runner's start and for a request's wait, and
    :data:`RUNNER_EXTRA_ENV` added to the runner's environment allowlist (in this process only)."""
    host.RUNNER_ENV = tuple(dict.fromkeys((*host.RUNNER_ENV, *RUNNER_EXTRA_ENV)))

    class PatientPool(host.Pool):
        def _spawn(self):
            return host.spawn(python=self.python, quiet=self.quiet, peers=self.peers, model_key=self.model_key,
                              trust_remote_code=self.trust_remote_code, timeout=RUNNER_SPAWN_TIMEOUT_S)

        def acquire(self, timeout: float = RUNNER_SPAWN_TIMEOUT_S):
            return super().acquire(timeout)

    return PatientPool


class CpuSandboxedDeployment(SandboxModelDeployment, CpuModelDeployment):
    """:class:`CpuModelDeployment` with ndif's sandboxed (untrusted) path: a request marked ``trusted`` runs in
    this process, as before; any other runs its traced block in a fresh *runner process*
    (``python -m ndif.services.ray.sandbox.runner``, on ndif's allowlisted environment, with only the ndif
    package importable) that drives this actor's model over a Unix socket. ndif 0.1.2's
    ``SandboxModelDeployment`` (request routing, runner life cycle, error reporting) with
    :class:`CpuModelDeployment`'s CPU loading and clean-up, a pool of ``NDIF_SANDBOX_POOL_SIZE`` (default 1)
    pre-warmed runners instead of 7, and a patient runner start (:func:`_patient_pool_class`)."""

    CACHEABLE = False

    def open_pool(self, pool_size=None, peers: int = 1) -> None:
        size = int(os.environ.get("NDIF_SANDBOX_POOL_SIZE", "1")) if pool_size is None else pool_size
        self.pool = _patient_pool_class()(size=size, peers=peers, model_key=self.model_key,
                                          trust_remote_code=self.kwargs.get("trust_remote_code", False))
        self.execution_sandbox = None


CpuModelActor = ray.remote(num_cpus=1, max_restarts=0)(CpuSandboxedDeployment)
"""The Ray actor class ``NDIF_MODEL_IMPORT_PATH`` names (``esr_ndif_server.CpuModelActor``). One CPU of the
Ray node's nominal four per replica (as ndif's own ``ModelActor``); no restarts, so a replica that dies (say,
out of memory) shows as dead at once instead of reloading in a loop. Sandboxed for untrusted requests
(:class:`CpuSandboxedDeployment`)."""


def check_actor_class(import_path: str) -> None:
    """Raise ``SystemExit`` unless ``import_path`` (``module.Class``) imports, the way ndif's controller
    resolves it, to a Ray actor class (one with ``options``) that is not cacheable."""
    module_path, _, class_name = import_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_path), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SystemExit(f"{ACTOR_IMPORT_PATH_VAR}={import_path!r} does not import: {exc!r}") from exc
    if not callable(getattr(cls, "options", None)):
        raise SystemExit(f"{ACTOR_IMPORT_PATH_VAR}={import_path!r} is not a Ray actor class (no .options; wrap "
                         "it with ray.remote): ndif's controller would fail to create every replica and only "
                         "log it, while the deploy waits forever")
    if getattr(cls, "CACHEABLE", True):
        raise SystemExit(f"{ACTOR_IMPORT_PATH_VAR}={import_path!r} is cacheable: evicting it would call CUDA")


def _model_actor_states() -> dict[str, str]:
    from ndif.cli.lib.status import status

    out = status()
    deployments = out.get("deployments", out) if isinstance(out, dict) else {}
    states = {}
    for name, info in deployments.items():
        if isinstance(info, dict) and "application_state" in info:
            states[name] = info["application_state"]
    return states


def _ndif_deploy(specs: list[dict]) -> None:
    from ndif.cli.lib.deploy import deploy

    out = deploy(specs, on_message=lambda line: print(line, flush=True))
    bad = [d for d in out.get("deployments", []) if d.get("status") != "READY"]
    if bad:
        raise RuntimeError(f"ndif deploy: {[(d.get('model_key'), d.get('status'), d.get('error')) for d in bad]}")


def deploy_and_wait(specs: list[dict], timeout_s: float, *,
                    deploy: Callable[[list[dict]], None] = _ndif_deploy,
                    states: Callable[[], dict[str, str]] = _model_actor_states,
                    poll_s: float = 1.0) -> None:
    """Deploy ``specs`` (ndif deploy spec dicts) and wait until ``deploy`` has returned and as many model
    actors are RUNNING; ``SystemExit`` when ``deploy`` raises, a replica is dead (UNHEALTHY), or after
    ``timeout_s``. ndif's deploy waits for readiness without a deadline, so it runs on a daemon thread."""
    check_actor_class(os.environ.get(ACTOR_IMPORT_PATH_VAR, "esr_ndif_server.CpuModelActor"))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            deploy(specs)
        except BaseException as exc:  # noqa: BLE001 - reported by the waiting thread
            errors.append(exc)

    now = states()  # connects to Ray on this thread before the deploy thread does
    worker = threading.Thread(target=run, name="ndif-deploy", daemon=True)
    t0 = time.monotonic()
    worker.start()
    while time.monotonic() - t0 < timeout_s:
        done = not worker.is_alive()
        if errors:
            raise SystemExit(f"deploy failed after {time.monotonic() - t0:.0f} s: {errors[0]!r}")
        now = states()
        if any(s == "UNHEALTHY" for s in now.values()):
            raise SystemExit(f"a model actor died after {time.monotonic() - t0:.0f} s: {now}")
        if done and sum(s == "RUNNING" for s in now.values()) >= len(specs):
            print(f"READY after {time.monotonic() - t0:.1f} s: {now}", flush=True)
            return
        time.sleep(poll_s)
    raise SystemExit(f"model actors not running after {time.monotonic() - t0:.0f} s: {now}")


def ray_start(args: list[str], patience_s: float = 300.0) -> None:
    """``ray start ARGS``, waiting up to ``patience_s`` for the node to register with the GCS.

    Ray 2.60 gives a starting node a fixed 30 s (``ray._private.node.Node``), which a loaded 2-core machine
    misses (the dashboard agent alone took about 55 s to import here); the wait polls
    ``ray._private.services.get_node``, so that is the one call made patient.
    """
    import ray._private.services as services
    from ray.scripts.scripts import main

    quick = services.get_node

    def patient_get_node(*a, **kw):
        t0 = time.monotonic()
        while True:
            try:
                return quick(*a, **kw)
            except RuntimeError:
                if time.monotonic() - t0 > patience_s:
                    raise
                time.sleep(1.0)

    services.get_node = patient_get_node
    sys.argv = ["ray", "start", *args]
    main()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "ray-start":
        ray_start(sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "deploy":
        deploy_and_wait(json.loads(sys.argv[2]), float(sys.argv[3]))
    else:
        raise SystemExit("usage: esr_ndif_server.py deploy SPECS_JSON TIMEOUT_S | ray-start RAY_START_ARGS...")
