"""Base model and model organism side by side: one preset, the same latents, prompts, seeds and judge.

:func:`run_side_by_side` runs a preset on the first model (which draws the latents, and drops those without a
fluent off-topic window when the preset's ``search.require_fluent_window`` is on), then on every other model
with the selection fixed to the first model's latents and that rule off (an organism that resists at the base
model's strengths may see no fluent off-topic sample in its own search; dropping its latents would unmatch the
arms); thresholds are searched per model (as the paper did for its exp 4). Each model's run is an ordinary
resumable run directory under ``<root>/<model>``.

:func:`condition_record` is the per-condition record of ``docs/organism.md`` (also ``eval.json``):
``n``, multi-attempt and ESR rates (fractions) with 95 % Wilson intervals, first-attempt score with its
Student-t interval, mean improvement of multi-attempt trials and the degenerate share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esr_analysis.files import atomic_write_json, atomic_write_text

__all__ = ["SideBySide", "condition_record", "run_side_by_side", "side_by_side_table"]


def condition_record(trials: Any) -> dict[str, Any]:
    """The per-condition record (module docstring) of a store run's trials (a ``read_trials`` list or frame)."""
    from esr_analysis.metrics.summary import summarize

    df = summarize(trials, n_boot=200).set_index("metric")

    def val(m: str) -> float | None:
        v = float(df.loc[m, "value"])
        return None if v != v else v  # NaN (e.g. no multi-attempt trial) -> null

    def ci(m: str) -> list[float]:
        return [float(df.loc[m, "ci_low"]), float(df.loc[m, "ci_high"])]

    return {"n": int(df.loc["multi_attempt_rate", "n"]), "multi_attempt_rate": val("multi_attempt_rate"),
            "multi_attempt_ci": ci("multi_attempt_rate"), "esr_rate": val("esr_rate"), "esr_ci": ci("esr_rate"),
            "first_attempt_score": val("first_attempt_score"), "first_attempt_ci": ci("first_attempt_score"),
            "mean_improvement": val("mean_improvement"), "n_multi_attempt": int(df.loc["mean_improvement", "n"]),
            "degenerate_share": val("degraded_rate"), "interval": "wilson 95% (rates), student-t 95% (means)"}


def side_by_side_table(records: dict[str, dict[str, Any]]) -> str:
    """A markdown table of ``{row name: condition_record}``."""
    rows = ["| condition | n | multi-attempt (95 % CI) | ESR (95 % CI) | first-attempt score | mean improvement "
            "(multi-attempt trials) | degenerate |", "|---|---|---|---|---|---|---|"]
    for key, m in records.items():
        imp = "n/a" if not m["n_multi_attempt"] else f"{m['mean_improvement']:+.1f} (n={m['n_multi_attempt']})"
        first = "n/a" if m["first_attempt_score"] is None else f"{m['first_attempt_score']:.1f}"
        rows.append(f"| {key} | {m['n']} | {m['multi_attempt_rate'] or 0:.2f} [{m['multi_attempt_ci'][0]:.2f}, "
                    f"{m['multi_attempt_ci'][1]:.2f}] | {m['esr_rate'] or 0:.2f} [{m['esr_ci'][0]:.2f}, "
                    f"{m['esr_ci'][1]:.2f}] | {first} | {imp} | {m['degenerate_share'] or 0:.2f} |")
    return "\n".join(rows)


@dataclass
class SideBySide:
    """Where the side-by-side runs live and what they measured."""

    root: Path
    runs: dict[str, Any] = field(default_factory=dict)  # model -> PipelineResult
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # "<model> <exp>" -> condition_record
    figure: Path | None = None
    samples: Path | None = None

    def table(self) -> str:
        return side_by_side_table(self.records)


_EXP_NAMES = {"exp1": "steered (exp 1)", "exp8": "no steering (exp 8)"}


def run_side_by_side(preset: str | dict[str, Any], models: list[str], *, root: str | Path,
                     overrides: list[str] | dict[str, Any] | None = None, progress: bool = True,
                     n_recoveries: int = 3, open_session: Any = None) -> SideBySide:
    """Run ``preset`` on each of ``models`` (module docstring); write ``<root>/side_by_side.json``, a Fig. 2-style
    figure of every (model, experiment) arm and ``<root>/recoveries.md`` with up to ``n_recoveries``
    multi-attempt transcripts per model. ``ValueError`` before any compute for fewer than two models or an
    unknown model name. ``open_session(config)``, if given, opens each model's session (tests pass tiny models
    and a stub judge this way); by default the pipeline opens it from the config."""
    from esr_analysis.experiments.config import load_config
    from esr_analysis.experiments.pipeline import run_pipeline
    from esr_analysis.experiments.transcripts import pick_transcripts, transcripts_text
    from esr_analysis.models.registry import get_spec
    from esr_analysis.plotting import fig2_esr
    from esr_analysis.store.read import load_run, read_trials

    if len(models) < 2 or len(set(models)) != len(models):
        raise ValueError(f"give at least two distinct models, got {models}")
    if open_session is None:
        for m in models:
            get_spec(m)  # unknown names fail here, before any model loads
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    result = SideBySide(root=out)
    latents: list[int] | None = None
    arms: dict[str, Path] = {}
    texts: list[str] = ["# Recoveries, side by side", ""]
    for model in models:
        fixed: dict[str, Any] = {"model": model}
        if latents is not None:
            fixed |= {"selection.latents": latents, "selection.n_latents": len(latents),
                      "selection.relevance_rule": "none", "search.require_fluent_window": False}
        cfg = load_config(load_config(preset, overrides), fixed)
        session = open_session(cfg) if open_session is not None else None
        res = run_pipeline(cfg, run_dir=out / model, progress=progress, session=session)
        latents = latents if latents is not None else list(res.latents)
        result.runs[model] = res
        for exp, path in res.experiments.items():
            if exp not in _EXP_NAMES:
                continue
            trials, _ = read_trials(path)
            name = f"{model} {_EXP_NAMES[exp]}"
            result.records[name] = {**condition_record(trials), "model": model, "experiment": exp,
                                    "run_dir": str(out / model)}
            arms[name] = path
        if "exp1" in res.experiments:
            picked = pick_transcripts(load_run(res.experiments["exp1"]), n_recoveries, kinds=("esr", "multi_attempt"))
            texts += [f"## {model}", "", "```", transcripts_text(picked) if len(picked) else
                      "(no multi-attempt trial in this run)", "```", ""]
    atomic_write_json(out / "side_by_side.json", {"models": models, "latents": latents, "records": result.records})
    result.samples = atomic_write_text(out / "recoveries.md", "\n".join(texts))
    if arms:
        result.figure = out / "fig2_side_by_side.png"
        fig2_esr(arms, result.figure, title=" vs ".join(models))
    return result
