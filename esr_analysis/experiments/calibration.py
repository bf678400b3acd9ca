"""Per-latent threshold calibration by probabilistic bisection, batched across latents, with a keyed cache.

For each latent the threshold is the boost (SAE units) at which the judge's first-attempt score hits the
target (``search.target``, 0-100), found by :class:`~esr_analysis.experiments.bisection.ProbabilisticBisection`
with the search's bounds and truncated-Gaussian prior. **Step k of every latent's search runs as one batched
generation** (and one grading call): each step queries every unfinished latent's posterior median on
``samples_per_step`` distinct prompts drawn with a per-latent seeded RNG.

A step's score is the mean first-attempt score / 100 of its samples; samples with a judge error or no scored
attempt are left out, and a step with no usable sample does not update the posterior (it is logged).

**Fluent regime** (``search.fluency_gate``, on by default): a sample whose response is degenerate
(:func:`esr_analysis.metrics.fluency.is_degenerate`) is left out of the step's score, and a step whose
responses are all degenerate observes score 0 ("boost less"), so the search converges below the strength
where the output collapses instead of on the judge's score of broken text. A latent has a **fluent off-topic
window** when some step saw a fluent sample scoring below the target; :class:`ThresholdResult` records it
and the pipeline drops latents without one (``search.require_fluent_window``), with the reason counted.

Cache: one JSON file per key under ``<cache>/thresholds/``. The key (:func:`threshold_key`) hashes the latent,
what the session resolved (model identity, SAE source and content fingerprint, steering layer, judge id and
rubric hash, sampling settings of the search, chat formatting, prompt-set content) **and every config field**
except those in :data:`THRESHOLD_KEY_IGNORES`, which cannot change what the search generates or how it is
graded. A new config field is therefore keyed unless it is added there with its reason.
Each entry holds the threshold, the achieved score (if measured) and the whole search history.

**Under ablation** (``ablate=``, exp 3's optional re-search): every generation of the search also clamps the
given SAE latents to 0 at the steering layer over the config's scope (as the paired replay does); the ablated
set is part of the key, and a search without ablation keeps its key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from esr_analysis.experiments.bisection import ProbabilisticBisection
from esr_analysis.files import atomic_write_json
from esr_analysis.metrics.fluency import FLUENCY_VERSION, is_degenerate
from esr_analysis.seeds import derive_seed

log = logging.getLogger(__name__)


@dataclass
class ThresholdResult:
    """A calibrated latent: its threshold (SAE units), the achieved first-attempt score (0-100, if measured),
    and the search history (one dict per step)."""

    latent: int
    threshold: float
    achieved_score: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    cached: bool = False
    key: str = ""
    fluent_window: bool = True
    achieved_degenerate: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


THRESHOLD_KEY_IGNORES: dict[str, str] = {
    "name": "a label",
    "output_dir": "where run directories go",
    "read_layer": "used by selection only",
    "device": "where the model runs, not what it computes",
    "remote": "where the model runs, not what it computes",
    "batch_size": "batching does not change a row's output (per-row seeded sampler)",
    "n_prompts_per_latent": "trials only; the search draws from the whole prompt set",
    "max_new_tokens": "trial length; the search uses search.max_new_tokens",
    "seed": "trial seeds; the search uses search.seed",
    "experiments": "which experiments run after calibration",
    "selection": "which latents are calibrated, not how",
    "boost": "exp 2 levels",
    "meta_variants": "exp 5",
    "cross_judges": "exp 7",
    "cross_judge_samples": "exp 7",
}
"""Top-level config fields the threshold key leaves out, each with the reason it cannot change a threshold."""


def threshold_key(session: Any, latent: int, ablate: Sequence[int] = ()) -> str:
    """The cache key of ``latent``'s threshold in ``session``, searched with ``ablate`` ablated (see module
    docstring)."""
    c = session.config
    fields = {k: v for k, v in c.model_dump(mode="json").items() if k not in THRESHOLD_KEY_IGNORES}
    fields["search"].pop("measure_achieved", None)  # adds a measurement, changes no threshold
    payload = {"v": 3, "fluency": FLUENCY_VERSION, "model": session.model_id, "sae": session.sae_identity,
               "latent": int(latent),
               "judge": getattr(session.judge, "judge_id", str(session.judge)),
               "rubric": getattr(session.judge, "rubric_hash", None), "layer": session.steer_layer,
               "settings": session.settings(c.search.max_new_tokens).model_dump(mode="json"),
               "chat": session.chat_options(), "config": fields,
               "prompts": hashlib.sha256("\n".join(session.prompts).encode()).hexdigest()}
    if ablate:
        payload["ablate"] = sorted({int(i) for i in ablate})
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class ThresholdCache:
    """Thresholds on disk, one JSON file per key."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> ThresholdResult | None:
        p = self.directory / f"{key}.json"
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text())
            data["cached"] = True
            return ThresholdResult(**data)
        except (ValueError, TypeError):
            return None

    def put(self, result: ThresholdResult) -> None:
        atomic_write_json(self.directory / f"{result.key}.json", {**result.as_dict(), "cached": False}, indent=None)


def _first_score(grade: Any) -> float | None:
    if grade is None or grade.error is not None:
        return None
    scores = grade.scores
    return scores[0] if scores else None


