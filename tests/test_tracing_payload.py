"""The request-payload guard: what a pickle names by reference, checked against the unpickler itself, and a trace
body that references a package object refused before anything runs."""

from __future__ import annotations

import collections
import io
import pickle
from fractions import Fraction

import pytest
import torch

from esr_analysis.tracing.payload import (
    TraceBodyError,
    check_payload,
    global_references,
    install_payload_guard,
    unimportable_references,
)
from esr_analysis.tracing.plans import LayerPlan


class _Recording(pickle.Unpickler):
    """The independent reading: the globals the real unpickler imports while loading."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.seen: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        self.seen.add((module, name))
        return super().find_class(module, name)


SAMPLES = [
    {"plain": [1, 2.5, "esr_analysis", ("esr_analysis", "LayerPlan")], "t": torch.arange(3)},
    [LayerPlan(layer=3), LayerPlan(layer=4), collections.OrderedDict(a=Fraction(1, 3))],
    {"shared": (s := "esr_analysis.tracing.plans"), "again": s, "obj": LayerPlan(layer=1)},
    collections.Counter("abracadabra"),
]


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("sample", range(len(SAMPLES)))
def test_global_references_are_what_the_unpickler_imports(sample, protocol):
    blob = pickle.dumps(SAMPLES[sample], protocol=protocol)
    reader = _Recording(blob)
    reader.load()
    assert global_references(blob) == reader.seen


def test_strings_that_look_like_modules_are_not_references():
    blob = pickle.dumps({"m": "esr_analysis.tracing.plans", "n": "LayerPlan"}, protocol=5)
    assert global_references(blob) == set()
    assert check_payload(blob) is blob


def test_a_package_object_is_named_and_refused():
    blob = pickle.dumps([LayerPlan(layer=2)], protocol=5)
    assert unimportable_references(blob) == ["esr_analysis.tracing.plans.LayerPlan"]
    with pytest.raises(TraceBodyError, match=r"esr_analysis\.tracing\.plans\.LayerPlan by reference"):
        check_payload(blob)
    assert unimportable_references(blob, lacks=("sae_lens",)) == []


def test_install_is_idempotent():
    from nnsight.schema import request

    install_payload_guard()
    first = request.dumps
    install_payload_guard()
    assert request.dumps is first and first.esr_payload_guard


def test_a_trace_body_referencing_a_package_object_fails_before_it_runs(tiny_lm):
    """The bug class a ``remote="local"`` run used to hide: here it fails at once, naming the object."""
    plan = LayerPlan(layer=0)
    with pytest.raises(TraceBodyError, match="LayerPlan"), tiny_lm.trace("Explain how to bake bread.", remote="local"):
        tiny_lm.model.layers[plan.layer].output.save()


def test_the_same_trace_with_plain_values_runs(tiny_lm):
    layer = LayerPlan(layer=0).layer  # read before the trace: only an int enters it
    with tiny_lm.trace("Explain how to bake bread.", remote="local"):
        out = tiny_lm.model.layers[layer].output.save()
    got = out[0] if isinstance(out, tuple) else out
    assert got.shape[-1] == tiny_lm.config.hidden_size
