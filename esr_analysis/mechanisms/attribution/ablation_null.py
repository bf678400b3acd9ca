"""Is the detectors' effect on the restart specific? The restart metric with the detectors ablated against the
same metric with matched random latent sets ablated: the control of the ``detectors_ablated`` counterfactual.

Definitions
-----------
* For an episode ``e`` (teacher-forced up to its correction token, steering on as stored) and a latent set
  ``S``: ``Δ_S(e) = m(e; steering, S ablated) - m(e; steering)``, where ``m`` is the restart logit difference
  (:func:`~esr_analysis.mechanisms.attribution.inputs.restart_metric`) with its comparison token fixed from the
  un-ablated pass, and ``S ablated`` clamps the latents of ``S`` to 0 at the SAE layer over every position
  (error term kept), as the ``detectors_ablated`` counterfactual does.
* :func:`summarize_effects`: the detectors' mean ``Δ`` with a 95 % percentile bootstrap interval over
  episodes (:func:`~esr_analysis.mechanisms.attribution.study.mean_interval`, one cluster per episode); each random set's mean ``Δ``; the detectors' **percentile** among the random sets
  (:func:`~esr_analysis.mechanisms.null.percentile_of`; a low percentile means the detectors lower the restart
  more than most random sets); and the **paired difference** ``Δ_det(e) - mean_r Δ_r(e)`` with its bootstrap
  interval over episodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from esr_analysis.errors import ConfigError
from esr_analysis.mechanisms.attribution.inputs import RecoveryPoint, model_inputs, prepare, restart_metric


def metric_value(lm: Any, prep: Any, interventions: list[Any], metric: dict[str, Any], sae: Any = None,
                 remote: bool | str = False) -> tuple[float, int]:
    """``(metric, other token)`` of one forward pass of ``prep``'s tokens with ``interventions``."""
    from esr_analysis.tracing.attribution import site_pass

    ids, mask, plans, masks = model_inputs(lm, prep.ids, prep.start, interventions, sae, remote=remote)
    out = site_pass(lm, ids, mask, plans, masks, reads={}, metric=metric, remote=remote)
    other = out["other"]
    return float(out["metric"][0]), int(other[0]) if other is not None else -1


def ablation_effects(lm: Any, episodes: Sequence[RecoveryPoint], sets: Mapping[str, Sequence[int]], *, sae: Any,
                     sae_layer: int, chat: bool = True, remote: bool | str = False, progress: bool = True
                     ) -> list[dict[str, Any]]:
    """Per episode ``{"id", "clean", "other", "delta": {set name: Δ}}`` (module docstring). Every set is checked
    against the SAE before any compute."""
    from tqdm.auto import tqdm

    from esr_analysis.sae.sliced import check_latents
    from esr_analysis.steering.interventions import AblateLatents

    if not sets:
        raise ConfigError("no latent set to ablate")
    for name, latents in sets.items():
        if not latents:
            raise ConfigError(f"latent set {name!r} is empty")
        check_latents(sae, [int(i) for i in latents])
    rows = []
    for ep in tqdm(episodes, desc="ablation effects", unit="episode", disable=not progress):
        prep = prepare(lm, ep, chat=chat)
        ivs = ep.parsed_interventions()
        clean, other = metric_value(lm, prep, ivs, restart_metric(prep, lm.tokenizer), sae, remote)
        fixed = restart_metric(prep, lm.tokenizer, other=other)
        delta = {}
        for name, latents in sets.items():
            abl = AblateLatents(latents=tuple(int(i) for i in latents), layer=int(sae_layer), scope="all")
            delta[name] = metric_value(lm, prep, [*ivs, abl], fixed, sae, remote)[0] - clean
        rows.append({"id": ep.id, "clean": clean, "other": other, "delta": delta})
    return rows


def summarize_effects(rows: Sequence[dict[str, Any]], detector_key: str = "detectors", *, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """The summary of :func:`ablation_effects` rows (module docstring); every other set is a random set."""
    import numpy as np

    from esr_analysis.mechanisms.attribution.study import mean_interval
    from esr_analysis.mechanisms.null import percentile_of

    if not rows:
        raise ValueError("no episode rows to summarize")
    names = list(rows[0]["delta"])
    if detector_key not in names:
        raise ValueError(f"no {detector_key!r} set in the rows (sets: {names})")
    if any(list(r["delta"]) != names for r in rows):
        raise ValueError("every row must hold the same sets in the same order")
    random_names = [n for n in names if n != detector_key]
    det = np.array([r["delta"][detector_key] for r in rows], dtype=np.float64)
    rand = np.array([[r["delta"][n] for n in random_names] for r in rows], dtype=np.float64).reshape(len(rows), -1)
    ids = [str(r["id"]) for r in rows]
    random_means = [float(x) for x in rand.mean(axis=0)] if random_names else []
    out: dict[str, Any] = {
        "n_episodes": len(rows), "n_random_sets": len(random_names),
        "detector_effect": mean_interval(list(det), ids, seed, n_boot),
        "detector_share_lowered": float((det < 0).mean()),
        "random_set_effects": random_means,
        "detector_percentile": percentile_of(float(det.mean()), random_means),
    }
    if random_names:
        out["difference_vs_random"] = mean_interval(list(det - rand.mean(axis=1)), ids, seed, n_boot)
    return out
