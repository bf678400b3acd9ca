"""Experiment configuration as data, the presets, and checks that run before any compute.

A config is a :class:`ExperimentConfig` (pydantic). Presets (:data:`PRESETS`) are plain dicts of
overrides on the defaults; ``--set key=value`` overrides use dotted paths (``search.target=50``).

Paper-vs-code discrepancies (``docs/method.md#paper-vs-code``) are explicit options:

* ``selection.relevance_rule``: ``"zero"`` (authors' code: max activation exactly 0 on every prompt) or
  ``"topk"`` (paper text: not among any prompt's top-``selection.top_k`` latents);
* ``selection.min_concreteness``: 65 (code) vs the paper's "below-median excluded" (``"median"``);
* ``repetition_penalty``: the code's per-model value (70B 1.2, 8B 1.15, Gemma 1.1) vs the paper's 1.1;
* ``steer_layer``: e.g. Llama-3.1-8B steers at 12 in the code and 19 in the paper; 70B at 33 with the
  layer-50 SAE;
* ``llama_extra_header``: the authors' doubled assistant header on Llama (off by default);
* ``template_system_prompt``: keep a system turn the chat template inserts by itself (Llama 3.1's dated turn,
  Qwen2.5's "You are Qwen"); the authors' code did, the paper says no system prompt (default: removed);
  ``system_prompt`` sets an explicit one (default none);
* ``search.target``: 30 (exp 1/5/8) vs 50 (exp 2 configs);
* ``search.max_new_tokens``: threshold-search generations use half the trial length (256 of 512).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EXPERIMENTS = ("exp1", "exp8", "exp2", "exp5", "exp7")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SelectionConfig(_Strict):
    """Latent (distractor) selection, ``docs/method.md#selection``."""

    n_latents: int = Field(6, ge=1, description="latents wanted")
    candidate_factor: int = Field(3, ge=1, description="draw n_latents * candidate_factor candidates")
    latents: list[int] | None = Field(None, description="explicit latents (skips the random draw)")
    relevance_rule: Literal["zero", "topk", "none"] = "zero"
    top_k: int = Field(100, ge=1, description="k of the 'topk' relevance rule")
    exclude_dead: bool = True
    concreteness_judge: str | None = Field(None, description="LLM judge model for label concreteness (None: off)")
    min_concreteness: float | Literal["median"] = 65.0
    seed: int = 0


class SearchConfig(_Strict):
    """Per-latent threshold search (probabilistic bisection), ``docs/method.md#calibration``."""

    target: float = Field(30.0, description="first-attempt score (0-100) the threshold should produce")
    n_steps: int = Field(10, ge=1)
    samples_per_step: int = Field(1, ge=1, description="distinct prompts averaged per step (70B: 5)")
    lower: float = 0.0
    upper: float = 50.0
    prior_mean: float = 10.0
    prior_std: float = 10.0
    grid_size: int = Field(10_000, ge=3)
    confidence_scale: float = Field(5.0, gt=0)
    max_new_tokens: int = Field(256, ge=1)
    measure_achieved: bool = Field(True, description="one extra scored generation at the threshold")
    fluency_gate: bool = Field(True, description="score only fluent samples; an all-degenerate step scores 0 "
                                                 "(boost less)")
    require_fluent_window: bool = Field(True, description="drop a latent whose search never saw a fluent "
                                                          "off-topic sample (reason counted in calibration.json)")
    seed: int = 0

    @field_validator("target")
    @classmethod
    def _target_range(cls, v: float) -> float:
        if not 0.0 <= v <= 100.0:
            raise ValueError(f"search.target must be a score between 0 and 100, got {v}")
        return v


CalibrationMode = Literal["sigma", "multiple"]
CALIBRATION_MODES: tuple[CalibrationMode, ...] = ("sigma", "multiple")


