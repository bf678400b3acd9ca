"""The detector study's steps on files, as the ``esr detectors`` commands and ``scripts/detectors_study.py`` run them.

* :func:`discover_to_file`: discovery on held-out prompts → the detector file (``data/detectors/<model>.json``)
  and its latent profile (``<model>.profile.json.gz``: density and mean activation of every candidate latent,
  what the matched null needs).
* :func:`ablate_step`: exp 3 into ``<run>/exp3`` (paired with ``<run>/exp1``).
* :func:`null_step`: exp 10 into ``<run>/exp10/set-NN`` (matched random sets, paired the same way).
* :func:`summarize_step`: the summary (``data/results/detectors_<model>.json``).

``<run>`` is a pipeline run directory with an exp 1 run; its ``config.json`` gives the session (model, SAE,
judge, layers), so a replay uses exactly the settings of the trials it pairs with. The ablation and the null use
the same seeded subset of exp 1 trials (``n_trials``, ``subset_seed``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from esr_analysis.files import atomic_write_bytes, atomic_write_json

SUBSET_RULE = ("random.Random(derive_seed(seed, 'detector-subset')).sample of n of the run's exp 1 steered trials "
               "sorted by trial id (all of them when n is None or not smaller); the same subset for the detector "
               "ablation and every random set")


def profile_path(detector_file: str | Path) -> Path:
    """Where the latent profile of a detector file lives: ``<stem>.profile.json.gz`` next to it."""
    p = Path(detector_file)
    return p.with_name(p.stem + ".profile.json.gz")


def read_profile(detector_file: str | Path) -> dict[str, Any]:
    """The latent profile written next to ``detector_file`` (``FileNotFoundError`` with what to run if absent)."""
    p = profile_path(detector_file)
    if not p.is_file():
        raise FileNotFoundError(f"no latent profile {p}: the matched null needs one; make it with "
                                "`esr detectors discover` (it writes both files)")
    return json.loads(gzip.decompress(p.read_bytes()).decode("utf-8"))


def discover_to_file(model: Any, sae: Any, out: str | Path, *, model_name: str, layer: int,
                     prompts: str = "otd_discovery", n_prompts: int | None = None, max_new_tokens: int = 128,
                     temperature: float = 0.6, rule: str = "zero_on_topic", top_k: int = 26,
                     min_off_fraction: float = 0.8, n_derangements: int = 3, seed: int = 0, batch_size: int = 8,
                     chunk: int = 2048, latents_per_pass: int | None = None, remote: bool | str = False,
                     fallback_rule: str | None = None, command: str | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Run :func:`~esr_analysis.mechanisms.detectors.discover` and write the detector file and its profile.

    With ``fallback_rule``, a ``rule`` that selects nothing is replaced by it (recorded as ``rule_fallback_from``).
    """
    from esr_analysis.experiments.prompts import load_prompts, resolve_prompt_path
    from esr_analysis.mechanisms.detector_files import detector_record
    from esr_analysis.mechanisms.detectors import RULES, discover
    from esr_analysis.mechanisms.null import latent_profile
    from esr_analysis.steering.sampling import SamplingSettings

    for r in (rule, fallback_rule or rule):
        if r not in RULES:
            raise ValueError(f"unknown rule {r!r}; choose one of {', '.join(RULES)}")
    plist = load_prompts(prompts)[:n_prompts] if n_prompts else load_prompts(prompts)
    settings = SamplingSettings(temperature=temperature, max_new_tokens=max_new_tokens)
    d = discover(model, sae, plist, layer=layer, settings=settings, seed=seed, n_derangements=n_derangements,
                 batch_size=batch_size, chunk=chunk, latents_per_pass=latents_per_pass, remote=remote,
                 progress=progress)
    label = None
    source = str(getattr(sae, "esr_source", "") or "")
    if source and not source.startswith("random:"):
        try:
            from esr_analysis.sae.labels import labels_for

            labels = labels_for(sae)
            label = lambda i: labels.label(i) or f"latent {i}"  # noqa: E731
        except (OSError, ValueError, ImportError):
            pass
    src = resolve_prompt_path(prompts)
    record = detector_record(d, rule, model_name=model_name, sae=sae, label=label, top_k=top_k,
                             min_off_fraction=min_off_fraction, command=command,
                             prompts_file=src.name if src.is_file() else str(prompts))
    if not record["off_topic_detectors"] and fallback_rule and fallback_rule != rule:
        record = detector_record(d, fallback_rule, model_name=model_name, sae=sae, label=label, top_k=top_k,
                                 min_off_fraction=min_off_fraction, command=command, prompts_file=record["prompts_file"])
        record["rule_fallback_from"] = rule
    out = Path(out)
    record["profile_file"] = profile_path(out).name
    atomic_write_json(out, record, indent=1)
    prof = latent_profile(d.stats, sae)
    atomic_write_bytes(profile_path(out), gzip.compress(json.dumps(prof).encode("utf-8"), mtime=0))
    return record


