"""The detectors-vs-random ablation control of the restart metric (mechanisms.attribution.ablation_null): its
metric is the attribution study's, its Δ equals the detectors_ablated counterfactual's change, and its summary
is checked against hand-computed numbers."""

from __future__ import annotations

import pytest
import torch

from esr_analysis.errors import ConfigError
from esr_analysis.mechanisms.attribution.ablation_null import (
    ablation_effects,
    metric_value,
    summarize_effects,
)
from esr_analysis.mechanisms.attribution.inputs import RecoveryPoint, counterfactual, prepare, restart_metric
from esr_analysis.mechanisms.attribution.methods import attribution_patching
from esr_analysis.models.tiny import TINY_HIDDEN, tiny_hf_model, tiny_tokenizer
from esr_analysis.sae.random_sae import random_sae
from esr_analysis.tracing import wrap_model

RESP = "The sky is blue because of light. Cats like fish a lot. Wait, that is not right. Light scatters in the air."


def _episode(i: int = 0) -> RecoveryPoint:
    return RecoveryPoint.from_dict({
        "prompt": ["Why is the sky blue?", "How does rain form?"][i], "response": RESP,
        "correction_char": RESP.index("Wait"), "id": f"e{i}", "detectors": [5, 7],
        "interventions": [{"kind": "add_latent", "latent": 3, "strength": 4.0, "layer": 1, "unit": "sae"}]})


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    return wrap_model(tiny_hf_model("llama", n_layers=3), tiny_tokenizer()), random_sae(TINY_HIDDEN, 96, 3)


def test_delta_equals_the_detectors_ablated_counterfactual(setup):
    lm, sae = setup
    ep = _episode()
    prep = prepare(lm, ep)
    cf_ids, cf_ivs, _ = counterfactual(prep, "detectors_ablated", sae_layer=1)
    att, state = attribution_patching(lm, prep, cf_ids, cf_ivs, metric=restart_metric(prep, lm.tokenizer), sae=sae)
    clean, other = metric_value(lm, prep, ep.parsed_interventions(), restart_metric(prep, lm.tokenizer), sae)
    assert clean == pytest.approx(att.metric_clean, abs=1e-4) and other == state["metric"]["other"]
    rows = ablation_effects(lm, [ep], {"detectors": [5, 7], "r0": [11, 12], "r1": [20, 40]}, sae=sae, sae_layer=1,
                            progress=False)
    assert rows[0]["delta"]["detectors"] == pytest.approx(att.metric_cf - att.metric_clean, abs=1e-4)
    assert rows[0]["other"] == other and set(rows[0]["delta"]) == {"detectors", "r0", "r1"}
    every = ablation_effects(lm, [ep], {"detectors": list(range(96))}, sae=sae, sae_layer=1, progress=False)
    assert abs(every[0]["delta"]["detectors"]) > 1e-4  # ablating every latent moves the metric


def test_bad_sets_fail_before_compute(setup):
    lm, sae = setup
    with pytest.raises(ConfigError, match="empty"):
        ablation_effects(lm, [_episode()], {"detectors": []}, sae=sae, sae_layer=1, progress=False)
    with pytest.raises(ValueError):
        ablation_effects(lm, [_episode()], {"detectors": [500]}, sae=sae, sae_layer=1, progress=False)


def test_summary_by_hand():
    rows = [{"id": f"e{i}", "clean": 1.0, "other": 0, "delta": {"detectors": d, "r0": 0.0, "r1": -3.0}}
            for i, d in enumerate((-1.0, -2.0, -3.0))]
    s = summarize_effects(rows, n_boot=500, seed=1)
    assert s["n_episodes"] == 3 and s["n_random_sets"] == 2
    mean, lo, hi = s["detector_effect"]
    assert mean == pytest.approx(-2.0) and -3.0 <= lo <= mean <= hi <= -1.0
    assert s["random_set_effects"] == [0.0, -3.0] and s["detector_percentile"] == 50.0
    assert s["detector_share_lowered"] == 1.0
    assert s["difference_vs_random"][0] == pytest.approx(-0.5)  # (0.5 - 0.5 - 1.5) / 3
    with pytest.raises(ValueError, match="no 'detectors'"):
        summarize_effects([{"id": "e", "clean": 0, "other": 0, "delta": {"r0": 1.0}}])
    with pytest.raises(ValueError, match="same sets"):
        summarize_effects([rows[0], {**rows[1], "delta": {"detectors": 1.0}}])


def test_script_writes_the_control(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("abl_null", root / "scripts" / "attribution_ablation_null.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    eps = tmp_path / "eps.json"
    eps.write_text(json.dumps([{k: v for k, v in _episode(i).__dict__.items() if k != "extra"} for i in (0, 1)]))
    out = tmp_path / "null.json"
    mod.main([str(eps), "--tiny", "--n-boot", "50", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["n_episodes"] == 2 and saved["n_random_sets"] == 3 and len(saved["rows"]) == 2
    assert 0.0 <= saved["detector_percentile"] <= 100.0 and "--tiny" in saved["command"]
    with pytest.raises(ConfigError, match="--random-sets"):
        mod.main([str(eps), "--detectors", "1,2"])
