"""The detector file (esr_analysis.mechanisms.detector_files): our record round-trips, and the authors'
formats and a bare list are read; bad files fail clearly."""

from __future__ import annotations

import json

import pytest

from esr_analysis.mechanisms.detector_files import detector_record, read_detector_file
from esr_analysis.mechanisms.detectors import RULES, discover

PROMPTS = ["How do you bake bread?", "Explain the ocean.", "How do you write a thank-you note?",
           "What is compound interest?"]
ANSWERS = ["Mix flour, water and yeast, then bake it.", "The ocean is deep and blue; whales sing.",
           "Start with a greeting and thank the person.", "The balance grows by one plus the rate."]


def test_detector_file_round_trip_and_the_authors_format(tmp_path, tiny_lm, tiny_sae):
    d = discover(tiny_lm, tiny_sae, PROMPTS[:4], layer=1, answers=ANSWERS[:4], n_derangements=2, progress=False)
    rec = detector_record(d, "ranked", model_name="tiny", prompts_file="x.txt", sae=tiny_sae, top_k=5,
                          label=lambda i: f"L{i}", command="esr detectors discover ...")
    for key in ("model_name", "prompts_file", "num_prompts", "activation_threshold", "off_topic_detectors",
                "detector_stats", "normal_responses"):
        assert key in rec
    assert rec["rule"] == "ranked" and rec["rules"]["ranked"]["detectors"] == rec["off_topic_detectors"]
    assert set(rec["rules"]) == set(RULES) and rec["normal_responses"][PROMPTS[0]] == ANSWERS[0]
    p = tmp_path / "det.json"
    p.write_text(json.dumps(rec))
    det = read_detector_file(p)
    assert det.latents == tuple(rec["off_topic_detectors"]) and det.rule == "ranked"
    assert det.labels == {i: f"L{i}" for i in det.latents} and set(det.stats) >= set(det.latents)
    stats = det.stats[det.latents[0]]
    assert stats["nonzero_shuffled_pct"] == pytest.approx(100 * stats["nonzero_off_topic_frequency"])
    authors = tmp_path / "authors.json"
    authors.write_text(json.dumps({"off_topic_detectors": [7, 3, 7], "detector_stats": {"7": {}}}))
    assert read_detector_file(authors).latents == (7, 3)
    (tmp_path / "dicts.json").write_text(json.dumps({"off_topic_detectors": [{"latent": 5}, {"index": 2}]}))
    assert read_detector_file(tmp_path / "dicts.json").latents == (5, 2)
    (tmp_path / "list.json").write_text("[4, 1]")
    assert read_detector_file(tmp_path / "list.json").latents == (4, 1)
    (tmp_path / "bad.json").write_text(json.dumps({"off_topic_detectors": ["x"]}))
    with pytest.raises(ValueError, match="not a latent index"):
        read_detector_file(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text(json.dumps({"off_topic_detectors": []}))
    with pytest.raises(ValueError, match="no detectors"):
        read_detector_file(tmp_path / "empty.json")
    with pytest.raises(FileNotFoundError):
        read_detector_file(tmp_path / "missing.json")
