"""Regrading a run (``esr regrade``): same generations, new grades, new manifest identity, the source untouched,
existing destinations refused; a regraded exp 1 run pairs with replays graded by the same judge."""

from __future__ import annotations

import hashlib

import pytest
from conftest import hash_judge

from esr_analysis.experiments.regrade import regrade_run_dir, regrade_store_run
from esr_analysis.store import read_manifest, read_trials


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_regrade_keeps_generations_and_replaces_grades(exp1_run, tmp_path):
    _, rd = exp1_run
    before = _digest(rd)
    new = hash_judge("hash-v2", two_attempts_every=2)
    counts = regrade_run_dir(rd, tmp_path / "regraded", new, progress=False)
    assert _digest(rd) == before                      # the source is never modified
    assert set(counts) == {"exp1"} and counts["exp1"]["n"] == 9
    old, _ = read_trials(rd / "exp1")
    got, _ = read_trials(tmp_path / "regraded" / "exp1")
    assert [t.trial_id for t in got] == [t.trial_id for t in old]
    for a, b in zip(old, got, strict=True):
        assert (a.response, a.seed, a.output_ids, a.interventions) == (b.response, b.seed, b.output_ids,
                                                                         b.interventions)
        h = int(hashlib.sha256((b.response or "").encode()).hexdigest()[:8], 16)
        assert len(b.grade["attempts"]) == (2 if h % 2 == 0 else 1) and b.grade["rubric_hash"] == "hash-v2"
    changed = sum(len(a.grade["attempts"]) != len(b.grade["attempts"]) for a, b in zip(old, got, strict=True))
    assert counts["exp1"]["changed_attempts"] == changed
    m = read_manifest(tmp_path / "regraded" / "exp1")
    regraded = [h for h in m.history if h["event"] == "regraded"]
    assert m.rubric_hash == "hash-v2" and len(regraded) == 1
    assert regraded[0]["from_rubric_hash"] == "hash-v1"
    for name in ("config.json", "thresholds.json"):
        assert (tmp_path / "regraded" / name).read_bytes() == (rd / name).read_bytes()


def test_regrade_refuses_to_write_over_anything(exp1_run, tmp_path):
    _, rd = exp1_run
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="never writes over"):
        regrade_run_dir(rd, dst, hash_judge("v2"), progress=False)
    with pytest.raises(FileExistsError, match="never writes over"):
        regrade_store_run(rd / "exp1", dst, hash_judge("v2"), progress=False)
    assert (dst / "keep.txt").read_text() == "mine"
    with pytest.raises(FileNotFoundError, match="not a store run"):
        regrade_store_run(rd, tmp_path / "x", hash_judge("v2"), progress=False)
    with pytest.raises(ValueError, match="no store run"):
        regrade_run_dir(tmp_path / "dst", tmp_path / "y", hash_judge("v2"), progress=False)


def test_replays_pair_only_with_partners_of_the_same_rubric(exp1_run, tmp_path):
    from esr_analysis.mechanisms.ablation import run_ablation, source_trials

    s, rd = exp1_run
    regrade_run_dir(rd, tmp_path / "v2", hash_judge("hash-v2"), progress=False)
    src = source_trials(tmp_path / "v2" / "exp1")
    with pytest.raises(ValueError, match="regrade the run first"):
        run_ablation(s, tmp_path / "abl", src, [3])       # the session's judge is hash-v1
    s.judge = hash_judge("hash-v2")
    run_ablation(s, tmp_path / "abl", src[:2], [3])
    assert {t.grade["rubric_hash"] for t in read_trials(tmp_path / "abl")[0]} == {"hash-v2"}


def test_cli_regrade_refuses_a_nonempty_destination(exp1_run, tmp_path, capsys):
    from esr_analysis.cli import main

    _, rd = exp1_run
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    assert main(["regrade", str(rd), str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
