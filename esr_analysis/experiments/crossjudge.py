"""Exp 7: cross-judge agreement on a sample of graded trials, ``docs/method.md#experiments``.

Sample (seeded): every valid multi-attempt trial of the source run, then random others up to
``cross_judge_samples``. Each judge of ``cross_judges`` re-grades the same (prompt, response, label). For every
pair of judges (the original included), on trials both graded validly:

* ``multi_attempt_agreement``: fraction with the same ``k > 1`` verdict;
* ``esr_direction_agreement``: among trials both call multi-attempt, fraction with the same ``s_k > s_1``;
* ``pearson`` / ``spearman`` of the first-attempt scores;
* ``attempt_count_confusion``: counts of (k by judge A, k by judge B), k capped at 4 ("4+").
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from esr_analysis.files import atomic_write_json


def _scores(grade: dict[str, Any] | None) -> list[float] | None:
    from esr_analysis.metrics.definitions import scored_attempts

    if not grade or grade.get("error"):
        return None
    s = scored_attempts(grade)
    return s or None


def agreement(a: list[list[float] | None], b: list[list[float] | None]) -> dict[str, Any]:
    """Agreement metrics between two judges' score lists over the same trials (see module docstring)."""
    from scipy.stats import pearsonr, spearmanr

    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x and y]
    n = len(pairs)
    out: dict[str, Any] = {"n": n}
    if not n:
        return out
    out["multi_attempt_agreement"] = sum((len(x) > 1) == (len(y) > 1) for x, y in pairs) / n
    both = [(x, y) for x, y in pairs if len(x) > 1 and len(y) > 1]
    out["n_both_multi"] = len(both)
    out["esr_direction_agreement"] = (sum((x[-1] > x[0]) == (y[-1] > y[0]) for x, y in both) / len(both)
                                      if both else None)
    f1, f2 = [x[0] for x, _ in pairs], [y[0] for _, y in pairs]
    if n >= 3 and len(set(f1)) > 1 and len(set(f2)) > 1:
        out["pearson"] = float(pearsonr(f1, f2)[0])
        out["spearman"] = float(spearmanr(f1, f2)[0])
    else:
        out["pearson"] = out["spearman"] = None
    cap = lambda k: str(k) if k < 4 else "4+"  # noqa: E731
    conf = Counter((cap(len(x)), cap(len(y))) for x, y in pairs)
    out["attempt_count_confusion"] = {f"{i}|{j}": c for (i, j), c in sorted(conf.items())}
    return out


def sample_trials(trials: list[Any], n: int, seed: int = 42) -> list[Any]:
    """All valid multi-attempt trials first, then random others, up to ``n`` (seeded)."""
    valid = [t for t in trials if _scores(t.grade)]
    multi = [t for t in valid if len(_scores(t.grade) or []) > 1]
    rest = [t for t in valid if t not in multi]
    rng = random.Random(seed)
    rng.shuffle(rest)
    return (multi + rest)[:n] if len(multi) < n else rng.sample(multi, n)


def run_exp7(session: Any, run_dir: str | Path, source_run: str | Path, judges: list[Any] | None = None) -> Path:
    """Re-grade a sample of ``source_run`` with each of ``judges`` (default: ``config.cross_judges`` built with
    :func:`esr_analysis.judge.make_judge`); store the re-grades as a run and ``<run_dir>_agreement.json``."""
    from esr_analysis.judge import make_judge
    from esr_analysis.judge.runner import run_grading
    from esr_analysis.judge.types import GradeRequest
    from esr_analysis.store.read import read_trials
    from esr_analysis.store.run import open_run
    from esr_analysis.store.schema import RunManifest, Trial

    c = session.config
    if judges is None:
        judges = [make_judge(j) for j in c.cross_judges]
    trials, _ = read_trials(source_run)
    sample = sample_trials(trials, c.cross_judge_samples, seed=c.seed + 42)
    reqs = [GradeRequest(prompt=t.prompt, response=t.response or "", latent_label=t.latent_label or "",
                         steered=bool(t.boost))
            for t in sample]
    columns: dict[str, list[list[float] | None]] = {"original": [_scores(t.grade) for t in sample]}
    manifest = RunManifest.collect(experiment="exp7", model_id=session.model_id.get("name"),
                                   sae_source=session.sae_identity,
                                   config={"experiment": "exp7", "source_run": str(source_run),
                                           "judges": [j.judge_id for j in judges], "n": len(sample)})
    rd = Path(run_dir)
    with open_run(rd, manifest, resume=True) as writer:
        for judge in judges:
            grades = run_grading(judge, reqs, cache=session.grade_cache, progress=session.progress).grades
            columns[judge.judge_id] = [_scores(g.model_dump()) for g in grades]
            for t, g in zip(sample, grades, strict=True):
                nt = Trial(experiment="exp7", condition=judge.judge_id, prompt=t.prompt, latent=t.latent,
                           latent_label=t.latent_label, boost=t.boost, seed=t.seed, response=t.response,
                           grade=g.model_dump(mode="json"), key_extra={"source": t.trial_id, "judge": judge.judge_id})
                if not writer.is_done(nt.trial_id):
                    writer.append(nt)
    names = list(columns)
    table = {f"{a} vs {b}": agreement(columns[a], columns[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    atomic_write_json(rd.parent / f"{rd.name}_agreement.json", table, indent=2)
    return rd
