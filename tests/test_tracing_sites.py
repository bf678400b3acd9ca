"""Component sites (esr_analysis.tracing.sites) against plain torch forward hooks on tiny random-init models."""

from __future__ import annotations

import pytest
import torch

from esr_analysis.errors import ConfigError
from esr_analysis.models.tiny import tiny_config, tiny_hf_model, tiny_multimodal_gemma3, tiny_tokenizer
from esr_analysis.tracing import import_nnsight, wrap_model
from esr_analysis.tracing.kernels import module_at, read_site, write_site
from esr_analysis.tracing.sites import (
    ModelSites,
    Site,
    find_sites,
    head_contributions,
    split_heads,
)

ARCHS = ["llama", "qwen2", "gemma2", "gemma3", "gemma3-multimodal", "llama-o-bias"]
TEXT_PATHS = {"layers": "model.layers", "final_norm": "model.norm", "unembed": "lm_head"}
MM_PATHS = {"layers": "model.language_model.layers", "final_norm": "model.language_model.norm",
            "unembed": "lm_head"}
IDS = torch.tensor([[1, 17, 40, 93, 5, 211, 8], [0, 0, 1, 33, 60, 7, 301]])
MASK = (IDS != 0).long()
MASK[:, 2:] = 1


def _save(lm, where: dict):
    """Inside a trace: capture a site's value (detached, on CPU)."""
    return import_nnsight().save(read_site(lm, where).detach().cpu())


def _hf(arch: str, seed: int = 0):
    if arch == "gemma3-multimodal":
        return tiny_multimodal_gemma3(seed=seed)
    if arch == "llama-o-bias":  # Llama with biased projections: the head sum must add o_proj's bias
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        cfg = tiny_config("llama")
        cfg.attention_bias = True
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval().requires_grad_(False)
        for layer in model.model.layers:
            layer.self_attn.o_proj.bias.normal_(0, 0.5)
        return model
    return tiny_hf_model(arch, seed=seed)  # type: ignore[arg-type]


def _hook_run(hf, sites: ModelSites, layer: int, pre_edit=None) -> dict[str, torch.Tensor]:
    """A plain torch forward with hooks: o_proj input/output, MLP, block, final norm and logits of ``layer``."""
    got: dict[str, torch.Tensor] = {}
    base = f"{sites.layers}.{layer}"
    o_proj = hf.get_submodule(f"{base}.{sites.o_proj}")

    def keep(name):
        def hook(_m, args, out):
            got[name] = (out[0] if isinstance(out, tuple) else out).detach().clone()
            if name == "attn_out":
                got["o_in"] = args[0].detach().clone()
        return hook

    handles = [
        o_proj.register_forward_hook(keep("attn_out")),
        hf.get_submodule(f"{base}.{sites.mlp}").register_forward_hook(keep("mlp_out")),
        hf.get_submodule(base).register_forward_hook(keep("block_out")),
        hf.get_submodule(sites.final_norm).register_forward_hook(keep("final_norm")),
        hf.get_submodule(sites.unembed).register_forward_hook(keep("logits")),
    ]
    if pre_edit is not None:
        handles.append(o_proj.register_forward_pre_hook(lambda _m, args: (pre_edit(args[0]),) + tuple(args[1:])))
    try:
        with torch.no_grad():
            hf(input_ids=IDS, attention_mask=MASK)
    finally:
        for h in handles:
            h.remove()
    return got


@pytest.mark.parametrize("arch", ARCHS)
def test_find_sites_paths_and_geometry(arch):
    hf = _hf(arch)
    sites = find_sites(hf)
    assert find_sites(hf) is sites and find_sites(_hf(arch)) == sites  # remembered per model object
    expected = MM_PATHS if arch == "gemma3-multimodal" else TEXT_PATHS
    assert (sites.layers, sites.final_norm, sites.unembed) == tuple(expected.values())
    assert (sites.attention, sites.o_proj, sites.mlp) == ("self_attn", "self_attn.o_proj", "mlp")
    assert (sites.n_layers, sites.n_heads, sites.head_dim, sites.d_model) == (2, 4, 16, 64)
    assert sites.module_path(Site("head", 1, 3)) == f"{expected['layers']}.1.self_attn.o_proj"
    assert sites.module_path(Site("block_out", 0)) == f"{expected['layers']}.0"
    assert sites.module_path(Site("mlp_out", 1)) == f"{expected['layers']}.1.mlp"


