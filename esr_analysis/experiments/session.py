"""A :class:`Session`: the model, SAE, judge, labels and caches one pipeline run works with.

:func:`preflight` checks a config **before any compute** (judge and API key, prompt file, model name,
layers, SAE source and explicit latents, target range) and :func:`open_session` then loads the model.
:meth:`Session.generate` is the cached, batched generation every experiment goes through, and
:meth:`Session.grade` grades with the judge through the grade cache.

SAE sources: anything :func:`esr_analysis.sae.loading.load_sae` understands (``shipped:<name>``, a local
directory, ``<release>/<sae_id>``), plus ``random:<d_sae>[:<seed>]``, a seeded random ReLU SAE of the
model's width (:mod:`esr_analysis.sae.random_sae`; for development, tests and benchmarks only).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esr_analysis.errors import ConfigError
from esr_analysis.experiments.config import ExperimentConfig
from esr_analysis.experiments.gencache import GenerationCache

log = logging.getLogger(__name__)


def load_sae_source(source: str, d_model: int) -> Any:
    """Load an SAE from ``source`` (see module docstring); a bad ``random:`` source raises :class:`ConfigError`."""
    from esr_analysis.sae.random_sae import RANDOM_PREFIX, parse_random_source, random_sae

    if source.startswith(RANDOM_PREFIX):
        try:
            d_sae, seed = parse_random_source(source)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return random_sae(d_model, d_sae, seed)
    from esr_analysis.sae.loading import load_sae

    return load_sae(source)


def _labels_for(sae: Any) -> Callable[[int], str]:
    src = str(getattr(sae, "esr_source", "") or "")
    if src and not src.startswith("random:"):
        try:
            from esr_analysis.sae.labels import labels_for

            labels = labels_for(sae)
            return lambda i: labels.label(i) or f"latent {i}"
        except (FileNotFoundError, ValueError, ImportError) as exc:
            log.warning("no latent labels for %s (%s); the judge sees 'latent <i>'", src, exc)
    return lambda i: f"latent {i}"


def _latent_stats(sae: Any) -> Callable[[int], dict[str, Any]]:
    src = str(getattr(sae, "esr_source", "") or "")
    if src and not src.startswith("random:"):
        try:
            from esr_analysis.sae.labels import labels_for

            labels = labels_for(sae)
            return labels.info
        except (FileNotFoundError, ValueError, ImportError):
            pass
    return lambda i: {"index": int(i)}


@dataclass
class Session:
    """What a run works with. Build with :func:`open_session` (from a config) or directly (tests)."""

    config: ExperimentConfig
    model: Any
    sae: Any
    judge: Any
    steer_layer: int
    read_layer: int
    prompts: list[str]
    label: Callable[[int], str] = lambda i: f"latent {i}"
    latent_info: Callable[[int], dict[str, Any]] = lambda i: {"index": int(i)}
    repetition_penalty: float = 1.0
    gen_cache: GenerationCache | None = None
    grade_cache: Any = None
    progress: bool = True
    model_id: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=lambda: {"generated": 0, "gen_cached": 0, "graded": 0,
                                                              "grade_cached": 0, "gen_s": 0.0, "grade_s": 0.0})

    @property
    def sae_source(self) -> str | None:
        """The string the SAE was loaded from (human-readable; not a content identity)."""
        from esr_analysis.sae.loading import sae_source_of

        return sae_source_of(self.sae)

    @property
    def sae_identity(self) -> dict[str, str] | None:
        """Source string plus content fingerprint of the SAE: what caches and run manifests key on."""
        from esr_analysis.sae.loading import sae_identity

        return sae_identity(self.sae)

    def settings(self, max_new_tokens: int | None = None) -> Any:
        """Sampling settings of the trials (or of the threshold search with ``max_new_tokens``)."""
        from esr_analysis.steering.sampling import SamplingSettings

        c = self.config
        return SamplingSettings(temperature=c.temperature, top_p=c.top_p, repetition_penalty=self.repetition_penalty,
                                max_new_tokens=max_new_tokens or c.max_new_tokens)

    def chat_options(self) -> dict[str, Any]:
        """How prompts are rendered into model input (the chat flags of
        :func:`esr_analysis.models.chat.format_chat`); part of every generation and threshold cache key."""
        c = self.config
        return {"chat": True, "llama_extra_header": c.llama_extra_header, "system_prompt": c.system_prompt,
                "template_system_prompt": c.template_system_prompt}

    def steer(self, latent: int, boost: float) -> Any:
        """The steering intervention of ``latent`` at ``boost`` SAE units at the config's layer and scope."""
        from esr_analysis.steering.interventions import AddLatent

        return AddLatent(latent=int(latent), strength=float(boost), layer=self.steer_layer, scope=self.config.scope)

    def generate(self, prompts: Sequence[str], interventions: Sequence[Sequence[Any]], seeds: Sequence[int],
                 settings: Any) -> list[Any]:
        """Batched generation of rows ``(prompt, interventions, seed)`` through the generation cache: cached
        rows come from disk, the rest run in batches of ``config.batch_size`` and are stored."""
        import time

        from esr_analysis.provenance import library_versions
        from esr_analysis.steering.generate import generate

        n = len(prompts)
        out: list[Any] = [None] * n
        keys: list[str | None] = [None] * n
        if self.gen_cache is not None:
            versions = library_versions()
            chat = self.chat_options()
            sae_id = self.sae_identity
            for i in range(n):
                key = GenerationCache.key(model_id=self.model_id, sae=sae_id,
                                          interventions=interventions[i], prompt=prompts[i], seed=seeds[i],
                                          settings=settings, chat=chat, versions=versions)
                keys[i] = key
                out[i] = self.gen_cache.get(key)
        todo = [i for i in range(n) if out[i] is None]
        self.stats["gen_cached"] += n - len(todo)
        if todo:
            t0 = time.monotonic()
            res = generate(self.model, [prompts[i] for i in todo], interventions=[list(interventions[i]) for i in todo],
                           sae=self.sae, settings=settings, seeds=[int(seeds[i]) for i in todo],
                           batch_size=self.config.batch_size, llama_extra_header=self.config.llama_extra_header,
                           system_prompt=self.config.system_prompt,
                           template_system_prompt=self.config.template_system_prompt,
                           remote=self.config.remote, progress=self.progress)
            self.stats["gen_s"] += time.monotonic() - t0
            self.stats["generated"] += len(todo)
            for i, r in zip(todo, res, strict=True):
                out[i] = r
                key_i = keys[i]
                if self.gen_cache is not None and key_i is not None:
                    self.gen_cache.put(key_i, r)
        return out

    def grade(self, prompts: Sequence[str], responses: Sequence[str], labels: Sequence[str],
              steered: Sequence[bool] | None = None) -> list[Any]:
        """Grade ``(prompt, response, label)`` triples with the session's judge (grade cache on);
        ``steered`` (default all ``True``) marks which trials were steered (the rubric's wording)."""
        import time

        from esr_analysis.judge.runner import run_grading
        from esr_analysis.judge.types import GradeRequest

        flags = [True] * len(prompts) if steered is None else list(steered)
        reqs = [GradeRequest(prompt=p, response=r, latent_label=lab, steered=st)
                for p, r, lab, st in zip(prompts, responses, labels, flags, strict=True)]
        t0 = time.monotonic()
        report = run_grading(self.judge, reqs, cache=self.grade_cache, progress=self.progress)
        self.stats["grade_s"] += time.monotonic() - t0
        self.stats["graded"] += report.stats.n_requests - report.stats.cached
        self.stats["grade_cached"] += report.stats.cached
        return report.grades


