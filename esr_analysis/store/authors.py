"""Reader for the authors' result JSON (McKenzie et al. 2026; ``docs/method.md#authors-results``) into our :class:`Trial` records.

The authors' file is one JSON document::

    {"experiment_config": {..., "judge_model_name", "disable_steering", ...},
     "results_by_feature": [{"feature_index_in_sae", "feature_label", "threshold", "error",
                             "trials": [{"prompt", "feature_index_in_sae", "feature_label", "threshold",
                                         "seed", "response", "score": {...} | null, "error"}]}],
     ["ablated_latents": [...], "boost_levels": [...], "experiment_metadata": {...}, ...]}

Mapping onto :class:`Trial`: ``experiment="authors"``; ``condition`` (:func:`authors_condition`) is
``"no_steering"`` when the config disables steering, ``"ablation"`` when the file lists ``ablated_latents``,
``"multi_boost"`` for an exp 2 boost sweep (``boost_levels``/``n_boost_levels`` present; the trial's
``boost`` is its level), ``"prompt_variant:<id>"`` for an exp 5 meta-prompt file
(``experiment_config.prompt_variant_id``), else ``"steered"`` (exp 1);
``latent``/``latent_label`` from the trial (else its feature); ``boost`` is the trial's ``threshold`` (the
strength actually used, also in exp 2) in ``unit="sae"`` at ``scope="all"``; ``interventions`` are an
``add_latent`` (and an ``ablate_latents``) dict with ``layer=None`` (the files do not record layers);
``grade`` is the authors' ``score`` with attempts renamed to ``{"text", "score"}`` and ``judge_id`` from
the config; ``error`` is the trial's error.  The file name, feature and trial positions go into
``key_extra`` (so ids are unique per source position) and the feature's own threshold/error into ``meta``.

Problems are reported with the file, the line (for JSON syntax errors) and the JSON path of the record;
by default they raise :class:`RunFormatError`, with ``strict=False`` they are collected in the report.
A feature with an ``error`` and no trials (its threshold search failed) is reported as a non-fatal
``feature_error`` problem, so those latents are visible rather than silently missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .read import (
    LoadProblem,
    LoadReport,
    RunFormatError,
    _raise_or_warn,
    _validation_message,
    trials_to_frame,
)
from .schema import Trial

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["authors_condition", "load_authors_results", "read_authors_results"]

_TRIAL_KEYS = {"prompt", "feature_index_in_sae", "feature_label", "threshold", "seed", "response", "score", "error"}


def _grade(score: Any, judge_id: str | None) -> dict[str, Any] | None:
    if score is None:
        return None
    if not isinstance(score, Mapping):
        raise TypeError(f"score must be an object or null, got {type(score).__name__}")
    attempts_in = score.get("attempts")
    if attempts_in is not None and not isinstance(attempts_in, list):
        raise TypeError(f"score.attempts must be a list, got {type(attempts_in).__name__}")
    attempts = []
    for j, a in enumerate(attempts_in or []):
        if not isinstance(a, Mapping):
            raise TypeError(f"score.attempts[{j}] must be an object, got {type(a).__name__}")
        attempts.append({"text": a.get("attempt_text", a.get("text")), "score": a.get("score")})
    grade: dict[str, Any] = {
        "attempts": attempts,
        "raw_response": score.get("raw_response"),
        "error": score.get("error"),
        "judge_id": judge_id,
        "rubric_hash": None,
    }
    extra = {k: v for k, v in score.items() if k not in ("attempts", "raw_response", "error")}
    if extra:
        grade["extra"] = extra
    return grade


def authors_condition(doc: Mapping[str, Any]) -> str:
    """The condition of every trial of one authors' result document (see the module docstring)."""
    config = doc.get("experiment_config") or {}
    if config.get("disable_steering"):
        return "no_steering"
    if doc.get("ablated_latents"):
        return "ablation"
    if doc.get("boost_levels") is not None or doc.get("n_boost_levels") is not None:
        return "multi_boost"
    variant = config.get("prompt_variant_id")
    if variant:
        return f"prompt_variant:{variant}"
    return "steered"


