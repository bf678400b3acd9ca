"""Serialised sizes of remote (NDIF) requests, measured without sending anything.

Inside :func:`sizing`, every ``remote=True`` trace, generate or session of a model is serialised exactly as
nnsight's ``RemoteBackend`` would serialise it before posting it (local modules registered by value with
``nnsight.ndif.pull_env``, then ``RequestModel.serialize(tracer, compress)``), its byte counts are recorded,
and the trace is aborted with :class:`RequestPlanned` before anything leaves the process. So a planner can run
the toolkit's real call (``generate``, ``forward_with_plan``, ...) on a weightless model and get the size of the
very request that call would send.

Definitions:

* ``sent_bytes``: the request blob as posted, compressed when ``nnsight.CONFIG.API.COMPRESS`` is on (its
  default; zstd level 6);
* ``raw_bytes``: the same blob uncompressed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from esr_analysis.tracing.core import import_nnsight


@dataclass(frozen=True)
class RequestSize:
    """The serialised size of one request (see the module docstring)."""

    sent_bytes: int
    raw_bytes: int
    compressed: bool


class RequestPlanned(Exception):  # noqa: N818 - a signal, not an error
    """Raised by the sizing backend once it has measured a request: the request is not sent."""

    def __init__(self, size: RequestSize) -> None:
        super().__init__(f"request planned, not sent ({size.sent_bytes} bytes)")
        self.size = size


class _SizingBackend:
    """An nnsight backend that serialises the tracer like ``RemoteBackend`` and raises :class:`RequestPlanned`."""

    def __init__(self, sizes: list[RequestSize]) -> None:
        self.sizes = sizes

    def __call__(self, tracer: Any) -> None:
        nnsight = import_nnsight()
        from nnsight.ndif import pull_env
        from nnsight.schema.request import RequestModel

        pull_env()
        compress = bool(nnsight.CONFIG.API.COMPRESS)
        raw = RequestModel.serialize(tracer, False)
        sent = RequestModel.serialize(tracer, True) if compress else raw
        size = RequestSize(sent_bytes=len(sent), raw_bytes=len(raw), compressed=compress)
        self.sizes.append(size)
        raise RequestPlanned(size)


@contextlib.contextmanager
def sizing(lm: Any) -> Iterator[list[RequestSize]]:
    """Within the block, ``remote=True`` calls on ``lm`` are measured and aborted (:class:`RequestPlanned`)
    instead of sent; yields the list the sizes are appended to. ``remote="local"`` and local calls are
    unaffected."""
    sizes: list[RequestSize] = []
    # Patched on the class, not the instance: an instance attribute would be pickled into the request (and
    # change its size); the patch answers only for ``lm`` and is undone on exit.
    cls = type(lm)
    own = cls.__dict__.get("_remote_backend")
    original = cls._remote_backend

    def backend(self: Any, remote: bool | str, blocking: bool, job_id: str | None, verbose: bool) -> Any:
        if self is lm and remote != "local":
            return _SizingBackend(sizes)
        return original(self, remote, blocking, job_id, verbose)

    cls._remote_backend = backend
    try:
        yield sizes
    finally:
        if own is None:
            del cls._remote_backend
        else:
            cls._remote_backend = own


def measure_request(lm: Any, call: Callable[..., Any], *args: Any, **kwargs: Any) -> RequestSize:
    """The size of the first remote request ``call(*args, **kwargs)`` sends through ``lm`` (the call must pass
    ``remote=True`` to its traces). ``RuntimeError`` when the call finishes without sending one."""
    with sizing(lm) as sizes:
        try:
            call(*args, **kwargs)
        except RequestPlanned as planned:
            return planned.size
    raise RuntimeError(f"{getattr(call, '__name__', call)!r} sent no remote request (sizes seen: {sizes})")
