"""Reading run directories: trials as :class:`Trial` records or a flat DataFrame, with every bad line reported.

A line of ``trials.jsonl`` is one of:

* a trial record (``{"kind": "esr.trial", ...}`` that validates as :class:`Trial`): loaded;
* ``invalid_json`` (not UTF-8 JSON), ``foreign`` (JSON but not a trial record), ``invalid_trial`` (a trial
  record that fails validation) or ``duplicate_trial_id``: **fatal** problems. By default they raise
  :class:`RunFormatError` listing ``file:line: kind: message``; with ``strict=False`` they are collected in the
  :class:`LoadReport` (and warned about) and the other lines load;
* a blank line, or an unterminated final line that is not a valid record (a write cut short by a crash):
  ignored, reported in the :class:`LoadReport` and warned about, never fatal. (An unterminated final line that
  *is* a valid record is loaded; resuming the run still redoes it, see :func:`~esr_analysis.store.open_run`.)
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .schema import RunManifest, Trial

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FATAL_KINDS",
    "FRAME_COLUMNS",
    "MANIFEST_NAME",
    "TRIALS_NAME",
    "LoadProblem",
    "LoadReport",
    "RunFormatError",
    "load_run",
    "parse_trial_lines",
    "read_manifest",
    "read_trials",
    "trials_to_frame",
]

MANIFEST_NAME = "manifest.json"
TRIALS_NAME = "trials.jsonl"
FATAL_KINDS = frozenset({"invalid_json", "foreign", "invalid_trial", "duplicate_trial_id", "invalid_record"})


@dataclass(frozen=True)
class LoadProblem:
    """One line (or record) that could not be loaded as it is.  ``line`` is 1-based; ``where`` is a JSON path
    inside single-document files (the authors' result JSON)."""

    path: str
    line: int | None
    kind: str
    message: str
    where: str | None = None

    @property
    def fatal(self) -> bool:
        return self.kind in FATAL_KINDS

    def __str__(self) -> str:
        loc = self.path if self.line is None else f"{self.path}:{self.line}"
        if self.where:
            loc += f" ({self.where})"
        return f"{loc}: {self.kind}: {self.message}"


@dataclass
class LoadReport:
    """What a reader saw: records loaded, and every problem with its file and line."""

    path: str
    n_lines: int = 0
    n_records: int = 0
    problems: list[LoadProblem] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    """File-level data outside the records (the authors' ``experiment_config``, ``ablated_latents``, ...)."""

    @property
    def fatal(self) -> list[LoadProblem]:
        return [p for p in self.problems if p.fatal]

    def summary(self, limit: int = 20) -> str:
        head = f"{self.path}: {self.n_records} records loaded, {len(self.problems)} problem(s)"
        lines = [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        return "\n".join([head, *("  " + line for line in lines)])


class RunFormatError(ValueError):
    """Corrupt or foreign content in a results file; ``problems`` lists each with file and line."""

    def __init__(self, message: str, problems: Iterable[LoadProblem] = ()) -> None:
        self.problems = list(problems)
        details = "\n".join(f"  {p}" for p in self.problems[:20])
        if len(self.problems) > 20:
            details += f"\n  ... and {len(self.problems) - 20} more"
        super().__init__(message + ("\n" + details if details else ""))


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "<record>"
        parts.append(f"{loc}: {err.get('msg')}")
    more = exc.error_count() - 3
    return "; ".join(parts) + (f"; (+{more} more)" if more > 0 else "")


def parse_trial_lines(data: bytes, path: str | Path, *, strict: bool = True) -> tuple[list[Trial], LoadReport]:
    """Parse the bytes of a ``trials.jsonl`` file (see the module docstring for the rules)."""
    path = str(path)
    report = LoadReport(path=path)
    trials: list[Trial] = []
    seen: dict[str, int] = {}
    chunks = data.split(b"\n")
    tail = chunks.pop()  # b"" when the file ends with a newline
    numbered = [(i + 1, c, True) for i, c in enumerate(chunks)]
    if tail:
        numbered.append((len(chunks) + 1, tail, False))
    report.n_lines = len(numbered)
    for lineno, raw, terminated in numbered:
        if not raw.strip():
            report.problems.append(LoadProblem(path, lineno, "blank_line", "empty line ignored"))
            continue
        problem: LoadProblem | None = None
        trial: Trial | None = None
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem = LoadProblem(path, lineno, "invalid_json", f"{exc}; line starts {_short(repr(raw[:60]))}")
        else:
            if not isinstance(obj, dict) or obj.get("kind") != "esr.trial":
                kind = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
                problem = LoadProblem(path, lineno, "foreign", f"not an esr.trial record (kind={kind!r})")
            else:
                try:
                    trial = Trial.model_validate(obj)
                except ValidationError as exc:
                    problem = LoadProblem(path, lineno, "invalid_trial", _validation_message(exc))
        if problem is not None:
            if not terminated:  # a write cut short by a crash: never fatal
                problem = LoadProblem(
                    path, lineno, "truncated_final_line",
                    f"unterminated final line ignored ({len(raw)} bytes; a write cut short?); resuming redoes it",
                )
            report.problems.append(problem)
            continue
        assert trial is not None
        if trial.trial_id in seen:
            report.problems.append(
                LoadProblem(path, lineno, "duplicate_trial_id",
                            f"trial_id {trial.trial_id} already on line {seen[trial.trial_id]}")
            )
            continue
        seen[trial.trial_id] = lineno
        trials.append(trial)
    report.n_records = len(trials)
    _raise_or_warn(report, strict)
    return trials, report


def _raise_or_warn(report: LoadReport, strict: bool) -> None:
    if strict and report.fatal:
        raise RunFormatError(
            f"{report.path}: {len(report.fatal)} corrupt or foreign record(s); fix or remove them, or pass "
            "strict=False to load the rest and collect them in the report",
            report.fatal,
        )
    if report.problems:
        warnings.warn(report.summary(limit=5), stacklevel=3)


def _trials_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / TRIALS_NAME
    if not p.exists():
        raise FileNotFoundError(f"no trials file at {p}; pass a run directory made by open_run()")
    return p


def read_trials(path: str | Path, *, strict: bool = True) -> tuple[list[Trial], LoadReport]:
    """All trials of a run directory (or of a ``trials.jsonl`` path) and the :class:`LoadReport`."""
    p = _trials_path(path)
    return parse_trial_lines(p.read_bytes(), p, strict=strict)


def read_manifest(directory: str | Path) -> RunManifest:
    """The :class:`RunManifest` of a run directory; a clear error when missing or not a manifest."""
    p = Path(directory) / MANIFEST_NAME
    if not p.exists():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {directory}; is this a run directory made by open_run()?")
    try:
        return RunManifest.model_validate_json(p.read_bytes())
    except ValidationError as exc:
        raise RunFormatError(
            f"{p}: not a valid run manifest",
            [LoadProblem(str(p), None, "invalid_record", _validation_message(exc))],
        ) from exc


FRAME_COLUMNS: tuple[str, ...] = (
    "trial_id", "experiment", "condition", "prompt", "latent", "latent_label", "boost", "unit", "seed", "scope",
    "layer_steer", "layer_ablate", "layer_read", "n_interventions", "response", "n_output_tokens",
    "graded", "n_attempts", "first_score", "last_score", "scores", "degenerate", "error", "judge_id", "rubric_hash",
    "started_at", "finished_at", "grade", "interventions", "meta",
)


def _degenerate(t: Trial) -> bool | None:
    """The stored fluency verdict, else the rule applied to the response now (``None`` without a response)."""
    if t.fluency is not None and "degenerate" in t.fluency:
        return bool(t.fluency["degenerate"])
    if t.response is None:
        return None
    from esr_analysis.metrics.fluency import is_degenerate

    return is_degenerate(t.response)


def _trial_row(t: Trial, scored_attempts: Any) -> dict[str, Any]:
    grade = t.grade
    scores = scored_attempts(grade) if grade is not None else None
    grade_error = grade.get("error") if grade else None
    return {
        "trial_id": t.trial_id,
        "experiment": t.experiment,
        "condition": t.condition,
        "prompt": t.prompt,
        "latent": t.latent,
        "latent_label": t.latent_label,
        "boost": t.boost,
        "unit": t.unit,
        "seed": t.seed,
        "scope": t.scope,
        "layer_steer": t.layers.steer,
        "layer_ablate": t.layers.ablate,
        "layer_read": t.layers.read,
        "n_interventions": len(t.interventions),
        "response": t.response,
        "n_output_tokens": len(t.output_ids) if t.output_ids is not None else None,
        "graded": grade is not None,
        "n_attempts": len(scores) if scores is not None else None,
        "first_score": scores[0] if scores else None,
        "last_score": scores[-1] if scores else None,
        "scores": scores,
        "degenerate": _degenerate(t),
        "error": t.error or grade_error or None,
        "judge_id": grade.get("judge_id") if grade else None,
        "rubric_hash": grade.get("rubric_hash") if grade else None,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "grade": grade,
        "interventions": t.interventions,
        "meta": t.meta,
    }


def trials_to_frame(trials: Iterable[Trial]) -> pd.DataFrame:
    """One row per trial (columns :data:`FRAME_COLUMNS`), grade flattened.

    ``n_attempts`` is the number of attempts with a numeric score (null when ungraded), ``first_score`` /
    ``last_score`` are ``s_1`` / ``s_k``, ``scores`` the list, ``error`` the trial's error or else the grade's.
    Token ids are left out (use :func:`read_trials`); ``n_output_tokens`` counts them.
    """
    import pandas as pd

    from ..metrics.definitions import scored_attempts  # the metrics' own reading of a grade

    df = pd.DataFrame([_trial_row(t, scored_attempts) for t in trials], columns=list(FRAME_COLUMNS))
    for col in ("latent", "seed", "n_attempts", "n_interventions", "n_output_tokens"):
        df[col] = df[col].astype("Int64")
    for col in ("boost", "first_score", "last_score"):
        df[col] = df[col].astype("float64")
    return df


def load_run(directory: str | Path, *, strict: bool = True) -> pd.DataFrame:
    """A run directory as a DataFrame (see :func:`trials_to_frame`).

    ``df.attrs["manifest"]`` holds the manifest (as a dict) and ``df.attrs["load_report"]`` the
    :class:`LoadReport`.  Corrupt or foreign lines raise :class:`RunFormatError` (``strict=True``) or are
    collected in the report and warned about (``strict=False``).
    """
    d = Path(directory)
    trials, report = read_trials(d, strict=strict)
    manifest_dir = d if d.is_dir() else d.parent
    df = trials_to_frame(trials)
    df.attrs["manifest"] = read_manifest(manifest_dir).model_dump(mode="json")
    df.attrs["load_report"] = report
    return df
