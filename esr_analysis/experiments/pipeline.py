"""The whole pipeline of a config: select latents, calibrate thresholds, run the chosen experiments.

Run directory layout (``<output_dir>/<name>`` unless given)::

    config.json        the ExperimentConfig (resume reads it)
    identity.json      the model and the SAE (source + content fingerprint) the run was made with
    selection.json     the selected latents and the removal counts of every filter
    thresholds.json    per latent: threshold, achieved score, whole search history (with degenerate flags)
    calibration.json   latents dropped after calibration and why (no fluent off-topic window), counted
    samples.md         a few responses per condition at the threshold, with their attempts and scores
    exp1/ exp8/ ...    one store run each (manifest.json + trials.jsonl)
    exp7_agreement.json  cross-judge agreement (when exp7 runs)

A run directory belongs to one (config, model, SAE): a run whose config or identity differs never writes
into it. Given ``run_dir`` explicitly, such a conflict is an error before anything is written; with the
default directory, the next free ``<name>-2``, ``<name>-3``, ... is used instead (and said so).

Every stage is resumable: selection and thresholds are reused from the run directory (and thresholds from
the keyed threshold cache), generations and grades from their content caches, and trials already in a
store run are skipped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esr_analysis.errors import ConfigError
from esr_analysis.experiments.config import ExperimentConfig, load_config
from esr_analysis.files import atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """Where a pipeline run lives and what it did (timings in seconds, cache counters)."""

    run_dir: Path
    latents: list[int]
    thresholds: dict[int, float]
    experiments: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


def _write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, indent=2, default=str)


def default_run_dir(config: ExperimentConfig) -> Path:
    return Path(config.output_dir) / config.name


def run_identity(session: Any) -> dict[str, Any]:
    """What a run's results depend on beyond its config: the model and the SAE's source + fingerprint."""
    return json.loads(json.dumps({"model": session.model_id, "sae": session.sae_identity}, default=str))


def _config_conflict(rd: Path, cfg_json: dict[str, Any]) -> bool:
    p = rd / "config.json"
    return p.is_file() and json.loads(p.read_text()) != cfg_json


def _identity_conflict(rd: Path, identity: dict[str, Any]) -> str | None:
    """``None`` when ``rd`` is new or was made with ``identity``; else what differs (for the message)."""
    if not (rd / "config.json").is_file():
        return None
    p = rd / "identity.json"
    if not p.is_file():
        return "model/SAE (it predates identity.json, so they cannot be checked)"
    old = json.loads(p.read_text())
    diff = [k for k in identity if old.get(k) != identity[k]]
    return " and ".join("SAE" if k == "sae" else k for k in diff) or None


def free_run_dir(base: Path, cfg_json: dict[str, Any], identity: dict[str, Any]) -> Path:
    """``base`` if it is new or holds this very run (resume), else the first such ``base-2``, ``base-3``, ..."""
    k = 1
    while True:
        rd = base if k == 1 else base.with_name(f"{base.name}-{k}")
        if not _config_conflict(rd, cfg_json) and not _identity_conflict(rd, identity):
            if k > 1:
                log.warning("%s holds a run with a different config, model or SAE; this run goes to %s", base, rd)
            return rd
        k += 1


def run_pipeline(config: ExperimentConfig | str | dict[str, Any], *, overrides: list[str] | None = None,
                 run_dir: str | Path | None = None, session: Any = None, cache_dir: str | Path | None = None,
                 progress: bool = True) -> PipelineResult:
    """Run (or resume) ``config`` end to end; see the module docstring. Bad configs fail before any compute."""
    from esr_analysis.experiments.calibration import ThresholdCache, calibrate
    from esr_analysis.experiments.selection import claude_concreteness_rater, select_latents
    from esr_analysis.experiments.session import open_session

    cfg = load_config(config, overrides) if not isinstance(config, ExperimentConfig) or overrides else config
    cfg_json = json.loads(cfg.model_dump_json())
    if run_dir is not None:
        rd = Path(run_dir)
        if _config_conflict(rd, cfg_json):
            raise ConfigError(f"{rd} holds a run with a different config; resume it with `esr resume {rd}`, or choose "
                              "another run directory (--run-dir)")
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    if session is None:
        session = open_session(cfg, cache_dir=cache_dir, progress=progress)
    timings["load"] = time.monotonic() - t0
    identity = run_identity(session)
    if run_dir is None:
        rd = free_run_dir(default_run_dir(cfg), cfg_json, identity)
    else:
        diff = _identity_conflict(rd, identity)
        if diff:
            raise ConfigError(f"{rd} holds a run made with a different {diff}; choose another run directory "
                              "(--run-dir) so its results stay as they are")
    rd.mkdir(parents=True, exist_ok=True)
    _write_json(rd / "config.json", cfg_json)
    _write_json(rd / "identity.json", identity)

    t = time.monotonic()
    sel_path = rd / "selection.json"
    if sel_path.is_file():
        selection = json.loads(sel_path.read_text())
    else:
        sc = cfg.selection
        rater = claude_concreteness_rater(sc.concreteness_judge) if sc.concreteness_judge else None
        rep = select_latents(session.model, session.sae, session.prompts, n_latents=sc.n_latents,
                             layer=session.read_layer, candidate_factor=sc.candidate_factor, latents=sc.latents,
                             relevance_rule=sc.relevance_rule, top_k=sc.top_k, exclude_dead=sc.exclude_dead,
                             label=session.label, latent_info=session.latent_info, concreteness_rater=rater,
                             min_concreteness=sc.min_concreteness, seed=sc.seed, batch_size=cfg.batch_size,
                             remote=cfg.remote)
        selection = {"latents": rep.latents, "n_candidates": rep.n_candidates, "removed": rep.removed,
                     "notes": rep.notes, "labels": {str(i): session.label(i) for i in rep.latents}}
        log.info(rep.summary())
        if not rep.latents:
            raise ConfigError(f"no latent survived selection ({rep.summary()}); draw more candidates "
                              "(--set selection.candidate_factor=...) or relax the relevance rule "
                              "(--set selection.relevance_rule=topk|none)")
        _write_json(sel_path, selection)
    latents = [int(i) for i in selection["latents"]]
    timings["selection"] = time.monotonic() - t

    t = time.monotonic()
    from esr_analysis.paths import cache_dir as default_cache_dir

    tcache = ThresholdCache(Path(cache_dir or default_cache_dir()) / "thresholds") if session.gen_cache else None
    calibrated = calibrate(session, latents, cache=tcache)
    _write_json(rd / "thresholds.json", {str(k): r.as_dict() for k, r in calibrated.items()})
    dropped = {str(lat): "no_fluent_offtopic_window" for lat, r in calibrated.items()
               if cfg.search.require_fluent_window and not r.fluent_window}
    _write_json(rd / "calibration.json", {"dropped": dropped, "removed": {"no_fluent_offtopic_window": len(dropped)},
                                          "kept": [lat for lat in latents if str(lat) not in dropped]})
    if dropped:
        log.warning("%d of %d latents have no fluent off-topic window and are dropped: %s", len(dropped),
                    len(latents), ", ".join(dropped))
    latents = [lat for lat in latents if str(lat) not in dropped]
    if not latents:
        raise ConfigError("no calibrated latent has a fluent off-topic window (see thresholds.json histories); "
                          "lower search.upper, draw more latents, or --set search.require_fluent_window=false")
    thresholds = {lat: calibrated[lat].threshold for lat in latents}
    timings["calibration"] = time.monotonic() - t

    result = PipelineResult(run_dir=rd, latents=latents, thresholds=thresholds)
    for exp in cfg.experiments:
        t = time.monotonic()
        result.experiments[exp] = run_experiment(session, exp, rd, thresholds)
        timings[exp] = time.monotonic() - t
    from esr_analysis.experiments.samples import write_samples

    write_samples(rd)
    timings["total"] = time.monotonic() - t0
    result.timings = timings
    result.stats = dict(session.stats)
    _write_json(rd / "timings.json", {"timings": timings, "stats": result.stats})
    return result


def run_experiment(session: Any, experiment: str, run_dir: Path, thresholds: dict[int, float]) -> Path:
    """Run one experiment (``exp1``/``exp8``/``exp2``/``exp5``/``exp7``) of a pipeline run."""
    from esr_analysis.experiments import boost, crossjudge, esr, metaprompt

    d = run_dir / experiment
    if experiment == "exp1":
        return esr.run_exp1(session, d, thresholds)
    if experiment == "exp8":
        return esr.run_exp8(session, d, list(thresholds))
    if experiment == "exp2":
        return boost.run_exp2(session, d, thresholds)
    if experiment == "exp5":
        return metaprompt.run_exp5(session, d, thresholds)
    if experiment == "exp7":
        src = run_dir / "exp1"
        if not (src / "trials.jsonl").is_file():
            esr.run_exp1(session, src, thresholds)
        return crossjudge.run_exp7(session, d, src)
    raise ValueError(f"unknown experiment {experiment!r}")


def resume_pipeline(run_dir: str | Path, **kwargs: Any) -> PipelineResult:
    """Continue the run in ``run_dir`` with its stored config."""
    rd = Path(run_dir)
    p = rd / "config.json"
    if not p.is_file():
        raise FileNotFoundError(f"{rd} is not a pipeline run directory (no config.json)")
    cfg = load_config(json.loads(p.read_text()))
    return run_pipeline(cfg, run_dir=rd, **kwargs)
