"""The whole SAE path on a tiny model: harvest shards -> sae-lens training -> quality stats -> labels."""

from __future__ import annotations

import json
import math

import pytest
import torch

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n" * 2,
    "Bread is baked from flour, water, yeast and salt; knead the dough and let it rise. " * 2,
    "The ocean is deep and blue, and waves roll onto the sandy beach all day long. " * 2,
]


@pytest.fixture
def shards(tmp_path, tiny_lm):
    from esr_analysis.sae.harvest import harvest_split

    corpus = tmp_path / "train.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "kind": "plain", "text": t}) + "\n"
                              for i, t in enumerate(TEXTS * 6)))
    out = tmp_path / "acts" / "train"
    kw = dict(n_tokens=1200, seq_len=32, drop_first=1, batch_size=8, windows_per_shard=16, stats_path=None)
    n = harvest_split(tiny_lm, tiny_lm.tokenizer, 1, corpus, out, **kw)
    files = sorted(out.glob("shard_*.pt"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert harvest_split(tiny_lm, tiny_lm.tokenizer, 1, corpus, out, **kw) == n  # resumable: nothing redone
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    return out, n


def test_harvest_shards_match_direct_forward(shards, tiny_lm):
    from esr_analysis.sae.training import load_shards
    from esr_analysis.tracing.plans import step0_masks
    from esr_analysis.tracing.run import forward_with_plan

    out, n = shards
    acts = load_shards(out)
    assert len(acts) == n >= 1200 and acts.acts.dtype == torch.float16 and acts.acts.shape[1] == 64
    assert int(acts.pos.min()) == 1  # first position dropped
    ids = acts.tokens[:2].long()
    _, resid = forward_with_plan(tiny_lm, ids, torch.ones_like(ids), plans=[], masks=step0_masks(ids),
                                 save_residual_layers=(1,), stop_after_last=True)
    first = acts.acts[acts.window == 1].float()
    torch.testing.assert_close(first, resid[1][1, 1:].float(), atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("arch", ["standard", "jumprelu"])
def test_train_measure_label(shards, tiny_lm, tmp_path, arch):
    from esr_analysis.sae.labels import LatentLabels, build_labels
    from esr_analysis.sae.loading import load_sae
    from esr_analysis.sae.sliced import SlicedSAE
    from esr_analysis.sae.training import (
        TrainSettings,
        ce_loss_recovered,
        load_shards,
        reconstruction_stats,
        train_sae,
    )
    from esr_analysis.steering.residuals import ordinary_positions

    out, _ = shards
    data = load_shards(out)
    x = data.acts[ordinary_positions(data.acts)].float()
    settings = TrainSettings(d_sae=128, architecture=arch, total_samples=256 * 12, batch_size=256,
                             n_batches_for_norm_estimate=2, hook_name="model.layers.1", model_name="tiny")
    sae = train_sae(x, settings)
    assert sae.cfg.normalize_activations == "none"  # scaling folded: the SAE encodes raw residuals
    assert sae.cfg.architecture() == arch
    SlicedSAE.from_sae(sae, [0, 5])  # sliceable
    sae.save_model(tmp_path / "sae")
    again = load_sae(tmp_path / "sae")
    torch.testing.assert_close(again.encode(x[:8]), sae.encode(x[:8]))
    stats = reconstruction_stats(sae, x)
    assert stats["fire_counts"].shape == (128,)
    assert -1 < stats["fve"] <= 1 and stats["mean_l0"] >= 0 and 0 <= stats["dead_fraction"] <= 1
    ce = ce_loss_recovered(tiny_lm, sae, 1, data.tokens[:4], batch_size=2)
    assert all(math.isfinite(ce[k]) for k in ("ce_clean", "ce_sae", "ce_zero"))
    assert ce["n_predictions"] == 4 * 30
    labels = build_labels(sae, tiny_lm.tokenizer, data, k=4, n_contexts=2)
    assert len(labels) == 128
    live = [i for i, e in labels.entries.items() if e["density"] > 0]
    assert live and all("[[" in c["text"] for c in labels.info(live[0])["contexts"])
    labels.save(tmp_path / "labels.jsonl.gz")
    back = LatentLabels.load(tmp_path / "labels.jsonl.gz")
    assert back.info(live[0]) == labels.info(live[0])
    assert str(live[0]) in back.describe(live[0])


def test_replacing_residual_with_itself_is_a_no_op(tiny_lm):
    from esr_analysis.tracing.plans import step0_masks
    from esr_analysis.tracing.run import forward_with_plan, forward_with_residual_replaced

    ids = torch.randint(0, 400, (2, 12))
    mask = torch.ones_like(ids)
    _, resid = forward_with_plan(tiny_lm, ids, mask, plans=[], masks=step0_masks(mask), save_residual_layers=(0,))
    clean = forward_with_residual_replaced(tiny_lm, ids, mask, 0, None)
    same = forward_with_residual_replaced(tiny_lm, ids, mask, 0, resid[0])
    zero = forward_with_residual_replaced(tiny_lm, ids, mask, 0, torch.zeros_like(resid[0]))
    torch.testing.assert_close(same, clean)
    assert not torch.allclose(zero, clean)