@pytest.mark.parametrize("arch", ARCHS)
def test_head_contributions_sum_to_the_attention_output(arch):
    hf = _hf(arch)
    sites = find_sites(hf)
    for layer in range(sites.n_layers):
        got = _hook_run(hf, sites, layer)
        o_proj = hf.get_submodule(f"{sites.layers}.{layer}.{sites.o_proj}")
        contrib = head_contributions(got["o_in"], o_proj.weight, sites.n_heads)
        assert contrib.shape == (*IDS.shape, 4, 64)
        total = contrib.sum(-2) + (o_proj.bias if o_proj.bias is not None else 0)
        torch.testing.assert_close(total, got["attn_out"], atol=1e-5, rtol=1e-5)
        assert all(contrib[..., h, :].abs().max() > 1e-4 for h in range(4))  # every head contributes
    if arch == "llama-o-bias":
        assert o_proj.bias.abs().max() > 0.1  # the bias term is really exercised


@pytest.mark.parametrize("arch", ARCHS)
def test_nnsight_reads_match_plain_hooks(arch):
    hf = _hf(arch)
    sites = find_sites(hf)
    lm = wrap_model(hf, tiny_tokenizer())
    assert find_sites(lm) == sites
    layer = 1
    with torch.no_grad(), lm.trace({"input_ids": IDS, "attention_mask": MASK}):  # sites in forward order
        head = _save(lm, sites.where(Site("head", layer, 2)))
        attn = _save(lm, sites.where(Site("attn_out", layer)))
        mlp = _save(lm, sites.where(Site("mlp_out", layer)))
        block = _save(lm, sites.where(Site("block_out", layer)))
        norm = _save(lm, sites.where(Site("final_norm")))
        logits = _save(lm, sites.where(Site("logits")))
    ref = _hook_run(hf, sites, layer)
    torch.testing.assert_close(head, split_heads(ref["o_in"], 4)[..., 2, :])
    for kind, value in [("attn_out", attn), ("mlp_out", mlp), ("block_out", block), ("final_norm", norm),
                        ("logits", logits)]:
        torch.testing.assert_close(value, ref[kind], msg=lambda m, k=kind: f"{k}: {m}")


@pytest.mark.parametrize("arch", ARCHS)
def test_editing_one_head_changes_exactly_that_head(arch):
    hf = _hf(arch)
    sites = find_sites(hf)
    lm = wrap_model(hf, tiny_tokenizer())
    layer, head = 0, 2
    torch.manual_seed(5)
    new = torch.randn(*IDS.shape, sites.head_dim)

    def hook_edit(x):
        x = x.clone()
        split_heads(x, sites.n_heads)[..., head, :] = new
        return x

    clean = _hook_run(hf, sites, layer)
    edited = _hook_run(hf, sites, layer, pre_edit=hook_edit)
    with torch.no_grad(), lm.trace({"input_ids": IDS, "attention_mask": MASK}):
        write_site(lm, sites.where(Site("head", layer, head)), new)
        attn = _save(lm, sites.where(Site("attn_out", layer)))
        logits = _save(lm, sites.where(Site("logits")))
    # the site edit is the hook edit, downstream too
    torch.testing.assert_close(attn, edited["attn_out"])
    torch.testing.assert_close(logits, edited["logits"], atol=1e-5, rtol=1e-5)
    assert (logits - clean["logits"]).abs().max() > 1e-3  # the edit mattered
    # exactly head `head`'s contribution changed
    w = hf.get_submodule(f"{sites.layers}.{layer}.{sites.o_proj}").weight
    before = head_contributions(clean["o_in"], w, sites.n_heads)
    after = head_contributions(edited["o_in"], w, sites.n_heads)
    others = [h for h in range(sites.n_heads) if h != head]
    assert torch.equal(before[..., others, :], after[..., others, :])
    assert (before[..., head, :] - after[..., head, :]).abs().max() > 1e-3
    torch.testing.assert_close(attn - clean["attn_out"], after[..., head, :] - before[..., head, :],
                               atol=1e-5, rtol=1e-5)