def session_for_run(run_dir: str | Path, *, progress: bool = True) -> Any:
    """The session of a pipeline run directory (its ``config.json``), with the default caches."""
    from esr_analysis.experiments.config import load_config
    from esr_analysis.experiments.session import open_session

    p = Path(run_dir) / "config.json"
    if not p.is_file():
        raise FileNotFoundError(f"{run_dir} is not a pipeline run directory (no config.json)")
    if not (Path(run_dir) / "exp1" / "trials.jsonl").is_file():
        raise FileNotFoundError(f"{run_dir} has no exp 1 run to pair with (run the pipeline with exp1 first)")
    return open_session(load_config(json.loads(p.read_text())), progress=progress)


def _pool_and_subset(run_dir: str | Path, n_trials: int | None, subset_seed: int) -> tuple[list[Any], list[Any]]:
    """The exp 1 trials the subset is drawn from (the pool) and the subset itself."""
    from esr_analysis.mechanisms.ablation import baseline_subset, source_trials

    pool = source_trials(Path(run_dir) / "exp1")
    return pool, baseline_subset(pool, n_trials, subset_seed)


def _subset(run_dir: str | Path, n_trials: int | None, subset_seed: int) -> list[Any]:
    return _pool_and_subset(run_dir, n_trials, subset_seed)[1]


def subset_record(subset: dict[str, Any] | None, *, pool_size: int | None = None) -> dict[str, Any] | None:
    """A subset record (``subset`` of ``sampler.json`` and of a summary) in the current form: ``n`` and ``seed``
    as asked, ``n_subset_trials`` = trials replayed per ablated set, ``n_source_trials`` = size of the pool of
    exp 1 trials they were drawn from, ``drawn`` = the rule.

    Records written before ``n_subset_trials`` existed stored the **subset** size as ``n_source_trials``; it is
    moved to ``n_subset_trials`` and ``n_source_trials`` becomes ``pool_size`` (``None`` when unknown, the pool
    size not having been recorded). ``None`` stays ``None``; the input is not modified."""
    if subset is None:
        return None
    out = dict(subset)
    if "n_subset_trials" not in out and "n_source_trials" in out:
        out["n_subset_trials"] = out["n_source_trials"]
        out["n_source_trials"] = pool_size
    elif out.get("n_source_trials") is None and pool_size is not None:
        out["n_source_trials"] = pool_size
    return out


RESEARCHED_DIR = "exp3_researched"
"""Where the detector ablation at thresholds re-searched under ablation goes (beside ``exp3``)."""


def ablate_step(session: Any, run_dir: str | Path, detector_file: str | Path, *, n_trials: int | None = None,
                subset_seed: int = 0, research_thresholds: bool = False) -> Path:
    """Exp 3: the detectors of ``detector_file`` ablated on the exp 1 subset, into ``<run_dir>/exp3``.

    ``research_thresholds``: first search every replayed latent's threshold again with the detectors ablated
    (the session's search settings; cached like any search), then replay at those strengths into
    ``<run_dir>/exp3_researched``; ``thresholds_under_ablation.json`` there records old and new thresholds."""
    from esr_analysis.mechanisms.ablation import run_ablation
    from esr_analysis.mechanisms.detector_files import read_detector_file

    det = read_detector_file(detector_file)
    trials = _subset(run_dir, n_trials, subset_seed)
    extra = {"rule": det.rule, "subset": {"n": n_trials, "seed": subset_seed}}
    if not research_thresholds:
        return run_ablation(session, Path(run_dir) / "exp3", trials, det.latents, extra=extra)
    from esr_analysis.experiments.calibration import ThresholdCache, calibrate
    from esr_analysis.mechanisms.ablation import check_replay

    check_replay(session, trials, det.latents)
    latents = sorted({int(t.latent) for t in trials})
    gen_cache = getattr(session, "gen_cache", None)  # thresholds live beside the session's generation cache
    cache = ThresholdCache(gen_cache.directory.parent / "thresholds") if gen_cache is not None else None
    found = calibrate(session, latents, cache=cache, ablate=det.latents)
    boosts = {lat: float(found[lat].threshold) for lat in latents}
    source = {int(t.latent): float(t.boost) for t in trials}
    out = Path(run_dir) / RESEARCHED_DIR
    path = run_ablation(session, out, trials, det.latents, extra={**extra, "thresholds": "re-searched under ablation"},
                        boosts=boosts)
    atomic_write_json(out / "thresholds_under_ablation.json",
                      {"detectors": list(det.latents),
                       "latents": {str(lat): {"source": source[lat], "under_ablation": boosts[lat],
                                              "fluent_window": found[lat].fluent_window} for lat in latents}})
    return path