@dataclass
class Preflight:
    """What :func:`preflight` resolved: spec, layers, SAE, judge, prompts, repetition penalty."""

    spec: Any
    steer_layer: int
    read_layer: int
    sae: Any
    judge: Any
    prompts: list[str]
    repetition_penalty: float


def preflight(config: ExperimentConfig, *, judge: Any = None, sae: Any = None, model: Any = None) -> Preflight:
    """Check everything that can be checked without running the model; raise :class:`ConfigError`.

    Loads the judge (an API judge without its key fails here), the prompts, the model spec, and the SAE
    (small for shipped SAEs; a hub SAE offline fails fast), and checks layers and explicit latents.
    """
    from esr_analysis.experiments.prompts import load_prompts
    from esr_analysis.models.registry import get_spec

    c = config
    if not 0 <= c.search.target <= 100:
        raise ConfigError(f"search.target must be between 0 and 100, got {c.search.target}")
    try:
        if model is not None:
            from esr_analysis.models.loading import spec_of

            spec = spec_of(model)
        else:
            spec = get_spec(c.model)
    except (KeyError, ValueError, LookupError) as exc:
        raise ConfigError(f"unknown model {c.model!r}: {exc}") from None
    steer = spec.steer_layer if c.steer_layer is None else c.steer_layer
    read = spec.read_layer if c.read_layer is None else c.read_layer
    for name, layer in (("steer_layer", steer), ("read_layer", read)):
        if not 0 <= layer < spec.n_layers:
            raise ConfigError(f"{name}={layer} is outside {spec.name} (layers 0..{spec.n_layers - 1})")
    if judge is None:
        from esr_analysis.judge import make_judge
        from esr_analysis.judge.types import JudgeConfigError

        try:
            judge = make_judge(c.judge)
        except JudgeConfigError as exc:
            raise ConfigError(f"judge {c.judge!r} cannot run: {exc}") from None
    if c.selection.concreteness_judge and "claude" in c.selection.concreteness_judge \
            and not os.environ.get("ANTHROPIC_API_KEY"):
        raise ConfigError("selection.concreteness_judge uses Claude but ANTHROPIC_API_KEY is not set; set it, or "
                          "pass --set selection.concreteness_judge=null to skip the concreteness filter")
    try:
        prompts = load_prompts(c.prompts)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if c.n_prompts_per_latent > len(prompts):
        raise ConfigError(f"n_prompts_per_latent={c.n_prompts_per_latent} exceeds the {len(prompts)} prompts")
    if sae is None:
        source = c.sae or spec.sae_source
        if not source:
            raise ConfigError(f"{spec.name} has no default SAE; set sae=<source>")
        try:
            sae = load_sae_source(source, spec.d_model)
        except ConfigError:
            raise
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise ConfigError(f"cannot load SAE {source!r}: {exc}") from None
    from esr_analysis.sae.sliced import sae_width

    d_in, d_sae = sae_width(sae)
    if d_in != spec.d_model:
        raise ConfigError(f"SAE width {d_in} does not match {spec.name}'s hidden size {spec.d_model}")
    bad = [i for i in c.selection.latents or [] if not 0 <= i < d_sae]
    if bad:
        raise ConfigError(f"latents {bad} are outside the SAE ({d_sae} latents, 0..{d_sae - 1})")
    if c.selection.latents is None and c.selection.n_latents * c.selection.candidate_factor > d_sae:
        raise ConfigError(f"cannot draw {c.selection.n_latents * c.selection.candidate_factor} candidates from "
                          f"an SAE with {d_sae} latents")
    rep = c.repetition_penalty if c.repetition_penalty is not None else spec.repetition_penalty
    return Preflight(spec=spec, steer_layer=steer, read_layer=read, sae=sae, judge=judge, prompts=prompts,
                     repetition_penalty=rep)