def read_authors_results(path: str | Path, *, strict: bool = True) -> tuple[list[Trial], LoadReport]:
    """Read one of the authors' result JSON files into :class:`Trial` records and a :class:`LoadReport`."""
    p = Path(path)
    report = LoadReport(path=str(p))
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        problem = LoadProblem(str(p), exc.lineno, "invalid_json", f"column {exc.colno}: {exc.msg}")
        raise RunFormatError(f"{p}: not valid JSON", [problem]) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("results_by_feature"), list):
        raise RunFormatError(
            f"{p}: not an authors' result file (expected an object with a 'results_by_feature' list)",
            [LoadProblem(str(p), None, "foreign", "missing results_by_feature")],
        )
    report.header = {k: v for k, v in doc.items() if k != "results_by_feature"}
    config = doc.get("experiment_config") or {}
    model_name = config.get("model_name")
    judge_id = config.get("judge_model_name")
    no_steering = bool(config.get("disable_steering"))
    ablated = doc.get("ablated_latents") or []
    condition = authors_condition(doc)
    trials: list[Trial] = []
    n_records = 0
    for i, feature in enumerate(doc["results_by_feature"]):
        where_f = f"results_by_feature[{i}]"
        if not isinstance(feature, Mapping) or not isinstance(feature.get("trials", []), list):
            report.problems.append(LoadProblem(str(p), None, "invalid_record", "feature is not an object with a "
                                               "trials list", where_f))
            continue
        f_trials = feature.get("trials") or []
        if feature.get("error") and not f_trials:
            report.problems.append(
                LoadProblem(str(p), None, "feature_error",
                            f"latent {feature.get('feature_index_in_sae')} has no trials: {feature.get('error')}",
                            where_f)
            )
        for j, raw in enumerate(f_trials):
            n_records += 1
            where = f"{where_f}.trials[{j}]"
            try:
                if not isinstance(raw, Mapping):
                    raise TypeError(f"trial must be an object, got {type(raw).__name__}")
                latent = raw.get("feature_index_in_sae", feature.get("feature_index_in_sae"))
                boost = raw.get("threshold")
                interventions: list[dict[str, Any]] = []
                if not no_steering and boost is not None and latent is not None:
                    interventions.append({"kind": "add_latent", "latent": latent, "layer": None, "scope": "all",
                                          "unit": "sae", "strength_given": boost, "strength_sae": boost})
                if ablated:
                    interventions.append({"kind": "ablate_latents", "latents": list(ablated), "layer": None,
                                          "scope": "all"})
                extra = {k: v for k, v in raw.items() if k not in _TRIAL_KEYS}
                trial = Trial(
                    experiment="authors",
                    condition=condition,
                    prompt=raw["prompt"],
                    latent=latent,
                    latent_label=raw.get("feature_label", feature.get("feature_label")),
                    boost=boost,
                    unit="sae",
                    seed=raw.get("seed"),
                    scope="all",
                    interventions=interventions,
                    key_extra={"source_file": p.name, "feature_pos": i, "trial_pos": j},
                    response=raw.get("response"),
                    grade=_grade(raw.get("score"), judge_id),
                    error=raw.get("error"),
                    meta={
                        "source": "authors",
                        "source_file": p.name,
                        "model_name": model_name,
                        "feature_threshold": feature.get("threshold"),
                        "feature_error": feature.get("error"),
                        **({"extra": extra} if extra else {}),
                    },
                )
            except KeyError as exc:
                report.problems.append(LoadProblem(str(p), None, "invalid_record", f"missing key {exc}", where))
                continue
            except TypeError as exc:
                report.problems.append(LoadProblem(str(p), None, "invalid_record", str(exc), where))
                continue
            except ValidationError as exc:
                report.problems.append(LoadProblem(str(p), None, "invalid_record", _validation_message(exc), where))
                continue
            trials.append(trial)
    report.n_lines = n_records
    report.n_records = len(trials)
    _raise_or_warn(report, strict)
    return trials, report


def load_authors_results(paths: str | Path | Iterable[str | Path], *, strict: bool = True) -> pd.DataFrame:
    """One or more authors' result files as one DataFrame (the columns of
    :func:`~esr_analysis.store.trials_to_frame` plus ``model_name`` and ``source_file``), ready for
    :func:`esr_analysis.metrics.summary.summarize` (group pooled files with ``by=["model_name", "condition"]``:
    latent indices are only comparable within one model's SAE, and exp 1, exp 2 and exp 5 files are different
    conditions; ``summarize`` refuses to pool them).  ``df.attrs["load_reports"]`` holds one :class:`LoadReport`
    per file, with the file's header (config etc.)."""
    path_list = [paths] if isinstance(paths, str | Path) else list(paths)
    all_trials: list[Trial] = []
    reports: list[LoadReport] = []
    for path in path_list:
        trials, report = read_authors_results(path, strict=strict)
        all_trials.extend(trials)
        reports.append(report)
    df = trials_to_frame(all_trials)
    df["model_name"] = [t.meta.get("model_name") for t in all_trials]
    df["source_file"] = [t.meta.get("source_file") for t in all_trials]
    df.attrs["load_reports"] = reports
    return df
