"""The matched random-latent null of exp 10 and the statistics of the detector effect (``docs/method.md#detectors``).

**Matched sampler** (:func:`matched_random_sets`). A latent's *profile* is its firing density and its mean
activation where active over the assistant positions of the discovery pairs
(:class:`~esr_analysis.mechanisms.detectors.DiscoveryStats`), plus its decoder norm when decoder norms differ
between latents (relative spread > 1 %). Matching is on ``log10`` of each. Eligible latents fire at least once
(not dead), are not detectors and are not excluded. Set ``s`` is drawn with ``random.Random(derive_seed(seed,
"random-set", s))``: for each detector (in a seeded order) one eligible latent not yet in the set is drawn
uniformly among those whose every ``log10`` coordinate is within ``caliper`` of the detector's; when none is,
the caliper is doubled for that detector until one is (the widening is counted in the report).

**Statistics.** Every condition replays the same source trials, so comparisons are **paired**: a trial counts
only when both it and its baseline partner are valid (:mod:`esr_analysis.metrics.trials`).

* ``detector_percentile``: ``100 * (#{r < d} + #{r = d} / 2) / n_sets`` for the detector ablation's
  multi-attempt rate ``d`` and the random sets' rates ``r`` (low = detectors lower recovery more than random).
* ``difference_ci``: percentile bootstrap interval of ``rate(detector ablation) - rate(baseline)``, resampling
  the distractor latents (clusters) with replacement and recomputing both rates over the drawn latents' paired
  trials (:func:`esr_analysis.metrics.intervals.draw_ratio`). The same for the ESR rate and for
  ``rate(detectors) - rate(random sets pooled)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from esr_analysis.seeds import derive_seed


def latent_profile(stats: Any, sae: Any = None) -> dict[str, Any]:
    """``{"latents", "density", "mean_active", "decoder_norm"}`` (lists aligned with ``latents``) of a
    discovery's statistics; ``decoder_norm`` is ``None`` without ``sae`` or when the norms are all equal
    (relative standard deviation <= 1 %)."""
    norms = None
    if sae is not None:
        w = sae.W_dec.detach().float()[list(stats.latents)].norm(dim=-1)
        if float(w.std()) > 0.01 * float(w.mean()):
            norms = [float(x) for x in w.tolist()]
    return {"latents": list(stats.latents), "density": [float(x) for x in stats.density.tolist()],
            "mean_active": [float(x) for x in stats.mean_active.tolist()], "decoder_norm": norms}


def _coords(profile: dict[str, Any], j: int) -> tuple[float, ...]:
    keys = ["density", "mean_active"] + (["decoder_norm"] if profile.get("decoder_norm") else [])
    return tuple(math.log10(profile[k][j]) for k in keys)


def matched_random_sets(profile: dict[str, Any], detectors: Sequence[int], n_sets: int, seed: int, *,
                        caliper: float = 0.25, exclude: Sequence[int] = ()) -> tuple[list[list[int]], dict[str, Any]]:
    """``n_sets`` random latent sets matched to ``detectors`` (module docstring) and a report: per set the
    ``(detector, match)`` pairs, the largest ``|log10|`` gaps and the number of widened calipers."""
    if n_sets < 1:
        raise ValueError(f"n_sets must be >= 1, got {n_sets}")
    if caliper <= 0:
        raise ValueError(f"caliper must be > 0, got {caliper}")
    lats = [int(i) for i in profile["latents"]]
    pos = {lat: j for j, lat in enumerate(lats)}
    dets = list(dict.fromkeys(int(d) for d in detectors))
    if not dets:
        raise ValueError("no detectors to match")
    missing = [d for d in dets if d not in pos]
    if missing:
        raise ValueError(f"detectors {missing} have no profile (not among the discovery's candidate latents)")
    silent = [d for d in dets if profile["density"][pos[d]] <= 0 or profile["mean_active"][pos[d]] <= 0]
    if silent:
        raise ValueError(f"detectors {silent} never fire on the profile's positions: they cannot be matched on "
                         "density (profile them on text where they fire)")
    banned = set(dets) | {int(i) for i in exclude}
    eligible = [j for j, lat in enumerate(lats) if lat not in banned and profile["density"][j] > 0
                and profile["mean_active"][j] > 0 and (not profile.get("decoder_norm") or profile["decoder_norm"][j] > 0)]
    if len(eligible) < len(dets):
        raise ValueError(f"only {len(eligible)} eligible latents (alive, not detectors, not excluded) for a set of "
                         f"{len(dets)}")
    coords = {j: _coords(profile, j) for j in eligible}
    sets: list[list[int]] = []
    per_set: list[dict[str, Any]] = []
    for s in range(n_sets):
        rng = random.Random(derive_seed(seed, "random-set", s))
        order = list(dets)
        rng.shuffle(order)
        used: set[int] = set()
        pairs, widened, gaps = [], 0, []
        for d in order:
            cd = _coords(profile, pos[d])
            width = caliper
            while True:
                cands = [j for j in eligible if j not in used
                         and max(abs(a - b) for a, b in zip(coords[j], cd, strict=True)) <= width]
                if cands:
                    break
                width *= 2
                widened += 1
            j = rng.choice(cands)
            used.add(j)
            pairs.append((d, lats[j]))
            gaps.append([abs(a - b) for a, b in zip(coords[j], cd, strict=True)])
        sets.append(sorted(lats[j] for j in used))
        per_set.append({"pairs": pairs, "widened": widened,
                        "max_log10_gap": [max(g[i] for g in gaps) for i in range(len(gaps[0]))]})
    report = {"caliper_log10": caliper, "seed": seed, "n_sets": n_sets, "n_eligible": len(eligible),
              "matched_on": ["density", "mean_active"] + (["decoder_norm"] if profile.get("decoder_norm") else []),
              "sets": per_set}
    return sets, report


def percentile_of(value: float, null: Sequence[float]) -> float:
    """``100 * (#{x < value} + #{x = value} / 2) / n`` over the null values (``nan`` when there are none)."""
    xs = [float(x) for x in null if x == x]
    if not xs or value != value:
        return math.nan
    return 100.0 * (sum(x < value for x in xs) + 0.5 * sum(x == value for x in xs)) / len(xs)


def _valid(trial: Any) -> Any:
    """The trial's :class:`~esr_analysis.metrics.definitions.TrialScores` (cluster = its latent), ``None`` if
    it is not valid."""
    from esr_analysis.metrics.definitions import TrialScores
    from esr_analysis.metrics.trials import score_trial, trial_rows

    row = trial_rows([trial])[0]
    reason, scores = score_trial(row)
    if reason is not None or not isinstance(scores, list):
        return None
    return TrialScores.from_scores(scores, cluster=row.get("latent"))


def paired_arms(baseline: Sequence[Any], arms: Sequence[Sequence[Any]]) -> tuple[list[Any], list[list[tuple[Any, Any]]]]:
    """Per arm, the ``(baseline scores, arm scores)`` of every arm trial whose source trial is in ``baseline``
    and where both are valid; also the valid baseline scores. ``ValueError`` on an arm trial whose source is
    not in ``baseline`` (the arms must replay the baseline's trials)."""
    base = {t.trial_id: _valid(t) for t in baseline}
    out = []
    for arm in arms:
        rows = []
        for t in arm:
            src = (t.meta or {}).get("source_trial")
            if src not in base:
                raise ValueError(f"trial {t.trial_id} replays {src!r}, which is not among the baseline trials")
            b, a = base[src], _valid(t)
            if b is not None and a is not None:
                rows.append((b, a))
        out.append(rows)
    return [v for v in base.values() if v is not None], out


def _rate(rows: Sequence[Any], metric: str) -> float:
    from esr_analysis.metrics.definitions import METRICS

    m = METRICS[metric]
    return sum(m.value(t) for t in rows) / len(rows) if rows else math.nan


def paired_difference(pairs: Sequence[tuple[Any, Any]], metric: str, *, n_boot: int, seed: int,
                      other: Sequence[tuple[Any, Any]] | None = None, confidence: float = 0.95
                      ) -> tuple[float, list[float]]:
    """``(value, [lo, hi])`` of ``rate(arm) - rate(baseline)`` over paired ``(baseline, arm)`` scores, or of
    ``rate(arm) - rate(other arm)`` when ``other`` pairs are given (both arms then pair with the same baseline
    trials); latent-clustered percentile bootstrap (module docstring)."""
    import numpy as np

    from esr_analysis.metrics.definitions import METRICS
    from esr_analysis.metrics.intervals import cluster_sums, draw_ratio, percentile_interval

    m = METRICS[metric]
    first = [a for _, a in pairs]
    second = [a for _, a in other] if other is not None else [b for b, _ in pairs]
    value = _rate(first, metric) - _rate(second, metric)
    order = {c: i for i, c in enumerate(dict.fromkeys([t.cluster for t in first] + [t.cluster for t in second]))}
    if n_boot <= 0 or len(order) < 2 or not first or not second:
        return value, [math.nan, math.nan]
    arms = [cluster_sums([t.cluster for t in ts], np.array([m.value(t) for t in ts], dtype=float), order)
            for ts in (first, second)]
    r1, r2 = draw_ratio(np.random.default_rng(seed), n_boot, arms)
    lo, hi, _ = percentile_interval(r1 - r2, confidence)
    return value, [lo, hi]


def condition_metrics(trials: Sequence[Any], *, n_boot: int = 0, seed: int = 0) -> dict[str, Any]:
    """``M`` of a condition: ``{"n", "multi_attempt_rate", "multi_attempt_ci", "esr_rate", "esr_ci",
    "first_attempt_score"}`` over its valid trials (rates as fractions, Wilson 95 % intervals).

    ``trials`` are trial records (:class:`~esr_analysis.store.Trial`, dicts) or already scored
    :class:`~esr_analysis.metrics.definitions.TrialScores` (each one a valid trial); a mix raises ``TypeError``.
    (Scores read as trial records would all count as ungraded, giving ``n = 0``.)"""
    from esr_analysis.metrics.definitions import TrialScores
    from esr_analysis.metrics.summary import esr_rate, first_attempt_score, multi_attempt_rate
    from esr_analysis.metrics.trials import ValidTrials

    rows: Any = list(trials)
    scored = [isinstance(t, TrialScores) for t in rows]
    if any(scored):
        if not all(scored):
            raise TypeError("condition_metrics: pass trial records or TrialScores, not a mix")
        rows = ValidTrials(trials=tuple(rows))
    ma = multi_attempt_rate(rows, n_boot=n_boot, seed=seed)
    es = esr_rate(rows, n_boot=n_boot, seed=seed)
    fa = first_attempt_score(rows, n_boot=n_boot, seed=seed)
    return {"n": ma.n, "multi_attempt_rate": ma.value, "multi_attempt_ci": [ma.ci_low, ma.ci_high],
            "esr_rate": es.value, "esr_ci": [es.ci_low, es.ci_high], "first_attempt_score": fa.value}


def detector_summary(baseline: Sequence[Any], detector: Sequence[Any], random_sets: Sequence[Sequence[Any]], *,
                     rule: str, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The issue's summary: ``rule``, ``n_detectors``, ``baseline``/``detector_ablation`` metrics, the random
    sets' rates, ``detector_percentile`` and ``difference_ci`` (multi-attempt, detector - baseline), plus the
    same for ESR and against the pooled random sets. Baseline metrics are over the replayed source trials;
    ``random_metrics`` is ``M`` over the trials of every random set pooled (``None`` without random trials)."""
    if not detector:
        raise ValueError("the detector-ablation run holds no trials")
    n_det = len((detector[0].interventions and next((iv.get("latents") for iv in detector[0].interventions
                                                      if iv.get("kind") == "ablate_latents"), None)) or [])
    used = {(t.meta or {}).get("source_trial") for t in detector}
    base_used = [t for t in baseline if t.trial_id in used]
    _, (det_pairs, *rand_pairs) = paired_arms(base_used, [detector, *random_sets])
    pooled = [p for ps in rand_pairs for p in ps]
    pooled_trials = [t for arm in random_sets for t in arm]
    rand_ma = [_rate([a for _, a in ps], "multi_attempt_rate") for ps in rand_pairs]
    rand_esr = [_rate([a for _, a in ps], "esr_rate") for ps in rand_pairs]
    det = condition_metrics(detector)
    out: dict[str, Any] = {
        "rule": rule, "n_detectors": n_det, "baseline": condition_metrics(base_used), "detector_ablation": det,
        "random_sets": len(random_sets), "random_multi_attempt_rates": rand_ma,
        "detector_percentile": percentile_of(det["multi_attempt_rate"], rand_ma),
        "difference_ci": paired_difference(det_pairs, "multi_attempt_rate", n_boot=n_boot, seed=seed)[1],
        "difference": paired_difference(det_pairs, "multi_attempt_rate", n_boot=0, seed=seed)[0],
        "esr_difference_ci": paired_difference(det_pairs, "esr_rate", n_boot=n_boot, seed=seed)[1],
        "random_esr_rates": rand_esr, "esr_percentile": percentile_of(det["esr_rate"], rand_esr),
        "n_paired": len(det_pairs),
        # M of the random sets' trials pooled, defined like detector_ablation (every valid trial of the condition)
        "random_metrics": condition_metrics(pooled_trials) if pooled_trials else None,
    }
    if pooled:
        det_by_src = {id(b): a for b, a in det_pairs}
        both = [(b, a) for b, a in pooled if id(b) in det_by_src]
        # rate(detectors) - rate(random, pooled): every random trial against the detector trial of its source
        mirror = [(b, det_by_src[id(b)]) for b, _ in both]
        v, ci = paired_difference(mirror, "multi_attempt_rate", n_boot=n_boot, seed=seed, other=both)
        out["difference_vs_random"], out["difference_vs_random_ci"] = v, ci
    return out


def reading(summary: dict[str, Any]) -> str:
    """A plain statement of what the summary shows about the paper's claim (detector ablation lowers the
    multi-attempt rate, and more than matched random ablation): rule = the paired interval of ablation - baseline
    lies below 0 **and** the detector rate is at or below the 5th percentile of the random sets' rates."""
    lo, hi = summary.get("difference_ci") or [math.nan, math.nan]
    pct, n_sets = summary.get("detector_percentile", math.nan), summary.get("random_sets", 0)
    base = summary["baseline"]["multi_attempt_rate"]
    det = summary["detector_ablation"]["multi_attempt_rate"]
    head = f"multi-attempt {100 * base:.1f}% -> {100 * det:.1f}% under detector ablation"
    if base == 0:
        return head + "; the baseline has no multi-attempt trial, so an ablation cannot lower it: no test of the claim"
    if hi != hi:
        return head + "; no interval (too few latents): no test of the claim"
    lowers = hi < 0
    beats_null = n_sets > 0 and pct == pct and pct <= 5
    verdict = ("supports the paper: lower than baseline and than 95% of the matched random sets" if lowers and beats_null
               else "lower than baseline but not below the matched random sets: not specific to the detectors"
               if lowers else "no resolved drop against baseline (interval includes 0 or lies above it)")
    return f"{head}; paired 95% interval [{100 * lo:.1f}, {100 * hi:.1f}] points; percentile {pct:.0f} of " \
           f"{n_sets} random sets: {verdict}"
