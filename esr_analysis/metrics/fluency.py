"""Fluency of a response: repetition, distinct bigrams, compressibility and the degenerate flag.

One place for the degeneracy measures that the offline judge, the per-trial store and the threshold
calibration share. Pure Python (``re``, ``zlib``); no model is needed unless a tokenizer is passed.

Definitions
-----------
* **Tokens**: by default the lower-cased words and punctuation runs of the text
  (``\\w+`` or a run of non-space, non-word characters, so ```` ``` ```` counts as a token); with a
  ``tokenizer`` (anything with ``encode(text, add_special_tokens=False)``, e.g. a Hugging Face
  tokenizer), its token ids.
* **repetition_rate**: the share of the token 4-grams that repeat a 4-gram seen earlier in the same
  text, ``1 - distinct_4grams / 4grams`` (0 for text with fewer than 4 tokens). Ordinary prose is near 0;
  a phrase loop approaches 1.
* **distinct_2**: ``distinct bigrams / bigrams`` (1.0 for text with fewer than 2 tokens).
* **compression_ratio**: UTF-8 bytes of the text divided by the bytes of its ``zlib`` compression
  (level 9); higher is more repetitive. Short texts compress badly (ratio below 1), so the rule below only
  reads it for texts of at least :data:`COMPRESSION_MIN_BYTES` bytes.
* **word_share**: the share of tokens that contain a letter (default tokenizer only; 1.0 with a
  tokenizer). Runs of markdown fences or symbols have a low word share.
* **doubled_words**: the number of places where a word (lower-cased, letters only, at least 2 letters)
  directly repeats the previous one ("to be be processed"); **doubled_word_rate** that number over the
  text's words. Fluent prose almost never doubles a word; the grammar collapse of steered text ("be be",
  "fit fit") does it often, in runs shorter than the paper's 5.
* **degenerate** (:func:`is_degenerate`): any of

  - the paper's degraded rule (:func:`esr_analysis.metrics.definitions.is_degraded`: >= 5 identical
    consecutive words longer than 1 character), on the raw text or on its lower-cased words;
  - with at least :data:`MIN_TOKENS` tokens: ``repetition_rate >= REPETITION_MAX``,
    ``distinct_2 < DISTINCT_2_MIN`` or ``word_share < WORD_SHARE_MIN``;
  - with at least :data:`COMPRESSION_MIN_BYTES` bytes: ``compression_ratio > COMPRESSION_MAX``;
  - ``doubled_words >= DOUBLED_MIN`` and ``doubled_word_rate >= DOUBLED_RATE_MIN`` (fluency-v2).

The thresholds are module constants (recorded in :data:`FLUENCY_VERSION`); they were checked against
the labelled judge set's development split (``data/judge_eval/judge_set.jsonl``), never its held-out
split.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from esr_analysis.metrics.definitions import DEGRADED_MIN_RUN, is_degraded

FLUENCY_VERSION = "fluency-v2"
REPEAT_N = 4
MIN_TOKENS = 12
REPETITION_MAX = 0.5
DISTINCT_2_MIN = 0.4
WORD_SHARE_MIN = 0.3
COMPRESSION_MIN_BYTES = 200
COMPRESSION_MAX = 3.0
DOUBLED_MIN = 2
DOUBLED_RATE_MIN = 0.02

_TOKEN = re.compile(r"\w+|[^\w\s]+")
_WORD = re.compile(r"[A-Za-z0-9]+")
_LETTER = re.compile(r"[^\W\d_]")
_ALPHA_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class FluencyMeasures:
    """The fluency measures of one text (definitions in the module docstring)."""

    repetition_rate: float
    distinct_2: float
    compression_ratio: float
    degenerate: bool
    n_tokens: int = 0
    word_share: float = 1.0
    doubled_words: int = 0
    doubled_word_rate: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The measures as a JSON-ready dict (floats rounded to 4 digits)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 4)
        return out


def tokens_of(text: str, tokenizer: Any = None) -> list[Any]:
    """The tokens the measures count (module docstring): default word/punctuation tokens, or ``tokenizer``
    ids."""
    if tokenizer is None:
        return _TOKEN.findall(text.lower())
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:
        ids = tokenizer.encode(text)
    return list(ids)


def repeated_ngram_share(tokens: Sequence[Any], n: int = REPEAT_N) -> float:
    """``1 - distinct n-grams / n-grams`` (0.0 when there are no n-grams)."""
    grams = list(zip(*(tokens[i:] for i in range(n)), strict=False))
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(tokens: Sequence[Any], n: int = 2) -> float:
    """``distinct n-grams / n-grams`` (1.0 when there are no n-grams)."""
    grams = list(zip(*(tokens[i:] for i in range(n)), strict=False))
    return len(set(grams)) / len(grams) if grams else 1.0


def doubled_words(text: str) -> tuple[int, int]:
    """``(doubled, words)``: how many words (lower-cased letter runs of at least 2 letters among all letter
    runs) directly repeat the previous word, and how many letter runs the text has."""
    words = [w.lower() for w in _ALPHA_WORD.findall(text)]
    doubled = sum(1 for a, b in zip(words, words[1:], strict=False) if a == b and len(a) > 1)
    return doubled, len(words)


def compression_ratio(text: str) -> float:
    """UTF-8 bytes over ``zlib`` (level 9) compressed bytes; 0.0 for the empty text."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw, 9)) if raw else 0.0


def fluency_measures(text: str, tokenizer: Any = None) -> FluencyMeasures:
    """The :class:`FluencyMeasures` of ``text`` (definitions in the module docstring).

    Raises:
        TypeError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"fluency_measures needs a str, got {type(text).__name__}")
    tokens = tokens_of(text, tokenizer)
    rep = repeated_ngram_share(tokens)
    d2 = distinct_n(tokens, 2)
    ratio = compression_ratio(text)
    if tokenizer is None and tokens:
        word_share = sum(1 for t in tokens if _LETTER.search(t)) / len(tokens)
    else:
        word_share = 1.0
    doubled, n_words = doubled_words(text)
    doubled_rate = doubled / n_words if n_words else 0.0
    degenerate = (
        (doubled >= DOUBLED_MIN and doubled_rate >= DOUBLED_RATE_MIN)
        or is_degraded(text, DEGRADED_MIN_RUN)
        or is_degraded(" ".join(w.lower() for w in _WORD.findall(text)), DEGRADED_MIN_RUN)
        or (
            len(tokens) >= MIN_TOKENS
            and (rep >= REPETITION_MAX or d2 < DISTINCT_2_MIN or word_share < WORD_SHARE_MIN)
        )
        or (len(text.encode("utf-8")) >= COMPRESSION_MIN_BYTES and ratio > COMPRESSION_MAX)
    )
    return FluencyMeasures(
        repetition_rate=rep,
        distinct_2=d2,
        compression_ratio=ratio,
        degenerate=bool(degenerate),
        n_tokens=len(tokens),
        word_share=word_share,
        doubled_words=doubled,
        doubled_word_rate=doubled_rate,
    )


def is_degenerate(text: str, tokenizer: Any = None) -> bool:
    """Whether ``text`` is degenerate (``fluency_measures(text, tokenizer).degenerate``)."""
    return fluency_measures(text, tokenizer).degenerate
