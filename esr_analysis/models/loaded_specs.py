"""Which :class:`~esr_analysis.models.registry.ModelSpec` a loaded model object is: :func:`remember_spec` when
it is loaded, :func:`remembered_spec` later (what :func:`esr_analysis.models.loading.spec_of` reads first).

The map is keyed by object identity and holds only a weak reference, so it never keeps a model alive.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from esr_analysis.models.registry import ModelSpec

_MODEL_SPECS: dict[int, tuple[weakref.ref[Any], ModelSpec]] = {}


def remember_spec(obj: Any, spec: ModelSpec) -> None:
    """Record that the loaded object ``obj`` is model ``spec``, without keeping ``obj`` alive (keyed by identity;
    nnsight objects proxy ``__eq__``/``__hash__``, so a WeakKeyDictionary is not safe)."""
    key = id(obj)

    def forget(_ref: Any, key: int = key) -> None:
        _MODEL_SPECS.pop(key, None)

    try:
        ref = weakref.ref(obj, forget)
    except TypeError:  # not weak-referenceable: skip rather than leak
        return
    _MODEL_SPECS[key] = (ref, spec)


def remembered_spec(obj: Any) -> ModelSpec | None:
    """The spec recorded for ``obj`` by :func:`remember_spec`, or ``None``."""
    entry = _MODEL_SPECS.get(id(obj))
    if entry is not None and entry[0]() is obj:
        return entry[1]
    return None
