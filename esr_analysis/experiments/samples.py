"""``samples.md``: what "threshold" means in a run, shown as text.

For every experiment of a run directory and every condition in it, the first ``per_condition`` trials (in
stored order) are written with their latent, boost, the judge's attempts with scores, and the fluency verdict,
so a reader sees the responses the metrics count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esr_analysis.files import atomic_write_text


def _attempts(grade: dict[str, Any] | None) -> str:
    if not grade:
        return "not graded"
    if grade.get("error"):
        return f"judge error: {grade['error']}"
    parts = [f"{a.get('score')}" for a in grade.get("attempts") or []]
    return f"{len(parts)} attempt(s), scores " + " -> ".join(parts) if parts else "no scored attempt"


def samples_markdown(run_dir: str | Path, *, per_condition: int = 3, max_chars: int = 1200) -> str:
    """The markdown text of ``samples.md`` for ``run_dir`` (module docstring)."""
    from esr_analysis.store.read import read_trials

    rd = Path(run_dir)
    lines = [f"# Samples of {rd.name}", "",
             f"The first {per_condition} trials of each condition (responses cut at {max_chars} characters). "
             "Boosts are in SAE units (strength relative to the median residual norm in brackets).", ""]
    for exp in sorted(p for p in rd.iterdir() if p.is_dir() and (p / "trials.jsonl").is_file()):
        trials, _ = read_trials(exp)
        by_cond: dict[str, list[Any]] = {}
        for t in trials:
            by_cond.setdefault(t.condition, []).append(t)
        lines += [f"## {exp.name}", ""]
        for cond, ts in by_cond.items():
            lines += [f"### {cond}", ""]
            for t in ts[:per_condition]:
                rel = next((i.get("strength_relative") for i in t.interventions if i.get("strength_relative")), None)
                boost = "no steering" if not t.interventions else (
                    f"boost {t.boost:g}" + (f" ({rel:.2f}x)" if rel else ""))
                flu = t.fluency or {}
                verdict = "degenerate" if flu.get("degenerate") else ("fluent" if flu else "fluency not recorded")
                label = f"latent {t.latent} ({t.latent_label})" if t.latent is not None else "no latent"
                text = (t.response or "").strip()
                cut = text[:max_chars] + (" [...]" if len(text) > max_chars else "")
                lines += [f"**{t.prompt}** · {label} · {boost} · {_attempts(t.grade)} · {verdict}", "",
                          *(f"> {ln}" if ln else ">" for ln in cut.splitlines() or [""]), ""]
    return "\n".join(lines) + "\n"


def write_samples(run_dir: str | Path, **kwargs: Any) -> Path:
    """Write ``samples.md`` into ``run_dir`` (atomically) and return its path."""
    path = Path(run_dir) / "samples.md"
    atomic_write_text(path, samples_markdown(run_dir, **kwargs))
    return path
