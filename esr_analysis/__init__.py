"""esr-analysis: mechanistic analysis of Endogenous Steering Resistance (ESR) with nnsight and SAEs.

Importing the package is cheap: nothing below is imported until it is first used (module ``__getattr__``),
and torch, transformers, nnsight and sae-lens load only inside the functions that need them.

The curated API (each name also lives in its subpackage, shown here)::

    load_model, spec_of, get_spec, list_models   esr_analysis.models     (registry, loading)
    load_sae, SlicedSAE, describe_latent         esr_analysis.sae        (loading, slicing, labels)
    AddLatent, AddVector, AblateLatents          esr_analysis.steering   (interventions as plain data)
    SamplingSettings, LatentCapture              esr_analysis.steering   (sampling, results)
    generate, replay, read_residuals             esr_analysis.steering   (generate, replay, residuals)
    median_residual_norm, contrastive_direction  esr_analysis.steering   (residuals, directions)
    make_judge, grade_all, GradeRequest          esr_analysis.judge
    load_run, open_run                           esr_analysis.store
    summarize, compare, estimate                 esr_analysis.metrics
    load_config, run_pipeline, report            esr_analysis.experiments
    ConfigError                                  esr_analysis.errors

Subpackages (``docs/DESIGN.md`` has the map, ``docs/method.md`` the method and every definition)::

    tracing      the only nnsight importer: traces, in-trace kernels, model sites, the local NDIF server
    models       model specs, loading, the embedded and tiny models, chat formatting, model organisms
    sae          SAE loading, exact latent slices, labels, harvesting and training
    steering     interventions, steered generation, teacher-forced replay, residuals, directions
    judge        the judges (Claude, OpenAI-compatible, offline), restart language, the grading runner
    metrics      every metric defined once, fluency, intervals, summaries, the paper's numbers
    store        run directories: schema, crash-safe writer, readers
    experiments  configs and presets, the experiment pipeline, reports, regrading
    mechanisms   mechanisms of recovery: off-topic detectors, the anatomy of a recovery, attribution
    finetune     the model organism: self-correction data, LoRA training, shipped adapters
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API: dict[str, str] = {
    "load_model": "esr_analysis.models.loading",
    "spec_of": "esr_analysis.models.loading",
    "get_spec": "esr_analysis.models.registry",
    "list_models": "esr_analysis.models.registry",
    "load_sae": "esr_analysis.sae.loading",
    "SlicedSAE": "esr_analysis.sae.sliced",
    "describe_latent": "esr_analysis.sae.labels",
    "AddLatent": "esr_analysis.steering.interventions",
    "AddVector": "esr_analysis.steering.interventions",
    "AblateLatents": "esr_analysis.steering.interventions",
    "SamplingSettings": "esr_analysis.steering.sampling",
    "LatentCapture": "esr_analysis.steering.results",
    "generate": "esr_analysis.steering.generate",
    "replay": "esr_analysis.steering.replay",
    "read_residuals": "esr_analysis.steering.residuals",
    "median_residual_norm": "esr_analysis.steering.residuals",
    "contrastive_direction": "esr_analysis.steering.directions",
    "make_judge": "esr_analysis.judge",
    "grade_all": "esr_analysis.judge.runner",
    "GradeRequest": "esr_analysis.judge.types",
    "load_run": "esr_analysis.store.read",
    "open_run": "esr_analysis.store.run",
    "summarize": "esr_analysis.metrics.summary",
    "compare": "esr_analysis.metrics.comparison",
    "estimate": "esr_analysis.metrics.summary",
    "load_config": "esr_analysis.experiments.config",
    "run_pipeline": "esr_analysis.experiments.pipeline",
    "report": "esr_analysis.experiments.report",
    "ConfigError": "esr_analysis.errors",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    """Import the curated name ``name`` from its home module on first use (then cache it here)."""
    home = _API.get(name)
    if home is None:
        raise AttributeError(f"module 'esr_analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
