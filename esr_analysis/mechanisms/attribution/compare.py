"""Does the organism's mechanism exist in the base model? Attribution records of two models on the same episodes.

Both models are run teacher-forced on the same stored episodes (the organism's recoveries) with the same metric
and counterfactual, by :func:`esr_analysis.mechanisms.attribution.study.study_episode`. Definitions used here,
for one counterfactual, over *component sites* (heads, MLP outputs and the SAE error node; SAE latents and block
outputs are left out: latents are almost all zero in both models, block outputs are sums of the rest):

* **top-k overlap** of an episode: ``|T_k(A) ∩ T_k(B)| / k`` where ``T_k`` is the ``k`` sites of largest
  ``|AtP|`` in that model's record of the episode. Chance (two random ``k``-subsets of ``N`` sites) is ``k / N``.
* **rank agreement** of an episode: Spearman correlation of the two models' AtP scores over all component sites.
* **matched** pairs compare model A and model B on the *same* episode; the **control** pairs compare A on episode
  ``i`` with B on episode ``σ(i)`` for a seeded derangement ``σ`` (a different episode): structure shared by every
  episode (late MLPs that always matter) shows up in both, so only matched − control speaks for an
  episode-specific shared mechanism.
* Means over episodes come with percentile bootstrap intervals clustered by episode (the control's pairs are
  clustered by A's episode).

The behavioural side is compared too: the clean metric (restart logit difference on the organism's text) and the
counterfactual metric in each model, and each model's own top-10-head patching effect against its random heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from esr_analysis.errors import ConfigError
from esr_analysis.mechanisms.attribution.methods import parse_site
from esr_analysis.mechanisms.attribution.study import mean_interval, spearman
from esr_analysis.mechanisms.detectors import derangements

COMPARE_VERSION = "attribution-compare-v1"
COMPARED_KINDS = ("head", "mlp_out", "sae_error")


def _entries(records: Sequence[dict[str, Any]], counterfactual: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        for c in r["counterfactuals"]:
            if c["kind"] == counterfactual and "skipped" not in c:
                out[str(r["id"])] = {**c, "target_token": r.get("target_token"), "metric": r.get("metric")}
    return out


def _sites(atp: dict[str, float]) -> list[str]:
    return sorted(n for n in atp if parse_site(n)[0] in COMPARED_KINDS)


def top_k_overlap(atp_a: dict[str, float], atp_b: dict[str, float], k: int) -> float:
    """``|T_k(A) ∩ T_k(B)| / k`` over the component sites both records hold (ties broken by site name)."""
    common = sorted(set(_sites(atp_a)) & set(_sites(atp_b)))
    if k < 1 or k > len(common):
        raise ConfigError(f"k must be in 1..{len(common)} (the sites both records hold), got {k}")
    top_a = sorted(common, key=lambda n: (-abs(atp_a[n]), n))[:k]
    top_b = sorted(common, key=lambda n: (-abs(atp_b[n]), n))[:k]
    return len(set(top_a) & set(top_b)) / k


def rank_agreement(atp_a: dict[str, float], atp_b: dict[str, float]) -> float:
    """Spearman correlation of the two AtP maps over the component sites both hold."""
    common = sorted(set(_sites(atp_a)) & set(_sites(atp_b)))
    return spearman([atp_a[n] for n in common], [atp_b[n] for n in common])


def compare_records(records_a: Sequence[dict[str, Any]], records_b: Sequence[dict[str, Any]], *,
                    counterfactual: str = "steering_off", k: int = 20, seed: int = 0,
                    names: tuple[str, str] = ("A", "B")) -> dict[str, Any]:
    """Compare two models' attribution records episode by episode (definitions in the module docstring).

    Only episodes that both record sets hold (by id) with the counterfactual not skipped are compared; the
    others are listed under ``excluded``. Both sets must use the same metric."""
    ea, eb = _entries(records_a, counterfactual), _entries(records_b, counterfactual)
    ids = sorted(set(ea) & set(eb))
    if len(ids) < 2:
        raise ConfigError(f"{len(ids)} episodes in common for counterfactual {counterfactual!r}: need >= 2")
    metrics = {ea[i]["metric"] for i in ids} | {eb[i]["metric"] for i in ids}
    if len(metrics) > 1:
        raise ConfigError(f"the records use different metrics {sorted(map(str, metrics))}: compare like with like")
    sites = sorted(set.intersection(*(set(_sites(ea[i]["atp"])) & set(_sites(eb[i]["atp"])) for i in ids)))
    overlap = [top_k_overlap(ea[i]["atp"], eb[i]["atp"], k) for i in ids]
    rho = [rank_agreement(ea[i]["atp"], eb[i]["atp"]) for i in ids]
    perm = derangements(len(ids), 1, seed)[0]
    ctrl_overlap = [top_k_overlap(ea[i]["atp"], eb[ids[perm[j]]]["atp"], k) for j, i in enumerate(ids)]
    ctrl_rho = [rank_agreement(ea[i]["atp"], eb[ids[perm[j]]]["atp"]) for j, i in enumerate(ids)]
    diff_overlap = [m - c for m, c in zip(overlap, ctrl_overlap, strict=True)]
    diff_rho = [m - c for m, c in zip(rho, ctrl_rho, strict=True)]
    a_name, b_name = names

    def side(e: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {"metric_clean": mean_interval([e[i]["metric_clean"] for i in ids], ids, seed),
                "metric_cf": mean_interval([e[i]["metric_cf"] for i in ids], ids, seed),
                "top10_patch_effect": mean_interval([e[i]["top10_patch_effect"] for i in ids], ids, seed),
                "random10_patch_effect": mean_interval([e[i]["random10_patch_effect"] for i in ids], ids, seed)}

    # the sites that matter most for A (mean |AtP| over episodes), and B's mean AtP at the same sites
    mean_a = {n: sum(ea[i]["atp"][n] for i in ids) / len(ids) for n in sites}
    top_a = sorted(sites, key=lambda n: (-abs(mean_a[n]), n))[:k]
    same_sites = [{"site": n, a_name: mean_interval([ea[i]["atp"][n] for i in ids], ids, seed),
                   b_name: mean_interval([eb[i]["atp"][n] for i in ids], ids, seed)} for n in top_a]
    return {
        "version": COMPARE_VERSION,
        "models": [a_name, b_name],
        "counterfactual": counterfactual,
        "n_episodes": len(ids),
        "excluded": sorted({str(r["id"]) for r in [*records_a, *records_b]} - set(ids)),
        "compared_kinds": list(COMPARED_KINDS),
        "n_sites": len(sites),
        "k": k,
        "chance_overlap": k / len(sites),
        "top_k_overlap": {"matched": mean_interval(overlap, ids, seed), "control": mean_interval(ctrl_overlap, ids, seed),
                          "matched_minus_control": mean_interval(diff_overlap, ids, seed)},
        "rank_agreement": {"matched": mean_interval(rho, ids, seed), "control": mean_interval(ctrl_rho, ids, seed),
                           "matched_minus_control": mean_interval(diff_rho, ids, seed)},
        "per_model": {a_name: side(ea), b_name: side(eb)},
        f"top_sites_of_{a_name}": same_sites,
        "control_derangement_seed": seed,
        "per_episode": [{"id": i, "top_k_overlap": o, "rank_agreement": r}
                        for i, o, r in zip(ids, overlap, rho, strict=True)],
    }
