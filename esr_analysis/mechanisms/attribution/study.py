"""Attribution over episodes: one plain-data record per episode and counterfactual, and their aggregate.

Per episode and counterfactual (:func:`study_episode`): AtP of every site (3 passes) and DLA; the **components**
(heads, MLPs, and at the read layer latents and the SAE error node; block outputs are residual-stream states, not
components, and are reported per layer only) are ranked by ``|AtP|``; the top ``k`` are activation-patched one
by one (the causal check) and ``atp_vs_patching_spearman`` is the Spearman correlation of AtP and patching
effects over them; the top-10 heads by ``|AtP|`` are patched jointly, and so are 10 heads drawn uniformly
(seeded by :func:`esr_analysis.seeds.derive_seed` of the episode id, the counterfactual and ``seed``).

Aggregate (:func:`aggregate`): per-site means of AtP over episodes with percentile bootstrap intervals over
episodes (:func:`esr_analysis.metrics.intervals.cluster_bootstrap_interval`, one cluster per episode), the
top components (labelled latents), the mean Spearman, and the top-10 vs random-10 joint patch effects as
``[mean, lo, hi]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from esr_analysis.errors import ConfigError
from esr_analysis.mechanisms.attribution.inputs import (
    RecoveryPoint,
    counterfactual,
    detector_metric,
    prepare,
    restart_metric,
)
from esr_analysis.mechanisms.attribution.methods import (
    SaeNode,
    activation_patching,
    attribution_patching,
    head_name,
    integrated_gradients,
    parse_site,
)

STUDY_VERSION = "attribution-v1"


def is_component(name: str) -> bool:
    """Heads, MLPs, latents and the SAE error node (not block outputs)."""
    return parse_site(name)[0] != "block_out"


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (``nan`` with fewer than 3 pairs or a constant side)."""
    if len(a) < 3:
        return math.nan
    import warnings

    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant side: nan, handled below
        rho = spearmanr(a, b).statistic
    return float(rho) if rho == rho else math.nan