def test_site_edit_round_trips_through_remote_local_serialisation():
    from esr_analysis.tracing import register_kernels

    hf = _hf("llama")
    sites = find_sites(hf)
    lm = wrap_model(hf, tiny_tokenizer())
    register_kernels()
    new = torch.zeros(*IDS.shape, sites.head_dim)
    edited = _hook_run(hf, sites, 1, pre_edit=lambda x: torch.cat([x[..., :16], new, x[..., 32:]], -1))
    head, unembed = sites.where(Site("head", 1, 1)), sites.where(Site("logits"))  # plain dicts, built outside
    nnsight = import_nnsight()
    with torch.no_grad(), lm.trace({"input_ids": IDS, "attention_mask": MASK}, remote="local"):
        write_site(lm, head, new)  # only kernels code and plain data inside, as NDIF requires
        logits = nnsight.save(read_site(lm, unembed).detach().cpu())
    torch.testing.assert_close(logits, edited["logits"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_merged_lora_model_has_the_same_paths(arch):
    from peft import LoraConfig, get_peft_model

    plain = find_sites(_hf(arch))
    base = _hf(arch)
    w0 = base.model.layers[0].self_attn.o_proj.weight.clone()
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 init_lora_weights=False))
    wrapped = find_sites(peft_model)  # unmerged: same layout one wrapper deeper
    assert wrapped.layers == f"base_model.model.{plain.layers}"
    assert (wrapped.o_proj, wrapped.n_heads, wrapped.head_dim) == (plain.o_proj, plain.n_heads, plain.head_dim)
    merged = peft_model.merge_and_unload()
    assert find_sites(merged) == plain
    o_proj = merged.get_submodule(f"{plain.layers}.0.{plain.o_proj}")
    assert type(o_proj) is torch.nn.Linear and (o_proj.weight - w0).abs().max() > 1e-3  # LoRA was merged in
    got = _hook_run(merged, plain, 0)
    total = head_contributions(got["o_in"], o_proj.weight, plain.n_heads).sum(-2)
    torch.testing.assert_close(total, got["attn_out"], atol=1e-5, rtol=1e-5)


def test_bad_sites_fail_before_compute():
    sites = find_sites(_hf("llama"))
    bad = [dict(kind="resid"), dict(kind="head", layer=0), dict(kind="final_norm", layer=1),
           dict(kind="block_out", layer=-1), dict(kind="mlp_out", layer=0, head=1), dict(kind="logits", head=0)]
    for kwargs in bad:
        with pytest.raises(ConfigError):
            Site(**kwargs)
    for site in (Site("block_out", 2), Site("head", 0, 4)):
        with pytest.raises(ConfigError, match="out of range"):
            sites.module_path(site)
    with pytest.raises(ConfigError, match="decoder-layer list"):
        find_sites(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    with pytest.raises(ConfigError, match="torch module"):
        find_sites(object())


def test_module_at_walks_names_and_indices():
    hf = _hf("qwen2")
    assert module_at(hf, "model.layers.1.self_attn.o_proj") is hf.model.layers[1].self_attn.o_proj
    assert module_at(hf, "") is hf
    lm = wrap_model(hf, tiny_tokenizer())
    sites = find_sites(lm)
    with torch.no_grad(), lm.trace({"input_ids": IDS, "attention_mask": MASK}):
        first = _save(lm, sites.where(Site("block_out", 0)))
        same = read_site(lm, sites.where(Site("block_out", 1))).save()
    assert first.shape == same.shape == (*IDS.shape, 64)
