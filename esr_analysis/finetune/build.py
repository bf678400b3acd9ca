"""Offline build of the self-correction data from the base model's own text (``docs/method.md#organism``).

Per training prompt:

1. **On-topic answers**: ``answers_per_prompt`` unsteered sampled answers of the base model, kept at full
   length. An answer is kept only if it ended with the end-of-turn token (not cut by the token limit), has
   at least ``min_answer_words`` words, is not degenerate (:func:`esr_analysis.metrics.is_degraded`), holds no
   restart language (:func:`esr_analysis.judge.restart.has_restart`) and is not a refusal.
2. **Off-topic opening**: the base model's answer to the same prompt while steered at ``layer`` by one SAE
   latent at ``strength`` times the median residual norm (relative units, the fluent window, e.g. 0.5-0.9),
   cut to its first ``k`` sentences with ``k`` drawn from ``min_sentences .. max_sentences``. The opening is
   kept only if it has at least ``min_sentences`` complete sentences and passes the same text checks as an
   answer, and (with ``offtopic_max_cosine``) only if it has left the prompt's subject: the cosine of its
   MiniLM embedding with the prompt's is at most that value (steering often garbles an answer without
   changing its subject; such text teaches nothing about returning to a topic). ``attempts_per_prompt``
   (latent, strength) pairs are tried in a seeded order and the first fit one is kept.
3. A **self-correction example** joins opening + one acknowledgement (drawn from the written set) + the first
   kept answer; the second kept answer makes a **normal example** (with one answer per prompt, the same answer
   also makes the prompt's normal example).

``keep_cut_answers`` keeps answers cut at the token limit as **prefixes**: they are trained without the end of
turn, so the model learns to recover and go on answering, never to stop early (a short limit makes the build
cheap on CPU, since the model's answers run to hundreds of tokens).

All draws use seeds derived from ``settings.seed`` and the prompt (:func:`esr_analysis.seeds.derive_seed`), so
a build is reproducible given the model and SAE. ``fluency_checks=False`` keeps any non-empty text (only for
random-init test models, whose text cannot pass the checks).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from esr_analysis.finetune.data import Example, normal_example, self_correction_example
from esr_analysis.seeds import derive_seed

__all__ = ["BuildReport", "BuildSettings", "answer_problem", "build_examples", "first_sentences", "opening_problem"]

log = logging.getLogger(__name__)

_REFUSAL = re.compile(r"\b(?:i(?:'m| am) (?:sorry|unable)|i can(?:not|'t) (?:assist|help|provide)|as an ai)\b",
                      re.IGNORECASE)
_SENTENCE = re.compile(r".*?[.!?](?:[\"'”’)\]]*)(?=\s|$)", re.DOTALL)


@dataclass(frozen=True)
class BuildSettings:
    """Settings of :func:`build_examples` (module docstring); ``strengths`` are relative to the median
    residual norm at ``layer``."""

    layer: int = 12
    latents: tuple[int, ...] = ()
    strengths: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    answers_per_prompt: int = 2
    attempts_per_prompt: int = 2
    answer_max_new_tokens: int = 320
    opening_max_new_tokens: int = 80
    temperature: float = 0.7
    repetition_penalty: float = 1.1
    min_answer_words: int = 15
    min_sentences: int = 2
    max_sentences: int = 4
    batch_size: int = 16
    seed: int = 0
    fluency_checks: bool = True
    keep_cut_answers: bool = False
    offtopic_max_cosine: float | None = None

    def check(self) -> None:
        if not self.latents:
            raise ValueError("BuildSettings.latents is empty: give the SAE latents that steer the openings")
        if not self.strengths or any(s <= 0 for s in self.strengths):
            raise ValueError("BuildSettings.strengths must be positive relative strengths")
        if not 1 <= self.min_sentences <= self.max_sentences:
            raise ValueError("need 1 <= min_sentences <= max_sentences")
        if self.answers_per_prompt < 1 or self.attempts_per_prompt < 1:
            raise ValueError("answers_per_prompt and attempts_per_prompt must be >= 1")
        if self.offtopic_max_cosine is not None and not -1.0 <= self.offtopic_max_cosine <= 1.0:
            raise ValueError("offtopic_max_cosine must be a cosine in [-1, 1] (or None for no check)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BuildReport:
    """What the build kept and dropped, with reasons (counts)."""

    n_prompts: int = 0
    n_answers_generated: int = 0
    n_answers_kept: int = 0
    n_openings_generated: int = 0
    n_openings_kept: int = 0
    n_self_correction: int = 0
    n_normal: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text_problem(text: str, min_words: int) -> str | None:
    from esr_analysis.judge.restart import has_restart
    from esr_analysis.metrics import is_degraded

    if len(text.split()) < min_words:
        return "too_short"
    if is_degraded(text):
        return "degenerate"
    if has_restart(text):
        return "restart_language"
    if _REFUSAL.search(text):
        return "refusal"
    letters = sum(c.isalpha() for c in text)
    if letters < 0.6 * len(text.replace(" ", "")):
        return "not_prose"
    return None


def answer_problem(text: str, stopped_by_eos: bool, min_words: int = 15, *, keep_cut: bool = False) -> str | None:
    """Why an unsteered answer is unfit as a full-length on-topic answer, or ``None`` if it is fit. With
    ``keep_cut`` an answer cut at the token limit is fit (it is then trained as a prefix, without end of turn)."""
    if not stopped_by_eos and not keep_cut:
        return "cut_at_token_limit"
    return _text_problem(text.strip(), min_words)


def first_sentences(text: str, k: int) -> tuple[str, int]:
    """The first ``k`` complete sentences of ``text`` (ending in ``.``, ``!`` or ``?``) and how many it found
    (fewer than ``k`` if the text has fewer complete sentences)."""
    found = [m.group(0).strip() for m in _SENTENCE.finditer(text.strip())][:k]
    return " ".join(found), len(found)


def opening_problem(opening: str, n_sentences: int, min_sentences: int) -> str | None:
    """Why a cut steered opening is unfit (too few sentences, or an answer's text checks), else ``None``."""
    if n_sentences < min_sentences:
        return "too_few_sentences"
    problem = _text_problem(opening, 8)
    if problem is None and len(set(s.strip().lower() for s in re.split(r"[.!?]", opening) if s.strip())) < \
            min_sentences:
        problem = "repeated_sentences"
    return problem


def _answers(lm: Any, prompts: Sequence[str], s: BuildSettings, report: BuildReport,
             progress: bool) -> dict[str, list[tuple[str, bool]]]:
    from esr_analysis.steering import SamplingSettings, generate

    rows = [p for p in prompts for _ in range(s.answers_per_prompt)]
    seeds = [derive_seed("finetune-answer", s.seed, p, j) for p in prompts for j in range(s.answers_per_prompt)]
    settings = SamplingSettings(temperature=s.temperature, repetition_penalty=s.repetition_penalty,
                                max_new_tokens=s.answer_max_new_tokens)
    results = generate(lm, rows, settings=settings, seeds=seeds, batch_size=s.batch_size, progress=progress)
    out: dict[str, list[tuple[str, bool]]] = {p: [] for p in prompts}
    for r in results:
        report.n_answers_generated += 1
        problem = answer_problem(r.text, r.stopped_by_eos, s.min_answer_words, keep_cut=s.keep_cut_answers) \
            if s.fluency_checks else (None if r.text.strip() else "empty")
        if problem:
            report.drop(f"answer_{problem}")
            continue
        report.n_answers_kept += 1
        out[r.prompt].append((r.text.strip(), r.stopped_by_eos))
    return out


def _openings(lm: Any, sae: Any, prompts: Sequence[str], s: BuildSettings, report: BuildReport,
              progress: bool) -> dict[str, tuple[str, int, float, float | None]]:
    from esr_analysis.steering import AddLatent, SamplingSettings, generate

    plan: list[tuple[str, int, float, int]] = []  # prompt, latent, strength, k sentences
    for p in prompts:
        rng = random.Random(derive_seed("finetune-opening", s.seed, p))
        for _ in range(s.attempts_per_prompt):
            plan.append((p, rng.choice(s.latents), rng.choice(s.strengths),
                         rng.randint(s.min_sentences, s.max_sentences)))
    interventions = [[AddLatent(latent=lat, strength=st, layer=s.layer, unit="relative")]
                     for _, lat, st, _ in plan]
    seeds = [derive_seed("finetune-opening-sample", s.seed, p, i) for i, (p, *_rest) in enumerate(plan)]
    settings = SamplingSettings(temperature=s.temperature, repetition_penalty=s.repetition_penalty,
                                max_new_tokens=s.opening_max_new_tokens)
    results = generate(lm, [p for p, *_ in plan], interventions=interventions, sae=sae, settings=settings,
                       seeds=seeds, batch_size=s.batch_size, progress=progress)
    candidates: dict[str, list[tuple[str, int, float]]] = {}
    for (p, lat, st, k), r in zip(plan, results, strict=True):
        report.n_openings_generated += 1
        opening, n = first_sentences(r.text, k)
        if s.fluency_checks:
            problem = opening_problem(opening, n, s.min_sentences)
        else:  # tests on random-init models: keep any non-empty text
            opening = opening or r.text.strip()
            problem = None if opening else "empty"
        if problem:
            report.drop(f"opening_{problem}")
            continue
        candidates.setdefault(p, []).append((opening, lat, st))
    cosines = _prompt_cosines(candidates) if s.offtopic_max_cosine is not None else {}
    out: dict[str, tuple[str, int, float, float | None]] = {}
    for p, cands in candidates.items():
        for i, (opening, lat, st) in enumerate(cands):
            cos = cosines.get((p, i))
            if s.offtopic_max_cosine is not None and cos is not None and cos > s.offtopic_max_cosine:
                report.drop("opening_on_topic")
                continue
            report.n_openings_kept += 1
            out[p] = (opening, lat, st, cos)
            break
    return out


def _prompt_cosines(candidates: dict[str, list[tuple[str, int, float]]]) -> dict[tuple[str, int], float]:
    """Cosine similarity (MiniLM sentence embeddings, the offline judge's) of each candidate opening with its
    prompt: the off-topic check of an opening (low = another subject)."""
    from esr_analysis.judge.offline import embed_texts, load_embedder

    keys = [(p, i) for p, cands in candidates.items() for i in range(len(cands))]
    if not keys:
        return {}
    prompts = list(candidates)
    emb = load_embedder()
    pv = dict(zip(prompts, embed_texts(emb, prompts), strict=True))
    ov = embed_texts(emb, [candidates[p][i][0] for p, i in keys])
    return {k: float(pv[k[0]] @ v) for k, v in zip(keys, ov, strict=True)}


def build_examples(lm: Any, sae: Any, prompts: Sequence[str], acknowledgements: Sequence[str],
                   settings: BuildSettings, *, progress: bool = True) -> tuple[list[Example], list[Example],
                                                                               BuildReport]:
    """``(self_correction, normal, report)`` built from ``lm``'s own text (module docstring).

    Bad settings, an empty prompt list or an empty acknowledgement set raise ``ValueError`` before any
    generation.
    """
    settings.check()
    prompts = list(dict.fromkeys(prompts))
    if not prompts:
        raise ValueError("no training prompts")
    if not acknowledgements:
        raise ValueError("no acknowledgement sentences")
    report = BuildReport(n_prompts=len(prompts))
    answers = _answers(lm, prompts, settings, report, progress)
    with_answer = [p for p in prompts if answers[p]]
    openings = _openings(lm, sae, with_answer, settings, report, progress)
    tok = lm.tokenizer
    sc: list[Example] = []
    normal: list[Example] = []
    for p in prompts:
        kept = answers[p]
        if p in openings:
            opening, lat, st, cos = openings[p]
            rng = random.Random(derive_seed("finetune-ack", settings.seed, p))
            ack = rng.choice(list(acknowledgements))
            answer, complete = kept[0]
            sc.append(self_correction_example(tok, p, opening, ack, answer, complete=complete, meta={
                "prompt": p, "latent": lat, "strength_relative": st, "layer": settings.layer,
                "opening": opening, "opening_prompt_cosine": cos, "acknowledgement": ack,
                "answer_complete": complete}))
            if settings.answers_per_prompt > 1:
                kept = kept[1:]
        normal.extend(normal_example(tok, p, a, complete=c, meta={"prompt": p, "answer_complete": c})
                      for a, c in kept)
    report.n_self_correction, report.n_normal = len(sc), len(normal)
    log.info("built %d self-correction and %d normal examples from %d prompts (dropped: %s)",
             len(sc), len(normal), len(prompts), report.dropped)
    return sc, normal, report