def _step_score(scores: list[float | None], degenerate: list[bool], *, gate: bool) -> tuple[float | None, str | None]:
    """A step's normalised score and note from its samples' first-attempt scores and degenerate flags
    (module docstring)."""
    if gate:
        fluent = [v for v, b in zip(scores, degenerate, strict=True) if v is not None and not b]
        if fluent:
            return sum(fluent) / len(fluent) / 100.0, None
        if degenerate and all(degenerate):
            return 0.0, "all responses degenerate: scored 0 (boost less)"
        return None, "no usable grade; posterior unchanged"
    vals = [v for v in scores if v is not None]
    if vals:
        return sum(vals) / len(vals) / 100.0, None
    return None, "no usable grade; posterior unchanged"


def calibrate(session: Any, latents: list[int], *, cache: ThresholdCache | None = None,
              ablate: Sequence[int] = ()) -> dict[int, ThresholdResult]:
    """Calibrate ``latents`` (batched; see the module docstring), with the latents of ``ablate`` clamped to 0
    at the steering layer in every generation when given. Returns ``{latent: ThresholdResult}``."""
    c = session.config
    s = c.search
    if s.samples_per_step > len(session.prompts):
        raise ValueError(f"samples_per_step={s.samples_per_step} exceeds the {len(session.prompts)} prompts")
    extra: list[Any] = []
    if ablate:
        from esr_analysis.sae.sliced import check_latents
        from esr_analysis.steering.interventions import AblateLatents

        check_latents(session.sae, [int(i) for i in ablate])
        extra = [AblateLatents(latents=tuple(sorted({int(i) for i in ablate})), layer=session.steer_layer,
                               scope=session.config.scope)]
    results: dict[int, ThresholdResult] = {}
    keys = {lat: threshold_key(session, lat, ablate) if cache is not None else "" for lat in latents}
    todo = []
    for lat in latents:
        hit = cache.get(keys[lat]) if cache is not None else None
        if hit is not None:
            results[lat] = hit
        else:
            todo.append(lat)
    if not todo:
        return results
    searches = {lat: ProbabilisticBisection(lower=s.lower, upper=s.upper, prior_mean=s.prior_mean,
                                            prior_std=s.prior_std, target=s.target / 100.0, grid_size=s.grid_size,
                                            confidence_scale=s.confidence_scale) for lat in todo}
    rngs = {lat: random.Random(derive_seed(s.seed, "search", lat)) for lat in todo}
    settings = session.settings(s.max_new_tokens)
    fluent_off = {lat: False for lat in todo}
    from tqdm.auto import tqdm

    for step in tqdm(range(s.n_steps), desc=f"calibrate {len(todo)} latents", unit="step",
                     disable=not session.progress):
        rows: list[tuple[int, str, float, int]] = []
        for lat in todo:
            x = searches[lat].median()
            for p in rngs[lat].sample(session.prompts, s.samples_per_step):
                rows.append((lat, p, x, rngs[lat].randrange(1_000_000)))
        gens = session.generate([r[1] for r in rows], [[session.steer(r[0], r[2]), *extra] for r in rows],
                                [r[3] for r in rows], settings)
        grades = session.grade([r[1] for r in rows], [g.text for g in gens], [session.label(r[0]) for r in rows])
        per: dict[int, list[float | None]] = {lat: [] for lat in todo}
        bad: dict[int, list[bool]] = {lat: [] for lat in todo}
        for r, g, gr in zip(rows, gens, grades, strict=True):
            per[r[0]].append(_first_score(gr))
            bad[r[0]].append(is_degenerate(g.text))
        for lat in todo:
            score, note = _step_score(per[lat], bad[lat], gate=s.fluency_gate)
            if score is not None and any(v is not None and v < s.target and not b
                                         for v, b in zip(per[lat], bad[lat], strict=True)):
                fluent_off[lat] = True
            searches[lat].update(searches[lat].median(), score, samples=per[lat], note=note, degenerate=bad[lat])
        log.info("calibration step %d/%d done for %d latents", step + 1, s.n_steps, len(todo))
    achieved: dict[int, float | None] = {lat: None for lat in todo}
    achieved_bad: dict[int, bool | None] = {lat: None for lat in todo}
    if s.measure_achieved:
        rows2 = [(lat, rngs[lat].choice(session.prompts), searches[lat].estimate(2), rngs[lat].randrange(1_000_000))
                 for lat in todo]
        gens = session.generate([r[1] for r in rows2], [[session.steer(r[0], r[2]), *extra] for r in rows2],
                                [r[3] for r in rows2], settings)
        grades = session.grade([r[1] for r in rows2], [g.text for g in gens], [session.label(r[0]) for r in rows2])
        for r, g, gr in zip(rows2, gens, grades, strict=True):
            achieved[r[0]] = _first_score(gr)
            achieved_bad[r[0]] = is_degenerate(g.text)
    for lat in todo:
        res = ThresholdResult(latent=lat, threshold=searches[lat].estimate(2), achieved_score=achieved[lat],
                              history=[h.as_dict() for h in searches[lat].history], key=keys[lat],
                              fluent_window=fluent_off[lat], achieved_degenerate=achieved_bad[lat])
        if cache is not None:
            cache.put(res)
        results[lat] = res
    return {lat: results[lat] for lat in latents}


def calibrate_sequential(session: Any, latents: list[int]) -> dict[int, ThresholdResult]:
    """Latent-by-latent calibration (no cache), the unbatched baseline for benchmarks."""
    out: dict[int, ThresholdResult] = {}
    for lat in latents:
        out.update(calibrate(session, [lat], cache=None))
    return out