def null_step(session: Any, run_dir: str | Path, detector_file: str | Path, *, n_sets: int = 20, seed: int = 0,
              caliper: float = 0.25, n_trials: int | None = None, subset_seed: int = 0) -> dict[str, Any]:
    """Exp 10: ``n_sets`` matched random sets (:func:`~esr_analysis.mechanisms.null.matched_random_sets`) ablated
    on the same subset, into ``<run_dir>/exp10/set-NN``; the sampler's report is written to
    ``<run_dir>/exp10/sampler.json`` and returned. Its ``subset`` records ``n_subset_trials`` (trials replayed
    per set) and ``n_source_trials`` (the exp 1 pool they were drawn from), see :func:`subset_record`."""
    from esr_analysis.mechanisms.ablation import run_random_sets
    from esr_analysis.mechanisms.detector_files import read_detector_file
    from esr_analysis.mechanisms.null import matched_random_sets

    det = read_detector_file(detector_file)
    profile = read_profile(detector_file)
    sets, report = matched_random_sets(profile, det.latents, n_sets, seed, caliper=caliper)
    pool, trials = _pool_and_subset(run_dir, n_trials, subset_seed)
    root = Path(run_dir) / "exp10"
    sampler = {"seed": seed, "caliper_log10": caliper, "detectors": list(det.latents)}
    run_random_sets(session, root, trials, sets, sampler=sampler)
    report = {**report, "random_sets": sets,
              "subset": {"n": n_trials, "seed": subset_seed, "n_subset_trials": len(trials),
                         "n_source_trials": len(pool), "drawn": SUBSET_RULE}}
    atomic_write_json(root / "sampler.json", report)
    return report


def summarize_step(run_dir: str | Path, detector_file: str | Path, *, n_boot: int = 2000, seed: int = 0,
                   command: str | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """The summary of exp 3 and exp 10 against their exp 1 partners (:func:`~esr_analysis.mechanisms.null.
    detector_summary`), with the subset, the sampler and ``command``; written to ``out`` when given."""
    from esr_analysis.mechanisms.ablation import load_paired, source_trials
    from esr_analysis.mechanisms.detector_files import read_detector_file
    from esr_analysis.mechanisms.null import detector_summary, reading

    rd = Path(run_dir)
    det = read_detector_file(detector_file)
    if not (rd / "exp3" / "trials.jsonl").is_file():
        raise FileNotFoundError(f"{rd}/exp3 holds no detector-ablation run: run `esr detectors ablate` first")
    sets = sorted(p for p in (rd / "exp10").glob("set-*") if (p / "trials.jsonl").is_file())
    pool = source_trials(rd / "exp1")
    summary = detector_summary(pool, load_paired(rd / "exp3"), [load_paired(p) for p in sets],
                               rule=det.rule or "unknown", n_boot=n_boot, seed=seed)
    sampler_file = rd / "exp10" / "sampler.json"
    sampler = json.loads(sampler_file.read_text()) if sampler_file.is_file() else None
    subset = subset_record(sampler.get("subset"), pool_size=len(pool)) if sampler else None
    summary.update({
        "detectors": list(det.latents), "labels": {str(k): v for k, v in det.labels.items()},
        "subset": subset,
        "sampler": ({**{k: v for k, v in sampler.items() if k != "sets"}, **({"subset": subset} if subset else {})}
                    if sampler else None),
        "n_boot": n_boot, "bootstrap_seed": seed, "run": rd.name, "command": command,
    })
    summary["reading"] = reading(summary)
    researched = rd / RESEARCHED_DIR
    if (researched / "trials.jsonl").is_file():
        summary["researched_thresholds"] = researched_summary(pool, load_paired(researched), n_boot=n_boot,
                                                              seed=seed, thresholds_file=researched
                                                              / "thresholds_under_ablation.json")
    if out is not None:
        atomic_write_json(out, summary, indent=1)
    return summary


def researched_summary(pool: Any, researched: Any, *, n_boot: int, seed: int, thresholds_file: Path
                       ) -> dict[str, Any]:
    """The detector ablation at re-searched thresholds against its source trials: ``M`` of both, the paired
    multi-attempt and ESR differences with their bootstrap intervals (clustered by latent), and the thresholds.
    The random null stays at the source thresholds, so it is not compared here."""
    from esr_analysis.mechanisms.null import condition_metrics, paired_arms, paired_difference

    used = {(t.meta or {}).get("source_trial") for t in researched}
    base = [t for t in pool if t.trial_id in used]
    _, (pairs,) = paired_arms(base, [researched])
    ma, ma_ci = paired_difference(pairs, "multi_attempt_rate", n_boot=n_boot, seed=seed)
    es, es_ci = paired_difference(pairs, "esr_rate", n_boot=n_boot, seed=seed)
    return {"baseline": condition_metrics(base), "detector_ablation": condition_metrics(researched),
            "difference": ma, "difference_ci": ma_ci, "esr_difference": es, "esr_difference_ci": es_ci,
            "thresholds": json.loads(thresholds_file.read_text()) if thresholds_file.is_file() else None,
            "note": "detectors ablated at thresholds searched again under ablation; the random null stays at the "
                    "source thresholds and is not compared"}