def study_episode(lm: Any, episode: RecoveryPoint, *, sae: Any = None, read_layer: int | None = None,
                  counterfactuals: Sequence[str] = ("steering_off",), metric: str = "restart", top_k: int = 30,
                  n_heads_check: int = 10, ig_steps: int = 0, chat: bool = True, seed: int = 0,
                  batch_size: int = 16, remote: bool | str = False) -> dict[str, Any]:
    """Everything measured on one episode, as plain data (see the module docstring). ``metric``: ``"restart"``
    (restart logit difference) or ``"detectors"`` (detector pre-activations before the correction)."""
    import numpy as np

    from esr_analysis.seeds import derive_seed
    from esr_analysis.tracing.sites import find_sites

    sites = find_sites(lm)
    prep = prepare(lm, episode, chat=chat)
    node = SaeNode.of(sae, read_layer) if sae is not None and read_layer is not None else None
    if metric == "restart":
        m = restart_metric(prep, lm.tokenizer)
    elif metric == "detectors":
        if node is None:
            raise ConfigError("the detector metric needs sae= and read_layer=")
        m = detector_metric(prep, sae, node.layer, episode.detectors or [])
    else:
        raise ConfigError(f"unknown metric {metric!r}; choose restart or detectors")
    record: dict[str, Any] = {"id": episode.id, "metric": metric, "target": prep.target,
                              "target_token": lm.tokenizer.decode([prep.target]), "position": prep.position,
                              "n_tokens": len(prep.ids), "read_layer": read_layer, "counterfactuals": []}
    for kind in counterfactuals:
        try:
            cf_ids, cf_ivs, cf_record = counterfactual(prep, kind, sae_layer=read_layer, tok=lm.tokenizer)
        except ConfigError as exc:
            record["counterfactuals"].append({"kind": kind, "skipped": str(exc)})
            continue
        att, state = attribution_patching(lm, prep, cf_ids, cf_ivs, metric=m, sae=sae, node=node, remote=remote)
        ranked = sorted((n for n in att.atp if is_component(n)), key=lambda n: -abs(att.atp[n]))
        top = ranked[:top_k]
        heads = [n for n in ranked if parse_site(n)[0] == "head"]
        rng = np.random.default_rng(derive_seed(episode.id, kind, seed, "random-heads"))
        all_heads = [head_name(layer, h) for layer in range(sites.n_layers) for h in range(sites.n_heads)]
        n_check = min(n_heads_check, len(all_heads) // 2)  # small models: half the heads at most
        random_heads = [all_heads[i] for i in rng.choice(len(all_heads), size=n_check, replace=False)]
        sets = [[n] for n in top] + [heads[:n_check], random_heads]
        effects = activation_patching(lm, prep, state, sets, sae=sae, node=node, batch_size=batch_size,
                                      remote=remote)
        entry = {**cf_record, **att.to_dict(), "other_token": lm.tokenizer.decode([att.other]) if att.other >= 0
                 else None, "top_sites": top, "top_patch_effects": effects[:len(top)],
                 "atp_vs_patching_spearman": spearman([att.atp[n] for n in top], effects[:len(top)]),
                 "n_heads_check": n_check, "top10_heads": heads[:n_check], "top10_patch_effect": effects[len(top)],
                 "random10_heads": random_heads, "random10_patch_effect": effects[len(top) + 1]}
        if ig_steps:
            groups = sorted({f"{parse_site(n)[1]}:{parse_site(n)[0]}" for n in top
                             if parse_site(n)[0] in ("head", "mlp_out")})
            if node is not None:
                groups.append(f"{node.layer}:block_out")
            entry["ig"] = integrated_gradients(lm, prep, state, groups, steps=ig_steps, sae=sae, node=node,
                                               remote=remote)
            entry["ig_steps"] = ig_steps
        record["counterfactuals"].append(entry)
    return record


def mean_interval(values: Sequence[float], ids: Sequence[str], seed: int, n_boot: int = 2000) -> list[float]:
    """``[mean, lo, hi]`` of the finite ``values``: a 95 % percentile bootstrap (``n_boot`` draws) clustered by
    ``ids`` (nan x 3 when none is finite; nan bounds for ``n_boot = 0`` or fewer than 2 ids)."""
    from esr_analysis.metrics.intervals import cluster_bootstrap_interval

    finite = [(v, i) for v, i in zip(values, ids, strict=True) if v == v]
    if not finite:
        return [math.nan, math.nan, math.nan]
    vs = [v for v, _ in finite]
    lo, hi = cluster_bootstrap_interval(vs, [i for _, i in finite], seed=seed, n_boot=n_boot)
    return [float(sum(vs) / len(vs)), lo, hi]


def aggregate(records: Sequence[dict[str, Any]], *, counterfactual: str = "steering_off", n_top: int = 20,
              labels: Any = None, seed: int = 0) -> dict[str, Any]:
    """Aggregate :func:`study_episode` records for one counterfactual (see the module docstring). ``labels``: a
    :class:`esr_analysis.sae.labels.LatentLabels` (or anything with ``label(i)``) for the latents."""
    entries = [(r["id"], c) for r in records for c in r["counterfactuals"]
               if c["kind"] == counterfactual and "skipped" not in c]
    ids = [i for i, _ in entries]
    names = sorted({n for _, c in entries for n in c["atp"]})
    per_site = {n: [c["atp"].get(n, 0.0) for _, c in entries] for n in names}
    means = {n: sum(v) / len(v) for n, v in per_site.items()} if entries else {}
    top = sorted((n for n in names if is_component(n)), key=lambda n: -abs(means[n]))[:n_top]
    top_components = []
    for n in top:
        kind, idx, head = parse_site(n)
        item: dict[str, Any] = {"site": n, "kind": kind, "atp": mean_interval(per_site[n], ids, seed)}
        dla = [c["dla"][n] for _, c in entries if n in c.get("dla", {})]
        if dla:
            item["dla_mean"] = sum(dla) / len(dla)
        if kind == "latent" and labels is not None:
            item["label"] = labels.label(idx)
        top_components.append(item)
    spear = [c["atp_vs_patching_spearman"] for _, c in entries]
    return {
        "n_episodes": len(entries),
        "counterfactual": counterfactual,
        "top_components": top_components,
        "atp_vs_patching_spearman": mean_interval(spear, ids, seed)[0],
        "atp_vs_patching_spearman_ci": mean_interval(spear, ids, seed),
        "top10_patch_effect": mean_interval([c["top10_patch_effect"] for _, c in entries], ids, seed),
        "random10_patch_effect": mean_interval([c["random10_patch_effect"] for _, c in entries], ids, seed),
        "metric_clean": mean_interval([c["metric_clean"] for _, c in entries], ids, seed),
        "metric_cf": mean_interval([c["metric_cf"] for _, c in entries], ids, seed),
        "mean_atp": means,
        "skipped": [{"id": r["id"], "reason": c["skipped"]} for r in records for c in r["counterfactuals"]
                    if c["kind"] == counterfactual and "skipped" in c],
    }


def head_matrix(summary: dict[str, Any], n_layers: int, n_heads: int, key: str = "mean_atp") -> list[list[float]]:
    """``[layer][head]`` means of ``summary[key]`` (0 where absent), for the layer x head heatmap."""
    vals = summary[key]
    return [[float(vals.get(head_name(layer, h), 0.0)) for h in range(n_heads)] for layer in range(n_layers)]