def _model_identity(spec: Any, model: Any) -> dict[str, Any]:
    ident: dict[str, Any] = {"name": spec.name, "hf_id": spec.hf_id}
    try:
        from esr_analysis.tracing.core import hf_module

        hf = hf_module(model)
        ident["dtype"] = str(next(hf.parameters()).dtype)
        ident["revision"] = getattr(hf.config, "_commit_hash", None)
    except Exception:  # noqa: BLE001 - identity is best effort
        pass
    return ident


def open_session(config: ExperimentConfig, *, model: Any = None, sae: Any = None, judge: Any = None,
                 cache_dir: str | Path | None = None, use_caches: bool = True, progress: bool = True) -> Session:
    """Preflight ``config``, then load the model (unless given) and build the session.

    Caches live under ``cache_dir`` (default :func:`esr_analysis.paths.cache_dir`): ``generations/`` and the
    judge's ``judge_grades.sqlite``; ``use_caches=False`` turns both off.
    """
    pf = preflight(config, judge=judge, sae=sae, model=model)
    if model is None:
        from esr_analysis.models.loading import load_model, load_remote_model

        if config.remote and config.remote != "local":
            model = load_remote_model(pf.spec.name)
        else:
            model = load_model(pf.spec.name, device=config.device, dtype=config.dtype)
    gen_cache = grade_cache = None
    if use_caches:
        from esr_analysis.paths import cache_dir as default_cache_dir

        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        gen_cache = GenerationCache(root / "generations")
        grade_cache = root / "judge_grades.sqlite"
    return Session(config=config, model=model, sae=pf.sae, judge=pf.judge, steer_layer=pf.steer_layer,
                   read_layer=pf.read_layer, prompts=pf.prompts, label=_labels_for(pf.sae),
                   latent_info=_latent_stats(pf.sae), repetition_penalty=pf.repetition_penalty, gen_cache=gen_cache,
                   grade_cache=grade_cache, progress=progress, model_id=_model_identity(pf.spec, model))