class BoostConfig(_Strict):
    """Exp 2 levels: ``n_levels`` evenly spaced over mu +- range_std * sigma of the thresholds (clamped at 0,
    the authors' definition), and ``multiples`` of each latent's own threshold."""

    n_levels: int = Field(10, ge=2)
    range_std: float = Field(3.0, gt=0)
    multiples: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 1.5, 2.0])
    modes: list[CalibrationMode] = Field(default_factory=lambda: list(CALIBRATION_MODES))


class ExperimentConfig(_Strict):
    """Everything a pipeline run needs. ``experiments`` lists which of exp1/exp8/exp2/exp5/exp7 to run."""

    name: str = "custom"
    model: str = "qwen2.5-coder-0.5b-instruct"
    sae: str | None = Field(None, description="SAE source; None: the model spec's SAE")
    steer_layer: int | None = None
    read_layer: int | None = None
    device: str | None = None
    dtype: str | None = None
    judge: str = "offline"
    prompts: str = "esr"
    n_prompts_per_latent: int = Field(5, ge=1)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float | None = Field(None, description="None: the model spec's (code) value")
    max_new_tokens: int = Field(512, ge=1)
    batch_size: int = Field(16, ge=1)
    scope: Literal["all", "prompt", "generated"] = "all"
    llama_extra_header: bool = False
    system_prompt: str | None = Field(None, description="explicit system turn (None: none, as in the paper)")
    template_system_prompt: bool = Field(False, description="keep the chat template's own default system turn")
    remote: bool | str = Field(False, description="True: run traces on NDIF; a URL: that host; 'local': NDIF's "
                                                  "serialisation run in-process (tests)")
    seed: int = 0
    experiments: list[str] = Field(default_factory=lambda: ["exp1", "exp8"])
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    boost: BoostConfig = Field(default_factory=BoostConfig)
    meta_variants: list[str] = Field(default_factory=lambda: ["self_monitor"])
    cross_judges: list[str] = Field(default_factory=list)
    cross_judge_samples: int = Field(200, ge=1)
    output_dir: str = "runs"

    @field_validator("experiments")
    @classmethod
    def _known_experiments(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e not in EXPERIMENTS]
        if bad:
            raise ValueError(f"unknown experiments {bad}; choose from {', '.join(EXPERIMENTS)}")
        return v


_PAPER_COMMON: dict[str, Any] = {
    "judge": "claude", "template_system_prompt": True, "temperature": 0.6, "max_new_tokens": 512, "n_prompts_per_latent": 5, "batch_size": 16,
    "selection": {"n_latents": 500, "relevance_rule": "zero", "concreteness_judge": "claude-sonnet-4-5-20250929",
                  "min_concreteness": 65.0},
}


