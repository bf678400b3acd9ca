"""Runs inside the NDIF server's own Python 3.12 environment (never imported by the toolkit): a CPU model
actor and the deploy step of a local NDIF started by :mod:`esr_analysis.tracing.ndif_local`.

Only this folder is on the server's ``PYTHONPATH``, so the server cannot import ``esr_analysis``: whatever a
trace needs from the toolkit must travel with the request (:mod:`esr_analysis.tracing.kernels`).

* :class:`CpuModelActor`: ndif 0.1.2's model actor loads onto GPUs and calls CUDA (``set_device``,
  ``synchronize``); this subclass loads the model on the CPU and skips the CUDA calls. Not cacheable (there
  is no GPU to park it from).
* ``python esr_ndif_server.py ray-start ARGS``: ``ray start`` with a patient node start-up (see
  :func:`ray_start`).
* ``python esr_ndif_server.py deploy SPECS_JSON TIMEOUT_S``: pre-deploys the models (ndif 0.1.2 with nnsight
  0.8.1 cannot auto-deploy on the first request) and waits until every model actor is running.
"""

from __future__ import annotations

import gc
import json
import sys
import time

from ndif.services.ray.deployments.modeling.base import BaseModelDeployment


class CpuModelActor(BaseModelDeployment):
    """A model actor that loads and runs its model on the CPU."""

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


def _model_actor_states() -> dict[str, str]:
    from ndif.cli.lib.status import status

    out = status()
    deployments = out.get("deployments", out) if isinstance(out, dict) else {}
    states = {}
    for name, info in deployments.items():
        if isinstance(info, dict) and "application_state" in info:
            states[name] = info["application_state"]
    return states


def deploy_and_wait(specs: list[dict], timeout_s: float) -> None:
    """Deploy ``specs`` (ndif deploy spec dicts) and wait until as many model actors are RUNNING."""
    from ndif.cli.lib.deploy import deploy

    deploy(specs, on_message=lambda line: print(line, flush=True))
    t0 = time.monotonic()
    states: dict[str, str] = {}
    while time.monotonic() - t0 < timeout_s:
        states = _model_actor_states()
        if sum(s == "RUNNING" for s in states.values()) >= len(specs):
            print(f"READY after {time.monotonic() - t0:.1f} s: {states}", flush=True)
            return
        if any(s == "UNHEALTHY" for s in states.values()):
            break
        time.sleep(1.0)
    raise SystemExit(f"model actors not running after {time.monotonic() - t0:.0f} s: {states}")


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
