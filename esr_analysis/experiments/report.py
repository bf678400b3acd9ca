"""Metrics tables of a pipeline run (or of one store run), with Wilson/t and latent-clustered intervals.

Rates are shown in percent; means in score points. Columns: ``value``, ``n`` (the metric's denominator),
``ci`` (Wilson for rates, Student-t for means; trials treated as iid) and ``boot`` (bootstrap resampling
latents, which accounts for the several trials per latent). Excluded trials (errors, no scored attempt) are
counted in ``excluded`` and left out of every denominator (``docs/method.md#metrics``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPORT_METRICS = ("first_attempt_score", "multi_attempt_rate", "esr_rate", "improvement_rate", "mean_improvement",
                  "degraded_rate")
_RATES = {"multi_attempt_rate", "esr_rate", "improvement_rate", "degraded_rate"}


def _store_runs(run_dir: Path) -> dict[str, Path]:
    if (run_dir / "trials.jsonl").is_file():
        return {run_dir.name: run_dir}
    return {p.name: p for p in sorted(run_dir.iterdir()) if p.is_dir() and (p / "trials.jsonl").is_file()}


def report_tables(run_dir: str | Path, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{experiment: DataFrame}``: :func:`esr_analysis.metrics.summary.summarize` by condition for each store run."""
    from esr_analysis.metrics.summary import summarize
    from esr_analysis.store.read import load_run

    rd = Path(run_dir)
    if not rd.is_dir():
        raise FileNotFoundError(f"no run directory at {rd}")
    runs = _store_runs(rd)
    if not runs:
        raise FileNotFoundError(f"{rd} holds no trials (expected exp*/trials.jsonl)")
    out = {}
    for name, path in runs.items():
        df = load_run(path)
        if df.empty:
            continue
        out[name] = summarize(df, by="condition", metrics=REPORT_METRICS, n_boot=n_boot, seed=seed)
    return out


def degenerate_shares(run_dir: str | Path) -> dict[str, dict[str, tuple[int, int]]]:
    """``{experiment: {condition: (degenerate, n)}}``: how many responses with text are degenerate
    (:func:`esr_analysis.metrics.fluency.is_degenerate`, stored per trial as ``fluency``)."""
    from esr_analysis.store.read import load_run

    out: dict[str, dict[str, tuple[int, int]]] = {}
    for name, path in _store_runs(Path(run_dir)).items():
        df = load_run(path)
        if df.empty:
            continue
        per: dict[str, tuple[int, int]] = {}
        for cond, group in df.groupby("condition", sort=False):
            flags = [bool(v) for v in group["degenerate"] if v is not None and v == v]
            per[str(cond)] = (sum(flags), len(flags))
        out[name] = per
    return out


def format_degenerate(shares: dict[str, tuple[int, int]]) -> str:
    """``degenerate responses: steered 3/18 (16.7%), ...``."""
    parts = [f"{c} {k}/{n} ({100 * k / n:.1f}%)" if n else f"{c} -" for c, (k, n) in shares.items()]
    return "degenerate responses: " + ", ".join(parts)


def _fmt(metric: str, v: float) -> str:
    if v != v:  # NaN
        return "-"
    return f"{100 * v:5.1f}%" if metric in _RATES else f"{v:6.1f}"


def format_table(df: Any) -> str:
    """A plain-text table of one :func:`report_tables` frame."""
    lines = [f"{'condition':<22} {'metric':<20} {'value':>7} {'n':>5}  {'95% CI (Wilson/t)':<19} "
             f"{'95% CI (latent boot)':<20} excl"]
    for _, r in df.iterrows():
        ci = f"[{_fmt(r.metric, r.ci_low).strip()}, {_fmt(r.metric, r.ci_high).strip()}]"
        bt = f"[{_fmt(r.metric, r.boot_low).strip()}, {_fmt(r.metric, r.boot_high).strip()}]"
        lines.append(f"{str(r.condition)[:22]:<22} {r.metric:<20} {_fmt(r.metric, r.value):>7} {int(r.n):>5}  "
                     f"{ci:<19} {bt:<20} {int(r.excluded)}")
    return "\n".join(lines)


def report(run_dir: str | Path, **kwargs: Any) -> str:
    """The metrics report of a run as text (one table per experiment)."""
    import json

    rd = Path(run_dir)
    parts = []
    sel = rd / "selection.json"
    if sel.is_file():
        s = json.loads(sel.read_text())
        removed = ", ".join(f"{k} -{v}" for k, v in s.get("removed", {}).items())
        parts.append(f"latents: {s['latents']} (from {s['n_candidates']} candidates; {removed})")
    thr = rd / "thresholds.json"
    if thr.is_file():
        t = json.loads(thr.read_text())
        parts.append("thresholds: " + ", ".join(f"{k}={v['threshold']:g}" for k, v in t.items()))
    cal = rd / "calibration.json"
    if cal.is_file():
        dropped = json.loads(cal.read_text()).get("dropped", {})
        if dropped:
            parts.append(f"dropped after calibration: {len(dropped)} latent(s) with no fluent off-topic window "
                         f"({', '.join(dropped)})")
    shares = degenerate_shares(rd)
    for name, df in report_tables(rd, **kwargs).items():
        parts.append(f"\n== {name} ==\n{format_table(df)}")
        if name in shares:
            parts.append(format_degenerate(shares[name]))
    return "\n".join(parts)