def _paper(model: str, lower: float, upper: float, mean: float, std: float, **extra: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(_PAPER_COMMON)
    cfg.update({"name": f"paper-{model.split('/')[-1].lower()}", "model": model,
                "search": {"target": 30.0, "n_steps": 10, "samples_per_step": 1, "lower": lower, "upper": upper,
                           "prior_mean": mean, "prior_std": std, "max_new_tokens": 256}})
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg


PRESETS: dict[str, dict[str, Any]] = {
    # The offline main job (make demo): embedded Qwen + the shipped SAE + the offline judge, sized for
    # <= 15 min on 2 CPU cores. Regime from scripts/regime_study.py (docs/experiments.md#regime): steer layer 12
    # (the SAE's layer), scope all, temperature 0.6, repetition penalty 1.1; fluent off-topic drift lies near
    # 0.25-0.5x the median residual norm (~20.5), i.e. about 10-25 SAE units for a median decoder row (~0.5),
    # and output degenerates from about 1x (~40 units). Bounds [0, 48], prior N(20, 12); the fluency gate
    # keeps the search below the collapse.
    "embedded-demo": {
        "name": "embedded-demo", "model": "qwen2.5-coder-0.5b-instruct", "sae": None, "judge": "offline",
        "n_prompts_per_latent": 3, "temperature": 0.6, "max_new_tokens": 64, "batch_size": 18,
        "repetition_penalty": 1.1, "experiments": ["exp1", "exp8"],
        "selection": {"n_latents": 6, "candidate_factor": 8, "relevance_rule": "zero"},
        "search": {"target": 30.0, "n_steps": 4, "samples_per_step": 1, "lower": 0.0, "upper": 48.0,
                   "prior_mean": 20.0, "prior_std": 12.0, "max_new_tokens": 32, "measure_achieved": False},
    },
    # The full-size embedded run: room to recover (128 new tokens per trial, the search at half length as in
    # the paper), 30 latents x 5 prompts. Wall time on 2 quiet CPU cores estimated from measured per-trial
    # rates in docs/experiments.md (about 45-50 min); not a demo.
    "embedded-full": {
        "name": "embedded-full", "model": "qwen2.5-coder-0.5b-instruct", "sae": None, "judge": "offline",
        "n_prompts_per_latent": 5, "temperature": 0.6, "max_new_tokens": 128, "batch_size": 30,
        "repetition_penalty": 1.1, "experiments": ["exp1", "exp8"],
        "selection": {"n_latents": 30, "candidate_factor": 8, "relevance_rule": "zero"},
        "search": {"target": 30.0, "n_steps": 8, "samples_per_step": 1, "lower": 0.0, "upper": 48.0,
                   "prior_mean": 20.0, "prior_std": 12.0, "max_new_tokens": 64, "measure_achieved": True},
    },
    "paper-llama-3.3-70b": _paper("meta-llama/Llama-3.3-70B-Instruct", 0, 100, 7, 5,
                                  search={"samples_per_step": 5}),
    "paper-llama-3.1-8b": _paper("meta-llama/Llama-3.1-8B-Instruct", 0, 50, 10, 10),
    "paper-gemma-2-2b": _paper("google/gemma-2-2b-it", 0, 300, 150, 75),
    "paper-gemma-2-9b": _paper("google/gemma-2-9b-it", 0, 560, 280, 280),
    "paper-gemma-2-27b": _paper("google/gemma-2-27b-it", 0, 5000, 1500, 1500),
}
"""Presets as overrides of :class:`ExperimentConfig` defaults. The paper presets use the code's layers,
SAEs and repetition penalties from the model registry (:mod:`esr_analysis.models`); override
``repetition_penalty=1.1`` for the paper's stated value, ``steer_layer=19`` for the 8B paper table."""


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``; the value is JSON when it parses (numbers, lists, null, true),
    else a plain string."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. search.target=50)")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def load_config(source: str | Path | dict[str, Any] | ExperimentConfig,
                overrides: list[str] | dict[str, Any] | None = None) -> ExperimentConfig:
    """A config from a preset name, a JSON file path, a dict or a config, with ``overrides`` applied
    (``["search.target=50", ...]`` or ``{"search.target": 50}``). Unknown presets, unknown keys and bad values
    raise ``ValueError`` naming the problem."""
    if isinstance(source, ExperimentConfig):
        data = source.model_dump()
    elif isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        s = str(source)
        if s in PRESETS:
            data = copy.deepcopy(PRESETS[s])
        elif s.endswith(".json") or Path(s).is_file():
            p = Path(s).expanduser()
            if not p.is_file():
                raise FileNotFoundError(f"config file not found: {p}")
            data = json.loads(p.read_text())
        else:
            raise ValueError(f"unknown preset {s!r}; presets: {', '.join(PRESETS)} (or give a config .json file)")
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    for key, value in items:
        _set_path(data, key, value)
    try:
        return ExperimentConfig.model_validate(data)
    except Exception as exc:  # pydantic ValidationError -> one readable ValueError
        raise ValueError(f"invalid experiment config: {exc}") from None
