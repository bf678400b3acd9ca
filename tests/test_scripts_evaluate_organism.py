"""scripts/evaluate_organism.py: the samples file written by ``--assemble`` holds every ESR trial, then every
other multi-attempt trial, of the organism's steered runs, and nothing else."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("evaluate_organism", ROOT / "scripts" / "evaluate_organism.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_samples_hold_every_esr_then_every_other_multi_attempt_trial(exp1_run, tmp_path):
    _, run_dir = exp1_run
    root = tmp_path / "eval"
    shutil.copytree(Path(run_dir), root / "organism")
    trials = [json.loads(line) for line in (root / "organism" / "exp1" / "trials.jsonl").read_text().splitlines()]
    scores = [[a["score"] for a in t["grade"]["attempts"]] for t in trials]
    n_esr = sum(1 for s in scores if len(s) >= 2 and s[-1] > s[0])
    n_multi = sum(1 for s in scores if len(s) >= 2)
    assert n_multi >= 1  # the hash judge splits every third response
    out = _script().write_samples(root, tmp_path / "samples.md")
    text = out.read_text()
    esr_part, multi_part = text.split("### Multi-attempt, the last attempt not higher")
    assert esr_part.count("[ESR episode]") == n_esr
    assert text.count("attempts, scores") == n_multi  # single-attempt trials are left out
    assert "[ESR episode]" not in multi_part
    assert "Held-out" not in text  # no held-out run under root: no section
