"""The mix-ratio sweep: rows from each organism's organism.json and eval.json, sorted by fraction; organisms that
differ in anything but the fraction are refused; the Fig. 7-style figure draws from it."""

from __future__ import annotations

import json

import pytest

from esr_analysis.errors import ConfigError
from esr_analysis.finetune.sweep import mix_sweep


def _m(rate: float, n: int = 90) -> dict:
    return {"n": n, "multi_attempt_rate": rate, "multi_attempt_ci": [max(0, rate - 0.1), rate + 0.1],
            "esr_rate": rate / 2, "esr_ci": [0.0, rate], "first_attempt_score": 60.0 + 10 * rate,
            "first_attempt_ci": [55.0, 70.0], "degenerate_share": 0.1, "mean_improvement": 5.0}


def _organism(root, name, p, *, rate, steer_scope="opening", judge="offline"):
    d = root / name
    d.mkdir()
    (d / "organism.json").write_text(json.dumps({
        "name": name, "fraction": p, "base_model": "b", "steer_in_training": True, "steer_scope": steer_scope,
        "training": {"r": 16}, "training_result": {"losses": [1.5, 0.4]},
        "mix": {"n_self_correction": int(74 * p), "n_normal": 20, "pool_self_correction": 74, "pool_normal": 175,
                "n_trained_tokens_per_epoch": 5000}}))
    (d / "eval.json").write_text(json.dumps({
        "_meta": {"latents": [1, 2], "judge": judge, "max_new_tokens": 128, "n_prompts_per_latent": 5},
        "organism": _m(rate), "organism_no_steer": _m(rate / 10)}))
    return d


def test_rows_sorted_by_fraction_with_both_conditions(tmp_path):
    dirs = [_organism(tmp_path, "o90", 0.9, rate=0.4), _organism(tmp_path, "o30", 0.3, rate=0.1),
            _organism(tmp_path, "o70", 0.7, rate=0.28)]
    sweep = mix_sweep(dirs)
    assert [r["fraction"] for r in sweep["rows"]] == [0.3, 0.7, 0.9]
    r = sweep["rows"][0]
    assert r["name"] == "o30" and r["mix"]["n_self_correction"] == 22 and r["final_loss"] == 0.4
    assert r["organism"]["multi_attempt_rate"] == 0.1 and r["organism_no_steer"]["multi_attempt_rate"] == 0.01
    assert sweep["recipe"]["steer_scope"] == "opening" and sweep["evaluation"]["judge"] == "offline"


@pytest.mark.parametrize("field", ["steer_scope", "judge"])
def test_organisms_that_differ_in_more_than_the_fraction_are_refused(tmp_path, field):
    a = _organism(tmp_path, "a", 0.3, rate=0.1)
    b = _organism(tmp_path, "b", 0.9, rate=0.3, **{field: "other"})
    with pytest.raises(ConfigError, match=field):
        mix_sweep([a, b])


def test_missing_evaluation_and_duplicate_fraction_are_clear_errors(tmp_path):
    a = _organism(tmp_path, "a", 0.3, rate=0.1)
    b = _organism(tmp_path, "b", 0.3, rate=0.2)
    with pytest.raises(ConfigError, match="same fraction"):
        mix_sweep([a, b])
    (b / "eval.json").unlink()
    with pytest.raises(ConfigError, match="evaluate_organism"):
        mix_sweep([a, b])
    with pytest.raises(ConfigError, match="at least two"):
        mix_sweep([a])


def test_fig7_draws_every_point_and_the_base_lines(tmp_path):
    from esr_analysis.plotting import fig7_mix_sweep

    sweep = mix_sweep([_organism(tmp_path, "o30", 0.3, rate=0.1), _organism(tmp_path, "o90", 0.9, rate=0.4)])
    out = tmp_path / "fig7.png"
    fig = fig7_mix_sweep(sweep, out, base={"organism": _m(0.0), "organism_no_steer": _m(0.0)})
    assert out.stat().st_size > 10_000
    ax = fig.axes[0]
    steered = ax.lines[0]
    assert list(steered.get_xdata()) == [30.0, 90.0]
    assert list(steered.get_ydata()) == pytest.approx([10.0, 40.0])
    assert any(line.get_linestyle() == ":" for line in ax.lines)
