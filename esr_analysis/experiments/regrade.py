"""Regrade stored trials with another judge (or a new version of the same one) into a new run directory.

A judge change (a new offline-judge version, or Claude instead of the offline judge) changes every grade, and a
store run's identity includes the judge (``judge_id``, ``rubric_hash``), so an old run cannot be resumed with the
new judge. Regrading keeps every generation (the responses are not re-sampled) and writes a **new** directory:

* :func:`regrade_store_run`: one store run (``<dir>/manifest.json`` + ``trials.jsonl``) → ``dst``. Each trial is
  graded again from its stored ``prompt``, ``response`` and ``latent_label`` (steered = a latent with a non-zero
  strength, the flag the pipeline grades with); ``grade``, ``error`` and ``fluency`` are replaced, everything else
  (ids, seeds, interventions, tokens) is kept. The manifest takes the new judge's ``judge_id`` and
  ``rubric_hash`` and a ``regraded`` history entry naming the source and its judge.
* :func:`regrade_run_dir`: a pipeline run directory: every store run in it (any depth) regraded, every other file
  copied, ``samples.md`` rewritten from the new grades.

The source is never modified; an existing ``dst`` is refused (no result already written is overwritten).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esr_analysis.files import atomic_write_bytes

STORE_FILES = ("manifest.json", "trials.jsonl")


def _is_store_run(d: Path) -> bool:
    return (d / "manifest.json").is_file() and (d / "trials.jsonl").is_file()


def _steered(t: Any) -> bool:
    return t.latent is not None and bool(t.boost)


def regrade_store_run(src: str | Path, dst: str | Path, judge: Any, *, grade_cache: Any = None,
                      progress: bool = True) -> dict[str, Any]:
    """Regrade the store run ``src`` with ``judge`` into the new store run ``dst``; returns counts
    ``{"n", "changed_attempts", "from_rubric", "to_rubric"}`` (``changed_attempts``: trials whose number of
    scored attempts differs from the source's)."""
    from esr_analysis.judge.runner import run_grading
    from esr_analysis.judge.types import GradeRequest
    from esr_analysis.provenance import git_commit
    from esr_analysis.store import open_run, read_manifest, read_trials
    from esr_analysis.store.schema import fluency_record, utcnow

    src, dst = Path(src), Path(dst)
    if not _is_store_run(src):
        raise FileNotFoundError(f"{src} is not a store run (needs manifest.json and trials.jsonl)")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} exists and is not empty: regrading never writes over a run")
    manifest = read_manifest(src)
    trials = list(read_trials(src)[0])
    reqs = [GradeRequest(prompt=t.prompt, response=t.response or "", latent_label=t.latent_label or "",
                         steered=_steered(t)) for t in trials]
    grades = run_grading(judge, reqs, cache=grade_cache, progress=progress).grades if reqs else []
    entry = {"event": "regraded", "at": utcnow().isoformat(), "from": str(src), "from_judge_id": manifest.judge_id,
             "from_rubric_hash": manifest.rubric_hash, "git_commit": git_commit()}
    new_manifest = manifest.model_copy(update={"judge_id": judge.judge_id, "rubric_hash": judge.rubric_hash,
                                               "history": [*manifest.history, entry]})
    changed = 0
    with open_run(dst, new_manifest, resume=False) as writer:
        for t, g in zip(trials, grades, strict=True):
            gd = g.model_dump(mode="json")
            old_n = len((t.grade or {}).get("attempts") or [])
            changed += int(old_n != len(gd.get("attempts") or []))
            writer.append(t.model_copy(update={"grade": gd, "error": gd.get("error"),
                                               "fluency": fluency_record(t.response)}))
    return {"n": len(trials), "changed_attempts": changed, "from_rubric": manifest.rubric_hash,
            "to_rubric": judge.rubric_hash}


def regrade_run_dir(src: str | Path, dst: str | Path, judge: Any, *, grade_cache: Any = None,
                    progress: bool = True) -> dict[str, dict[str, Any]]:
    """Regrade every store run under the run directory ``src`` into ``dst`` (same layout; other files copied,
    ``samples.md`` of each pipeline run rewritten); returns :func:`regrade_store_run`'s counts per store run
    (keyed by its path relative to ``src``)."""
    from esr_analysis.experiments.samples import write_samples

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a directory")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} exists and is not empty: regrading never writes over a run")
    stores = sorted(d for d in [src, *src.rglob("*")] if d.is_dir() and _is_store_run(d))
    if not stores:
        raise ValueError(f"no store run (manifest.json + trials.jsonl) under {src}")
    store_set = set(stores)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        if f.name in STORE_FILES and f.parent in store_set or f.name == ".lock":
            continue
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, f.read_bytes())
    counts = {}
    for d in stores:
        counts[str(d.relative_to(src))] = regrade_store_run(d, dst / d.relative_to(src), judge,
                                                            grade_cache=grade_cache, progress=progress)
    for cfg in sorted(dst.rglob("config.json")):
        if (cfg.parent / "samples.md").is_file():
            write_samples(cfg.parent)
    return counts

