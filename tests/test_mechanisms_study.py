"""The study end to end on a tiny model and a scripted run (:mod:`esr_analysis.mechanisms.study`,
``scripts/anatomy_study.py``), and its figures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from esr_analysis.mechanisms.demo import write_demo_run
from esr_analysis.mechanisms.episodes import episodes_from_runs
from esr_analysis.mechanisms.plots import plot_aligned, plot_trace, smooth
from esr_analysis.mechanisms.study import read_latent_list, run_anatomy, selection_split

ROOT = Path(__file__).resolve().parent.parent


def test_run_anatomy_on_a_scripted_run(tiny_lm, tiny_sae, tmp_path):
    run = write_demo_run(tmp_path / "run", tiny_lm.tokenizer, model_name="tiny-llama", latent=4, layer=1,
                         strength=2.5)
    rec, base = episodes_from_runs([run])
    res = run_anatomy(tiny_lm, tiny_sae, rec, base, layer=1, detectors=[1, 2], user_latents=[7],
                      labels={9: "self-correction and apologies", 10: "cooking"}, n_corr=3, window=8)
    s = res.summary
    assert s["n_episodes"] == 6 and s["n_baseline"] == 4 and s["n_unclear"] == 0
    assert s["groups"]["steered"] == [4] and s["groups"]["backtracking_label"] == [9]
    assert len(s["groups"]["backtracking_corr"]) == 3 and 4 not in s["groups"]["backtracking_corr"]
    for cond in ("steering_off", "steering_on"):
        assert set(s["region_means"][cond]) >= {"steered", "detectors", "user", "per_latent"}
        assert s["tests"][cond]["detectors"]["before_gt_after"]["n"] == 6
        a = res.aligned[cond]["detectors"]
        assert len(a["offsets"]) == 17 and a["n"].max() == 6
    on, off = res.summary["region_means"]["steering_on"], res.summary["region_means"]["steering_off"]
    assert on["detectors"]["before"] != off["detectors"]["before"]
    json.dumps(s, allow_nan=False)  # JSON-ready
    fig = plot_trace(res.traces["steering_on"][0], ["steered", "detectors"], alpha=0.5)
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert len(labels) == len(res.traces["steering_on"][0].tokens) - res.traces["steering_on"][0].response_start
    plot_aligned(res.aligned["steering_off"])


def test_script_writes_the_results_json(tiny_lm, tiny_sae, tmp_path, monkeypatch):
    from esr_analysis.models import loading
    from esr_analysis.sae import loading as sae_loading

    run = write_demo_run(tmp_path / "run", tiny_lm.tokenizer, model_name="tiny-llama", latent=4, layer=1,
                         strength=2.5, sae_source="random:96:1")
    monkeypatch.setattr(loading, "load_model", lambda name: tiny_lm)
    monkeypatch.setattr(sae_loading, "load_sae", lambda src: tiny_sae)
    spec = importlib.util.spec_from_file_location("anatomy_study", ROOT / "scripts" / "anatomy_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "anatomy.json"
    assert mod.main(["--runs", str(run), "--detectors", "1,2", "--n-corr", "2", "--window", "5",
                     "--out", str(out), "--figures", str(tmp_path / "figs")]) == 0
    data = json.loads(out.read_text())
    assert {"n_episodes", "n_baseline", "region_means", "tests", "command"} <= set(data)
    assert data["n_episodes"] == 6 and data["model"] == "tiny-llama" and data["sae"] == "random:96:1"
    assert "--detectors 1,2" in data["command"] and data["versions"]
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "anatomy_aligned_steering_off.png", "anatomy_aligned_steering_on.png",
        "anatomy_trace_steering_off.png", "anatomy_trace_steering_on.png"]


def test_latent_lists_and_smoothing(tmp_path):
    assert read_latent_list("3, 5,8") == [3, 5, 8] and read_latent_list(None) == []
    f = tmp_path / "d.json"
    f.write_text(json.dumps({"detectors": [{"latent": 4}, 9]}))
    assert read_latent_list(str(f)) == [4, 9]
    np.testing.assert_allclose(smooth(np.array([1.0, np.nan, 3.0]), 0.5), [1.0, 1.0, 2.0])


def test_selection_split_is_seeded_disjoint_and_order_free():
    ids = [f"e{i}" for i in range(10)]
    sel, test = selection_split(ids, 0.5, seed=3)
    assert len(test) == 5 and set(sel) | set(test) == set(ids) and not set(sel) & set(test)
    assert selection_split(list(reversed(ids)), 0.5, seed=3) == (sel, test)
    assert selection_split(ids, 0.5, seed=4) != (sel, test)
    assert selection_split(ids, 0.0) == (sorted(ids), [])
    assert len(selection_split(ids[:4], 0.1)[1]) == 2 and len(selection_split(ids[:4], 0.9)[1]) == 2
    with pytest.raises(ValueError, match="need >= 4"):
        selection_split(ids[:3], 0.5)
    with pytest.raises(ValueError, match="distinct"):
        selection_split(["a", "a", "b", "c"], 0.5)
    with pytest.raises(ValueError, match="holdout"):
        selection_split(ids, 1.0)


def test_correlation_latents_are_chosen_on_one_part_and_tested_on_the_other(tiny_lm, tiny_sae, tmp_path,
                                                                             monkeypatch):
    """The correlation search sees only the selection episodes; the group's tests and aligned curve count only
    the held-out ones, while the fixed groups use all six."""
    from esr_analysis.mechanisms import traces

    run = write_demo_run(tmp_path / "run", tiny_lm.tokenizer, model_name="tiny-llama", latent=4, layer=1,
                         strength=2.5)
    rec, base = episodes_from_runs([run])
    seen: list[list[str]] = []
    real = traces.correction_correlation

    def spy(model, sae, episodes, bounds, **kw):
        seen.append([e.episode_id for e in episodes])
        return real(model, sae, episodes, bounds, **kw)

    monkeypatch.setattr(traces, "correction_correlation", spy)
    res = run_anatomy(tiny_lm, tiny_sae, rec, base, layer=1, detectors=[1, 2], n_corr=3, window=8,
                      corr_holdout=0.5, seed=1, conditions=["off"])
    sel = res.summary["backtracking_corr_selection"]
    assert sel["n_select"] == 3 and sel["n_test"] == 3 and not sel["circular"]
    assert [sorted(ids) for ids in seen] == [sorted(sel["select_episode_ids"])]
    t = res.summary["tests"]["steering_off"]
    assert t["backtracking_corr"]["before_gt_after"]["n"] + t["backtracking_corr"]["before_gt_after"][
        "n_dropped"] == 3
    assert t["detectors"]["before_gt_after"]["n"] == 6
    assert res.aligned["steering_off"]["backtracking_corr"]["n"].max() == 3
    assert res.aligned["steering_off"]["detectors"]["n"].max() == 6
    circ = run_anatomy(tiny_lm, tiny_sae, rec, base, layer=1, n_corr=3, window=8, corr_holdout=0.0,
                       conditions=["off"]).summary["backtracking_corr_selection"]
    assert circ["circular"] and circ["n_select"] == circ["n_test"] == 6
