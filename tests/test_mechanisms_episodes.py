"""Episodes (:mod:`esr_analysis.mechanisms.episodes`): recoveries and a seeded baseline from store runs, each
replayable (its interventions come back as the applied SAE-unit strengths)."""

from __future__ import annotations

import pytest

from esr_analysis.mechanisms.demo import write_demo_run
from esr_analysis.mechanisms.episodes import (
    Episode,
    classify_trial,
    episodes_from_runs,
    extract_episodes,
    interventions_from_records,
)
from esr_analysis.models.tiny import tiny_tokenizer
from esr_analysis.steering.interventions import AblateLatents, AddLatent
from esr_analysis.store.schema import Trial


def _trial(scores, response="some text", error=None, **kw):
    grade = {"attempts": [{"text": f"a{i}", "score": s} for i, s in enumerate(scores)], "error": None}
    return Trial(experiment="exp1", prompt="p", response=response, grade=grade, error=error,
                 key_extra={"k": str(scores) + str(kw)}, **kw)


def test_classification_follows_the_esr_definition():
    assert classify_trial(_trial([10, 80])) == "recovery"
    assert classify_trial(_trial([10, 20, 30])) == "recovery"
    assert classify_trial(_trial([10, 20, 30]), max_attempts=2) is None  # the paper's exactly-two rule
    assert classify_trial(_trial([80, 10])) is None  # got worse
    assert classify_trial(_trial([50, 50])) is None  # not strictly higher
    assert classify_trial(_trial([90])) == "baseline"
    assert classify_trial(_trial([40])) is None
    assert classify_trial(_trial([40]), baseline_min_score=30) == "baseline"
    assert classify_trial(_trial([10, 80], error="boom")) is None
    assert classify_trial(_trial([10, 80], response=" ")) is None
    assert classify_trial(_trial([10, None, 80])) == "recovery"  # unscored attempts are ignored


def test_baseline_draw_is_seeded_and_order_free():
    trials = [_trial([90], seed=i) for i in range(20)]
    _, a = extract_episodes(trials, n_baseline=5, seed=42)
    _, b = extract_episodes(list(reversed(trials)), n_baseline=5, seed=42)
    _, c = extract_episodes(trials, n_baseline=5, seed=43)
    assert [e.episode_id for e in a] == [e.episode_id for e in b] != [e.episode_id for e in c]
    assert len(extract_episodes(trials, n_baseline=None)[1]) == 20


def test_interventions_come_back_as_applied():
    recs = [{"kind": "add_latent", "latent": 3, "layer": 1, "scope": "generated", "unit": "relative",
             "strength_given": 0.8, "strength_sae": 12.5},
            {"kind": "ablate_latents", "latents": [4, 5], "layer": 0, "scope": "all"}]
    got = interventions_from_records(recs)
    assert got == [AddLatent(latent=3, strength=12.5, layer=1, scope="generated", unit="sae"),
                   AblateLatents(latents=(4, 5), layer=0)]
    assert interventions_from_records([{"kind": "add_latent", "latent": 1, "layer": 0, "strength": 2.0}])[0].strength == 2
    with pytest.raises(ValueError, match="relative"):
        interventions_from_records([{"kind": "add_latent", "latent": 1, "layer": 0, "unit": "relative",
                                     "strength_given": 0.5}])
    with pytest.raises(ValueError, match="vector"):
        interventions_from_records([{"kind": "add_vector", "layer": 0}])


def test_episodes_from_a_store_run_keep_everything_to_replay(tmp_path):
    tok = tiny_tokenizer()
    run = write_demo_run(tmp_path / "run", tok, model_name="tiny-llama", latent=4, layer=1, strength=2.5,
                         n_recoveries=3, n_baseline=2)
    rec, base = episodes_from_runs([run], n_baseline=10)
    assert len(rec) == 3 and len(base) == 2
    e = rec[0]
    assert e.kind == "recovery" and e.model == "tiny-llama" and e.scores == [10.0, 80.0] and e.seed == 0
    assert e.input_ids and e.output_ids and e.output_ids[-1] == tok.eos_token_id
    assert e.steering() == [AddLatent(latent=4, strength=2.5, layer=1)]
    assert Episode.from_dict(e.to_dict()) == e
    other = write_demo_run(tmp_path / "other", tok, model_name="another", latent=4, layer=1, strength=1.0)
    with pytest.raises(ValueError, match="several models"):
        episodes_from_runs([run], [other])
