"""experiments.side_by_side on tiny models: same latents for every model, per-model runs, records, figure."""

from __future__ import annotations

import json

import pytest

from tests.test_experiments import StubJudge


def _opener(tmp_path, tiny_sae):
    from esr_analysis.experiments.session import open_session
    from esr_analysis.models.tiny import load_tiny

    def open_one(cfg):
        return open_session(cfg, model=load_tiny(cfg.model.removeprefix("tiny-")), sae=tiny_sae, judge=StubJudge(),
                            cache_dir=tmp_path / "cache", progress=False)
    return open_one


OVERRIDES = {"n_prompts_per_latent": 2, "max_new_tokens": 6, "batch_size": 8, "selection.n_latents": 3,
             "selection.relevance_rule": "none", "search.n_steps": 2, "search.max_new_tokens": 4, "search.upper": 20,
             "search.prior_mean": 5, "search.prior_std": 5, "search.grid_size": 200,
             "search.require_fluent_window": False}


def test_side_by_side_uses_the_first_models_latents_for_every_model(tmp_path, tiny_sae):
    from esr_analysis.experiments.side_by_side import run_side_by_side
    from esr_analysis.store.read import read_trials

    res = run_side_by_side("embedded-demo", ["tiny-llama", "tiny-qwen2"], root=tmp_path / "sbs",
                           overrides=OVERRIDES, progress=False, open_session=_opener(tmp_path, tiny_sae))
    a, b = res.runs["tiny-llama"], res.runs["tiny-qwen2"]
    assert a.latents == b.latents and len(a.latents) == 3
    for model, run in res.runs.items():
        trials, _ = read_trials(run.experiments["exp1"])
        assert {t.latent for t in trials} == set(a.latents)
        rec = res.records[f"{model} steered (exp 1)"]
        assert rec["n"] == len(trials) == 6
        k = sum(1 for t in trials if len((t.grade or {}).get("attempts") or []) > 1)
        assert rec["multi_attempt_rate"] == pytest.approx(k / len(trials))
        assert rec["multi_attempt_ci"][0] <= rec["multi_attempt_rate"] <= rec["multi_attempt_ci"][1]
    saved = json.loads((tmp_path / "sbs" / "side_by_side.json").read_text())
    assert saved["latents"] == a.latents and set(saved["records"]) == set(res.records)
    assert res.figure is not None and res.figure.is_file()
    assert res.samples is not None and "## tiny-qwen2" in res.samples.read_text()
    assert "| tiny-llama steered (exp 1) | 6 |" in res.table()


def test_side_by_side_refuses_bad_model_lists_before_compute(tmp_path):
    from esr_analysis.experiments.side_by_side import run_side_by_side

    with pytest.raises(ValueError, match="two distinct"):
        run_side_by_side("embedded-demo", ["tiny-llama"], root=tmp_path)
    with pytest.raises(ValueError, match="unknown model"):
        run_side_by_side("embedded-demo", ["tiny-llama", "no-such-model"], root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_only_the_first_model_applies_the_fluent_window_rule(tmp_path, tiny_sae):
    """With the rule on, the first model's selection decides the latents; the later models run every one of them
    (their own search may see no fluent sample), so the arms stay matched."""
    from esr_analysis.experiments.side_by_side import run_side_by_side
    seen = []
    opener = _opener(tmp_path, tiny_sae)

    def spy(cfg):
        seen.append((cfg.model, cfg.search.require_fluent_window, list(cfg.selection.latents or [])))
        return opener(cfg)

    over = {**OVERRIDES, "search.require_fluent_window": True, "search.target": 100.0}  # every sample "fluent off"
    res = run_side_by_side("embedded-demo", ["tiny-llama", "tiny-qwen2"], root=tmp_path / "sbs", overrides=over,
                           progress=False, open_session=spy)
    assert seen[0][:2] == ("tiny-llama", True) and seen[1][:2] == ("tiny-qwen2", False)
    assert seen[1][2] == res.runs["tiny-llama"].latents == res.runs["tiny-qwen2"].latents
