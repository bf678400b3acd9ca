"""The detector file: writing ours (:func:`detector_record`) and reading ours, the authors' or a bare list
(:func:`read_detector_file`).

Our file is the authors' schema (``model_name``, ``prompts_file``, ``num_prompts``, ``activation_threshold``,
``off_topic_detectors``, ``detector_stats``, ``normal_responses``) plus the rule used, labels, every rule's
selection, the discovery parameters, provenance and the command that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from esr_analysis.mechanisms.detectors import RULES, ZERO_EPS, Discovery, select_detectors


def detector_record(d: Discovery, rule: str, *, model_name: str, prompts_file: str, sae: Any = None,
                    label: Callable[[int], str] | None = None, min_off_fraction: float = 0.8, top_k: int = 26,
                    command: str | None = None) -> dict[str, Any]:
    """The detector file of ``rule``: the authors' schema (``model_name``, ``prompts_file``, ``num_prompts``,
    ``activation_threshold``, ``off_topic_detectors``, ``detector_stats``, ``normal_responses``) plus ``rule``,
    ``labels``, every rule's selection (``rules``), discovery parameters, provenance and ``command``."""
    from esr_analysis.provenance import library_versions

    chosen = {r: select_detectors(d.stats, r, min_off_fraction=min_off_fraction, top_k=top_k) for r in RULES}
    pos = {lat: j for j, lat in enumerate(d.stats.latents)}
    dets = chosen[rule]
    ident = None
    if sae is not None:
        from esr_analysis.sae.loading import sae_identity

        ident = sae_identity(sae)
    return {
        "model_name": model_name, "prompts_file": prompts_file, "num_prompts": len(d.prompts),
        "activation_threshold": 0.0, "off_topic_detectors": dets,
        "detector_stats": {str(i): d.stats.latent_stats(pos[i]) for i in sorted(set().union(*chosen.values()))},
        "normal_responses": dict(zip(d.prompts, d.answers, strict=True)),
        "rule": rule, "labels": {str(i): label(i) for i in dets} if label else {},
        "rules": {r: {"detectors": v, "n": len(v)} for r, v in chosen.items()},
        "rule_params": {"zero_eps": ZERO_EPS, "min_off_fraction": min_off_fraction, "top_k": top_k},
        "discovery": {**d.params, "n_on_topic_pairs": d.stats.on.n, "n_off_topic_pairs": d.stats.off.n,
                      "assistant_positions": d.stats.positions, "sae": ident},
        "versions": library_versions(), "command": command,
    }


@dataclass
class DetectorSet:
    """Detectors read from a file: ``latents`` (best first), ``rule`` (``None`` when the file does not say),
    per-latent ``stats`` and ``labels``, and the raw record."""

    latents: tuple[int, ...]
    rule: str | None
    stats: dict[int, dict[str, Any]]
    labels: dict[int, str]
    record: dict[str, Any]


def read_detector_file(path: Any) -> DetectorSet:
    """Read a detector file: ours, the authors' (``off_topic_detectors`` as ints, or dicts with ``latent`` /
    ``index`` / ``feature_index_in_sae``), or a bare JSON list of latents. ``ValueError`` if none are found."""
    import json
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"detector file not found: {p}")
    data = json.loads(p.read_text(encoding="utf-8"))
    raw = data if isinstance(data, list) else data.get("off_topic_detectors", data.get("detectors"))
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{p} holds no detectors (expected a non-empty 'off_topic_detectors' list)")
    lats: list[int] = []
    for item in raw:
        v = next((item[k] for k in ("latent", "index", "feature_index_in_sae") if k in item), None) \
            if isinstance(item, dict) else item
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{p}: not a latent index: {item!r}")
        lats.append(v)
    rec: dict[str, Any] = data if isinstance(data, dict) else {"off_topic_detectors": lats}
    stats = {int(k): v for k, v in (rec.get("detector_stats") or {}).items()}
    labels = {int(k): str(v) for k, v in (rec.get("labels") or {}).items()}
    return DetectorSet(tuple(dict.fromkeys(lats)), rec.get("rule"), stats, labels, rec)
