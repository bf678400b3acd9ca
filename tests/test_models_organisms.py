"""models.organisms: adapter directories become registered specs with the base model's layers and SAE."""

from __future__ import annotations

import json

import pytest

from esr_analysis.models.organisms import organism_spec, register_organisms
from esr_analysis.models.registry import get_spec


def test_an_adapter_directory_registers_an_organism_with_the_base_models_facts(tmp_path):
    d = tmp_path / "qwen-test-organism-sc30"
    d.mkdir()
    (d / "organism.json").write_text(json.dumps({"name": d.name, "base_model": "qwen"}))
    (tmp_path / "not-an-adapter").mkdir()
    bad = tmp_path / "unknown-base"
    bad.mkdir()
    (bad / "organism.json").write_text(json.dumps({"base_model": "no-such-model"}))
    assert register_organisms(tmp_path) == [d.name]
    spec, base = get_spec(d.name), get_spec("qwen2.5-coder-0.5b-instruct")
    assert spec.adapter == d.name and spec.base_model == base.name
    assert (spec.n_layers, spec.steer_layer, spec.sae_source, spec.hf_id) == (
        base.n_layers, base.steer_layer, base.sae_source, base.hf_id)
    assert spec.aliases == () and base.adapter is None
    with pytest.raises(ValueError, match="unknown model"):
        organism_spec("x", "no-such-model", "x")


def test_shipped_organisms_are_registered():
    from esr_analysis.finetune.adapter import list_adapters

    for name in list_adapters():
        assert get_spec(name).adapter == name
