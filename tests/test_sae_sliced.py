"""Sliced SAEs (exact against the full SAE), SAE loading (local, shipped, hub offline) and layer checks."""

from __future__ import annotations

import time

import pytest
import torch


def _jumprelu(d_in: int = 64, d_sae: int = 96):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(2)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn_like(sae.W_enc) * 0.3)
        sae.W_dec.copy_(torch.randn_like(sae.W_dec))
        sae.b_enc.copy_(torch.randn_like(sae.b_enc) * 0.1)
        sae.b_dec.copy_(torch.randn_like(sae.b_dec) * 0.1)
        sae.threshold.copy_(torch.rand_like(sae.threshold) * 0.5)
    return sae


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_sliced_matches_full(arch, tiny_sae):
    from esr_analysis.sae.sliced import SlicedSAE

    # float64 so that "exact" is checked to ~1e-12 (fp32 GEMMs of different shapes round differently)
    sae = (tiny_sae if arch == "relu" else _jumprelu()).to(torch.float64)
    latents = [5, 0, 77, 31, 95]
    x = torch.randn(3, 11, 64, dtype=torch.float64) * 2
    full = sae.encode(x)
    sl = SlicedSAE.from_sae(sae, latents)
    got = sl.encode(x)
    assert (full[..., latents] > 0).any() and (full[..., latents] == 0).any()  # both regimes exercised
    torch.testing.assert_close(got, full[..., latents], rtol=0, atol=1e-12)
    # decoder contributions f_i * d_i equal the full SAE's, latent by latent
    for j, i in enumerate(latents):
        torch.testing.assert_close(got[..., j:j + 1] * sl.decoder_row(i), full[..., i:i + 1] * sae.W_dec[i],
                                   rtol=0, atol=1e-12)
    # re-slicing a slice stays exact
    sub = SlicedSAE.from_sae(sl, [77, 5])
    torch.testing.assert_close(sub.encode(x), full[..., [77, 5]], rtol=0, atol=1e-12)


def test_topk_rejected():
    from sae_lens import TopKSAE, TopKSAEConfig

    from esr_analysis.sae.sliced import SlicedSAE

    sae = TopKSAE(TopKSAEConfig(d_in=64, d_sae=96, k=8))
    with pytest.raises(ValueError, match="topk"):
        SlicedSAE.from_sae(sae, [1, 2])


def test_local_dir_round_trip(tmp_path, tiny_sae):
    from esr_analysis.sae.loading import load_sae, parse_source

    tiny_sae.cfg.metadata.hook_name = "model.layers.1"
    tiny_sae.save_model(tmp_path / "s")
    sae = load_sae(tmp_path / "s")
    assert sae.esr_source == str(tmp_path / "s")
    x = torch.randn(4, 64)
    torch.testing.assert_close(sae.encode(x), tiny_sae.encode(x))
    assert parse_source(str(tmp_path / "s"))[0] == "local"
    with pytest.raises(ValueError, match="not an SAE directory"):
        load_sae(tmp_path)
    with pytest.raises(ValueError, match="unknown SAE source"):
        load_sae("no-such-release/whatever")


@pytest.mark.parametrize("source", ["goodfire-llama-3.1-8b-instruct/layer_19",
                                    ("gemma-scope-2-270m-pt-res", "layer_12_width_16k_l0_small"),
                                    "gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical",
                                    "goodfire-llama-3.3-70b-instruct/layer_50"])
def test_hub_release_offline_fails_fast(monkeypatch, source):
    from esr_analysis.sae import loading as sae_loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sae_loading, "_hf_cached", lambda repo: False)
    assert sae_loading.parse_source(source)[0] == "hub"
    t0 = time.monotonic()
    with pytest.raises(sae_loading.SAEHubUnavailableError, match="Hugging Face Hub"):
        sae_loading.load_sae(source)
    assert time.monotonic() - t0 < 5


def test_unknown_sae_id_in_release():
    from esr_analysis.sae.loading import load_sae

    with pytest.raises(ValueError, match="has no SAE"):
        load_sae("goodfire-llama-3.1-8b-instruct/layer_7")


def test_hook_layer_and_model_checks(tiny_sae):
    from esr_analysis.sae.loading import check_sae_for_model, sae_hook_layer

    tiny_sae.cfg.metadata.hook_name = "blocks.19.hook_resid_post"
    assert sae_hook_layer(tiny_sae) == 19
    tiny_sae.cfg.metadata.hook_name = "model.layers.1"
    assert check_sae_for_model(tiny_sae, 64, 2, layer=1) == 1
    with pytest.raises(ValueError, match="does not match"):
        check_sae_for_model(tiny_sae, 128, 2)
    with pytest.raises(ValueError, match="only 1 layers"):
        check_sae_for_model(tiny_sae, 64, 1)
    with pytest.warns(UserWarning, match="layer 1 at layer 0"):
        check_sae_for_model(tiny_sae, 64, 2, layer=0)
    with pytest.raises(ValueError):
        check_sae_for_model(tiny_sae, 64, 2, layer=0, strict_layer=True)


def test_shipped_sae_loads_offline():
    from esr_analysis.sae.loading import load_sae, shipped_sae_names

    names = shipped_sae_names()
    assert names, "no shipped SAE in data/saes"
    t0 = time.monotonic()
    sae = load_sae("shipped:" + names[0])
    assert time.monotonic() - t0 < 30
    assert sae.esr_source == "shipped:" + names[0]
    assert sae.cfg.normalize_activations == "none"
    assert sae.cfg.architecture() in ("standard", "jumprelu")
    # the registry's name (prefix) resolves too
    prefix = names[0].rsplit("-", 1)[0]
    assert load_sae("shipped:" + prefix).esr_source == "shipped:" + names[0]


def test_sae_fingerprint_is_content_identity(tmp_path, tiny_sae):
    """Stable across save/load, sensitive to one changed weight; an independent hash of the same bytes agrees."""
    import hashlib

    import torch
    from sae_lens import SAE

    from esr_analysis.sae.loading import load_sae, sae_fingerprint, sae_identity

    tiny_sae.save_model(tmp_path / "a")
    a = load_sae(tmp_path / "a")
    fp = sae_fingerprint(a)
    assert len(fp) == 16 and sae_fingerprint(load_sae(tmp_path / "a")) == fp
    assert sae_identity(a) == {"source": str(tmp_path / "a"), "sha256": fp} and sae_identity(None) is None
    h = hashlib.sha256()
    for name in sorted(a.state_dict()):
        t = a.state_dict()[name].detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode() + t.numpy().tobytes())
    assert h.hexdigest()[:16] == fp
    b = SAE.load_from_disk(tmp_path / "a", device="cpu", dtype="float32")
    with torch.no_grad():
        b.b_enc[0] += 1e-4
    assert sae_fingerprint(b) != fp
