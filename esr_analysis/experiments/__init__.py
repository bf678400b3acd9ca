"""The ESR experiment pipeline: prompts, latent selection, threshold calibration, exp 1/2/5/7/8, presets.

Typical use::

    from esr_analysis.experiments import load_config, run_pipeline, report
    result = run_pipeline("embedded-demo")
    print(report(result.run_dir))

Nothing heavy is imported here (torch, transformers and the judges load inside functions).
"""

from __future__ import annotations

from esr_analysis.experiments.bisection import ProbabilisticBisection, find_root
from esr_analysis.experiments.config import PRESETS, ExperimentConfig, load_config
from esr_analysis.experiments.prompts import PROMPT_SETS, load_prompts
from esr_analysis.experiments.report import report, report_tables

__all__ = [
    "PRESETS",
    "PROMPT_SETS",
    "ExperimentConfig",
    "ProbabilisticBisection",
    "find_root",
    "load_config",
    "load_prompts",
    "report",
    "report_tables",
    "run_pipeline",
    "resume_pipeline",
]


def __getattr__(name: str):
    if name in ("run_pipeline", "resume_pipeline"):
        from esr_analysis.experiments import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
