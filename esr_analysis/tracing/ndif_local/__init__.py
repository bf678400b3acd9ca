"""A local NDIF server, started and stopped by the toolkit, to test every remote path against the real server
software on the CPU and on loopback (``pytest -m ndif``; ``make ndif-up`` / ``ndif-down`` / ``ndif-status``).

* :mod:`.env`: the server's own Python 3.12 environment (``ndif`` 0.1.2), built once per machine.
* :mod:`.instance`: :class:`LocalNdif`, one running stack (redis, moto S3, Ray head, controller, API) with
  free ports, tracked processes, logs, and a stop that leaves no process and no port.
* :mod:`.client`: pointing nnsight at it and building weightless models of the served folders.
* :mod:`.models`: the folders served (the embedded model's HF copy and a tiny random Llama).
* ``server/esr_ndif_server.py``: runs inside the server environment (CPU model actor, deploy step).

See ``docs/remote.md`` for what it costs and what is tested.
"""

from __future__ import annotations

from esr_analysis.tracing.ndif_local.env import NdifUnavailable, build_venv, venv_ready, why_unavailable
from esr_analysis.tracing.ndif_local.instance import LocalNdif, stack_run_dir

__all__ = ["LocalNdif", "NdifUnavailable", "build_venv", "stack_run_dir", "venv_ready", "why_unavailable"]
