"""Runs the NDIF API (gunicorn + uvicorn workers, ndif's own config) inside the server's Python 3.12
environment, with anyio's asyncio backend imported **before** anything imports nnsight.

Why: nnsight mounts a ``save`` attribute on every Python object. anyio imports its asyncio backend lazily,
at the first call that needs it, and that import defines ``TypedAttributeSet`` subclasses, whose class check
then finds the mounted, unannotated ``save`` and raises ``TypeError: Attribute 'save' is missing its type
annotation``. In ndif 0.1.2's API worker nnsight is imported with the app, and the first such anyio call is
Starlette spooling an uploaded request blob larger than 1 MiB to disk in a worker thread; so every request
whose blob exceeds 1 MiB failed with HTTP 400 "There was an error parsing the body" (measured: a 0.97 MB
blob went through, a 1.12 MB one did not). Importing the backend first, in the master before it forks,
makes that later call find it loaded. Nothing else of ndif's API is changed.

Usage (what :class:`esr_analysis.tracing.ndif_local.LocalNdif` runs):
``python esr_ndif_api.py --config python:ndif.services.api.gunicorn_conf --bind HOST:PORT ... ndif.services.api.app:app``
"""

from __future__ import annotations

import sys

import anyio._backends._asyncio  # noqa: F401  (before nnsight: see the module docstring)

if __name__ == "__main__":
    from gunicorn.app.wsgiapp import run

    sys.argv = ["gunicorn", *sys.argv[1:]]
    run()
