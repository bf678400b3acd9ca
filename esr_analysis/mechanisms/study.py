"""The anatomy-of-a-recovery study end to end: annotate episodes, find backtracking latents, trace with the
steering on and off, align and test. Used by ``scripts/anatomy_study.py`` and notebook 08.

Steps of :func:`run_anatomy` (definitions in the modules named):

1. boundaries of every recovery (:mod:`.boundaries` offline annotator, or a
   :class:`~esr_analysis.mechanisms.annotator.ClaudeAnnotator`); only valid ones count;
2. token boundaries (:func:`~esr_analysis.mechanisms.boundaries.token_boundaries`) and backtracking latents:
   by label (:func:`~esr_analysis.mechanisms.traces.label_search`, when the SAE has labels) and by correlation
   with the correction region (:func:`~esr_analysis.mechanisms.traces.correction_correlation`, steering off).
   Latents found by correlation are **selected on one part of the episodes and tested on the rest**
   (:func:`selection_split`, ``corr_holdout`` of them held out, seeded): testing them on the episodes that
   chose them would be circular (they were picked for being high at the correction). Their region means,
   tests and aligned curves use only the held-out episodes; the label, detector, steered and user groups are
   fixed in advance and use every episode;
3. traces of recoveries and baseline for every group, steering ``off`` and ``on``
   (:func:`~esr_analysis.mechanisms.traces.trace_episodes`);
4. per condition: region means and tests (:func:`~esr_analysis.mechanisms.alignment.summarize_traces`) and the
   aligned mean ± SEM per group (:func:`~esr_analysis.mechanisms.alignment.align_at`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esr_analysis.mechanisms.boundaries import Boundaries, offline_boundaries
from esr_analysis.mechanisms.episodes import Episode

CONDITIONS = ("off", "on")


def read_latent_list(spec: str | None) -> list[int]:
    """Latents from ``"1,2,3"`` or a JSON file holding a list, or a dict with ``detectors`` /
    ``off_topic_detectors`` / ``latents`` (ints or ``{"latent": i}`` records); ``[]`` for ``None``/``""``."""
    if not spec:
        return []
    path = Path(spec)
    if path.is_file():
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            key = next((k for k in ("detectors", "off_topic_detectors", "latents") if k in data), None)
            if key is None:
                raise ValueError(f"{path}: no 'detectors', 'off_topic_detectors' or 'latents' key")
            data = data[key]
        return [int(x["latent"] if isinstance(x, dict) else x) for x in data]
    return [int(x) for x in spec.split(",") if x.strip()]


@dataclass
class AnatomyResult:
    """What :func:`run_anatomy` produced: the JSON-ready ``summary`` and the traces per condition."""

    summary: dict[str, Any]
    boundaries: list[Boundaries]
    recoveries: list[Episode]
    traces: dict[str, list[Any]] = field(default_factory=dict)
    baseline_traces: dict[str, list[Any]] = field(default_factory=dict)
    aligned: dict[str, dict[str, Any]] = field(default_factory=dict)


def annotate(recoveries: Sequence[Episode], annotator: str | Any = "offline") -> list[Boundaries]:
    """Boundaries of each recovery: ``"offline"`` (:func:`offline_boundaries` on the judge's attempts) or an
    object with ``annotate([(prompt, response), ...])`` (e.g. a ``ClaudeAnnotator``)."""
    if isinstance(annotator, str):
        if annotator != "offline":
            raise ValueError(f"unknown annotator {annotator!r}: use 'offline' or an annotator object")
        return [offline_boundaries(e.response, [t for t, _ in e.attempts] or None) for e in recoveries]
    return list(annotator.annotate([(e.prompt, e.response) for e in recoveries]))


def selection_split(episode_ids: Sequence[str], holdout: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(select, test)``: a seeded split of ``episode_ids`` with ``round(holdout * n)`` ids held out for testing
    (at least 2 and at most ``n - 2`` when ``0 < holdout < 1``). The split depends only on the set of ids and
    the seed (ids are sorted first), so a study re-run on the same episodes gets the same halves."""
    import random

    from esr_analysis.seeds import derive_seed

    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    ids = sorted(set(episode_ids))
    if len(ids) != len(episode_ids):
        raise ValueError("episode ids must be distinct")
    if holdout == 0.0:
        return ids, []
    if len(ids) < 4:
        raise ValueError(f"{len(ids)} episodes cannot be split into a selection and a test part (need >= 4)")
    n_test = min(max(2, round(holdout * len(ids))), len(ids) - 2)
    order = ids[:]
    random.Random(derive_seed(seed, "anatomy-selection-split")).shuffle(order)
    test = set(order[:n_test])
    return [i for i in ids if i not in test], [i for i in ids if i in test]


def run_anatomy(model: Any, sae: Any, recoveries: Sequence[Episode], baseline: Sequence[Episode], *, layer: int,
                annotator: str | Any = "offline", detectors: Sequence[int] = (), user_latents: Sequence[int] = (),
                labels: Any = None, n_label: int = 16, n_corr: int = 16, window: int = 150,
                conditions: Sequence[str] = CONDITIONS, batch_size: int = 4, remote: bool | str = False,
                corr_holdout: float = 0.5, seed: int = 0) -> AnatomyResult:
    """The study (module docstring). ``labels`` (a ``LatentLabels`` or mapping) enables the label search;
    ``corr_holdout`` is the share of episodes held out from the correlation search and used to test its
    latents (0: select and test on all, recorded as circular)."""
    from esr_analysis.mechanisms.alignment import align_at, aligned_summary, summarize_traces
    from esr_analysis.mechanisms.traces import (
        correction_correlation,
        episode_token_boundaries,
        label_search,
        steered_latents,
        trace_episodes,
    )

    bounds = annotate(recoveries, annotator)
    valid = [i for i, (e, b) in enumerate(zip(recoveries, bounds, strict=True)) if b.is_valid(e.response)]
    eps = [recoveries[i] for i in valid]
    bds = [bounds[i] for i in valid]
    steered = sorted({j for e in list(eps) + list(baseline) for j in steered_latents(e)})
    by_label = label_search(labels, top=n_label) if labels is not None and n_label > 0 else []
    groups: dict[str, list[int]] = {"detectors": [int(i) for i in detectors],
                                    "backtracking_label": [i for i, _, _ in by_label]}
    corr: list[tuple[int, float]] = []
    select_ids, test_ids = [e.episode_id for e in eps], [e.episode_id for e in eps]
    if eps and n_corr > 0:
        select_ids, test_ids = selection_split(select_ids, corr_holdout if len(eps) >= 4 else 0.0, seed)
        if not test_ids:
            test_ids = list(select_ids)
        chosen = set(select_ids)
        sel = [(e, b) for e, b in zip(eps, bds, strict=True) if e.episode_id in chosen]
        tbs = [episode_token_boundaries(model.tokenizer, e, b) for e, b in sel]
        corr = correction_correlation(model, sae, [e for e, _ in sel], tbs, layer=layer, top=n_corr,
                                      exclude=steered, batch_size=batch_size, remote=remote)
    groups["backtracking_corr"] = [i for i, _ in corr]
    tested = set(test_ids)
    groups["user"] = [int(i) for i in user_latents]
    groups = {k: v for k, v in groups.items() if v}
    names = ["steered", *groups]
    result = AnatomyResult(summary={}, boundaries=bounds, recoveries=list(recoveries))
    region_means: dict[str, Any] = {}
    tests: dict[str, Any] = {}
    for cond in conditions:
        if cond not in CONDITIONS:
            raise ValueError(f"unknown condition {cond!r}; use {CONDITIONS}")
        on = cond == "on"
        rec_tr = trace_episodes(model, sae, eps, layer=layer, groups=groups, steering=on, boundaries=bds,
                                batch_size=batch_size, remote=remote) if eps else []
        base_tr = trace_episodes(model, sae, baseline, layer=layer, groups=groups, steering=on,
                                 batch_size=batch_size, remote=remote) if baseline else []
        key = f"steering_{cond}"
        fixed = [g for g in names if g != "backtracking_corr"]
        region_means[key], tests[key] = summarize_traces(rec_tr, base_tr, fixed)
        held = [t for t in rec_tr if t.episode_id in tested]
        if "backtracking_corr" in names:
            corr_means, corr_tests = summarize_traces(held, base_tr, ["backtracking_corr"])
            region_means[key]["per_latent"].update(corr_means.pop("per_latent"))
            region_means[key].update(corr_means)
            tests[key].update(corr_tests)
        result.traces[key], result.baseline_traces[key] = rec_tr, base_tr
        traces_of = {g: held if g == "backtracking_corr" else rec_tr for g in names}
        result.aligned[key] = {g: aligned_summary(align_at([t.group(g) for t in traces_of[g]],
                                                           [t.bounds for t in traces_of[g]], window))
                               for g in names} if rec_tr else {}
    result.summary = {
        "n_episodes": len(eps), "n_baseline": len(baseline), "n_recoveries_found": len(recoveries),
        "n_unclear": len(recoveries) - len(eps), "region_means": region_means, "tests": tests,
        "groups": {"steered": steered, **groups},
        "backtracking_label": [{"latent": i, "score": s, "label": lab} for i, s, lab in by_label],
        "backtracking_corr": [{"latent": i, "r": r} for i, r in corr],
        "backtracking_corr_selection": {
            "holdout": corr_holdout, "seed": seed, "n_select": len(select_ids), "n_test": len(test_ids),
            "select_episode_ids": select_ids, "test_episode_ids": test_ids,
            "circular": bool(corr) and set(select_ids) & set(test_ids) != set(),
            "note": "latents chosen by correlation on the select episodes; their region means, tests and "
                    "aligned curves use only the test episodes"},
        "layer": layer, "window": window,
        "annotator": annotator if isinstance(annotator, str) else getattr(annotator, "source", type(annotator).__name__),
        "episodes": [{"episode_id": e.episode_id, "boundaries": b.to_dict(), "valid": b.is_valid(e.response)}
                     for e, b in zip(recoveries, bounds, strict=True)],
    }
    return result
