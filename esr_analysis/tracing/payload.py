"""A guard on what a remote request ships: no object of this package may travel *by reference*.

A remote server (NDIF, or the local one of :mod:`esr_analysis.tracing.ndif_local`) does not have
``esr_analysis`` installed. nnsight pickles a trace body with cloudpickle: a module registered with
``nnsight.register`` (here only :mod:`esr_analysis.tracing.kernels`) travels *by value*, but any other object of
the package that a trace body references (a dataclass, a pydantic model, a function of another module) is
pickled *by reference*, as a ``(module, name)`` pair the server must import. That fails only on the server
(``ModuleNotFoundError: No module named 'esr_analysis'``), after the request was queued, and never with
``remote="local"``, which unpickles in this process where the package is importable.

:func:`install_payload_guard` wraps the one function every request payload goes through (nnsight's
``RequestModel.serialize`` calls ``nnsight.schema.request.dumps``, for ``remote=True``, for sessions and for
``remote="local"`` alike) so that such a payload raises :class:`TraceBodyError` here, before anything is sent,
naming what was referenced. The check reads the pickle's opcodes (:func:`global_references`); it never
unpickles anything.

Definition: a *by-reference global* of a pickle is a ``(module, qualified name)`` pair named by a ``GLOBAL``,
``STACK_GLOBAL`` or ``INST`` opcode: what the unpickler must import.
"""

from __future__ import annotations

import pickletools
from collections.abc import Callable, Iterable
from typing import Any

SERVER_LACKS: tuple[str, ...] = ("esr_analysis", "sae_lens", "pydantic")
"""Top-level packages a remote server cannot be assumed to import: this package (only its kernels module ships,
by value) and packages outside the public service's whitelist that this toolkit itself uses."""

_NOT_A_STRING = object()


class TraceBodyError(ValueError):
    """A remote request's payload references an object the server cannot import."""


def global_references(blob: bytes) -> set[tuple[str, str]]:
    """Every by-reference global ``(module, name)`` in the pickle ``blob`` (see the module docstring).

    Emulates the unpickler's stack with ``pickletools``' opcode table (what each opcode pops and pushes,
    strings kept, memo followed), so the operands of ``STACK_GLOBAL`` are exactly the two strings it
    consumes, however they were pushed (literal or memo get).
    """
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    found: set[tuple[str, str]] = set()
    for op, arg, _ in pickletools.genops(blob):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, qualname = str(arg).partition(" ")
            found.add((module, qualname))
        if name == "STACK_GLOBAL":
            qualname, module = stack.pop(), stack.pop()
            if isinstance(module, str) and isinstance(qualname, str):
                found.add((module, qualname))
            stack.append(_NOT_A_STRING)
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
            continue
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(str(arg))] = stack[-1]
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(int(str(arg)), _NOT_A_STRING))
            continue
        if name == "MARK":
            marks.append(len(stack))
            continue
        before = op.stack_before
        if pickletools.markobject in before:  # pops everything above the last mark, then what lies below it
            del stack[marks.pop():]
            before = before[: before.index(pickletools.markobject)]
        if before:
            del stack[len(stack) - len(before):]
        for kind in op.stack_after:
            is_text = kind is pickletools.pyunicode and isinstance(arg, str)
            stack.append(arg if is_text else _NOT_A_STRING)
    return found


def unimportable_references(blob: bytes, lacks: Iterable[str] = SERVER_LACKS) -> list[str]:
    """``module.name`` of every by-reference global of ``blob`` whose top-level package is in ``lacks``."""
    tops = set(lacks)
    return sorted(f"{m}.{n}" for m, n in global_references(blob) if m.partition(".")[0] in tops)


def check_payload(blob: bytes, lacks: Iterable[str] = SERVER_LACKS) -> bytes:
    """Return ``blob`` unchanged, or raise :class:`TraceBodyError` when it references, by reference, an object
    of a package in ``lacks``."""
    bad = unimportable_references(blob, lacks)
    if bad:
        raise TraceBodyError(
            f"this trace would send {', '.join(bad)} by reference, which a remote server cannot import. Build "
            "plain values (dict, list, tuple, str, numbers, tensors) before entering the trace and call only "
            "torch and esr_analysis.tracing.kernels inside it (see docs/remote.md).")
    return blob


def install_payload_guard() -> None:
    """Make every nnsight request payload pass :func:`check_payload` before it is sent (idempotent)."""
    from nnsight.schema import request

    dumps: Callable[..., bytes] = request.dumps
    if getattr(dumps, "esr_payload_guard", False):
        return

    def guarded_dumps(obj: Any, *args: Any, **kwargs: Any) -> bytes:
        return check_payload(dumps(obj, *args, **kwargs))

    guarded_dumps.esr_payload_guard = True  # type: ignore[attr-defined]
    request.dumps = guarded_dumps
