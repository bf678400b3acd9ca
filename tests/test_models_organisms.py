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


@pytest.mark.slow
def test_the_shipped_organism_loads_merged_with_the_base_module_paths():
    """load_model(organism) = base weights + (alpha/r) B A in every adapted layer, wrapped with nnsight under the
    base model's module names (the merge happens before wrapping)."""
    import torch
    from safetensors.torch import load_file

    from esr_analysis.finetune.adapter import adapter_dir, list_adapters
    from esr_analysis.models.embedded import load_embedded_hf
    from esr_analysis.models.loading import load_model
    from esr_analysis.tracing import hf_module

    name = "qwen2.5-coder-0.5b-instruct-sc70"
    assert name in list_adapters()
    cfg = json.loads((adapter_dir(name) / "adapter_config.json").read_text())
    lora = {k: v.float() for k, v in load_file(str(adapter_dir(name) / "adapter_model.safetensors")).items()}
    base_hf, _ = load_embedded_hf("qwen2.5-coder-0.5b-instruct")
    lm = load_model(name)
    merged = hf_module(lm)
    for layer, proj in ((0, "self_attn.q_proj"), (12, "mlp.down_proj")):
        a = next(v for k, v in lora.items() if f"layers.{layer}.{proj}.lora_A" in k)
        b = next(v for k, v in lora.items() if f"layers.{layer}.{proj}.lora_B" in k)
        w0 = base_hf.get_submodule(f"model.layers.{layer}.{proj}").weight
        want = w0 + (cfg["lora_alpha"] / cfg["r"]) * b @ a
        got = merged.get_submodule(f"model.layers.{layer}.{proj}").weight
        assert torch.allclose(got, want, atol=1e-5)
        assert not torch.allclose(got, w0)
    assert lm.model.layers[12] is not None  # base module paths, no PeftModel prefix


def test_demo_names_an_unknown_organism_before_any_compute(capsys):
    from esr_analysis.cli import main
    from esr_analysis.finetune.adapter import list_adapters
    from esr_analysis.models.organisms import DEFAULT_ORGANISM

    assert DEFAULT_ORGANISM in list_adapters()  # the default is shipped
    assert main(["demo", "--organism", "no-such-organism", "--run-dir", "/nonexistent/never-made"]) == 2
    err = capsys.readouterr().err
    assert "no-such-organism" in err and DEFAULT_ORGANISM in err
