"""Fine-tuning examples as data: segments with a loss flag, token-level loss masks, the paper's mix formula.

Definitions (``docs/method.md#organism``)
-----------------------------------------
* An **example** is a sequence of text **segments**, each with ``trained`` true or false; the text of the
  example is the concatenation of its segments. This is the authors' axolotl ``input_output`` format
  (``{"segments": [{"label": bool, "text": str}, ...]}``), which :func:`read_segments_jsonl` reads and
  :func:`write_segments_jsonl` writes.
* A **self-correction** example is ``[chat prefix + off-topic opening + " "]`` (no loss) followed by
  ``[acknowledgement + " " + on-topic answer + end of turn]`` (trained). A **normal** example is
  ``[chat prefix]`` (no loss) followed by ``[answer + end of turn]`` (trained). The chat prefix is the user
  turn rendered by the chat template with the generation prompt (:func:`esr_analysis.models.chat.format_chat`);
  the **end of turn** is the text the template closes an assistant turn with (``<|im_end|>`` for Qwen2.5).
* **Loss mask**: each segment is tokenized on its own (no special tokens added) and the token ids are
  concatenated; ``labels`` equal the ids on trained segments and ``-100`` elsewhere, which transformers'
  causal-LM loss ignores. Sequences longer than ``max_length`` are cut at the end.
* **Mix** at self-correction fraction ``p`` (the paper's exp 4): ``n_sc = int(N * p)`` of the ``N``
  self-correction examples and ``n_normal = min(int(n_sc * (1 - p) / p), N_normal)`` normal ones, each drawn
  without replacement with ``random.Random(seed)``, then shuffled together.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from esr_analysis.files import atomic_write_text

__all__ = [
    "IGNORE_INDEX",
    "Example",
    "Segment",
    "TokenizedExample",
    "end_of_turn_text",
    "load_acknowledgements",
    "mix_counts",
    "mix_examples",
    "normal_example",
    "read_segments_jsonl",
    "self_correction_example",
    "tokenize_example",
    "write_segments_jsonl",
]

IGNORE_INDEX = -100
"""Label of positions that get no loss (transformers' ``CrossEntropyLoss`` ignore index)."""

Kind = Literal["self_correction", "normal", "segments"]


@dataclass(frozen=True)
class Segment:
    """A piece of example text and whether its tokens are trained (get a loss)."""

    text: str
    trained: bool


@dataclass(frozen=True)
class Example:
    """One training example: its segments in order, its kind and free-form provenance (``meta``)."""

    segments: tuple[Segment, ...]
    kind: Kind = "segments"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)

    def to_json(self) -> dict[str, Any]:
        """The axolotl ``segments`` row, plus ``kind`` and ``meta`` (axolotl ignores extra keys)."""
        return {"segments": [{"label": s.trained, "text": s.text} for s in self.segments],
                "kind": self.kind, "meta": self.meta}


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids and labels (``IGNORE_INDEX`` where no loss) of one example, same length; optionally a steering
    vector (``[d_model]`` tensor) added to the residual stream after decoder layer ``steer_layer`` while the
    example trains: at positions ``0 .. steer_until - 1``, or at every position when ``steer_until`` is None."""

    input_ids: list[int]
    labels: list[int]
    steer_layer: int | None = None
    steer_vector: Any = None
    steer_until: int | None = None

    @property
    def first_trained(self) -> int:
        """Index of the first token that gets a loss (``len(labels)`` when none does)."""
        return next((i for i, t in enumerate(self.labels) if t != IGNORE_INDEX), len(self.labels))

    @property
    def n_trained(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def end_of_turn_text(tokenizer: Any) -> str:
    """The text the chat template puts right after an assistant message (trailing whitespace dropped), e.g.
    ``<|im_end|>`` for Qwen2.5; the tokenizer's EOS token when there is no template or nothing follows."""
    marker = "\u2063ESRMARK\u2063"
    template = getattr(tokenizer, "chat_template", None)
    if template:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False)
        tail = text.split(marker, 1)[1].rstrip() if marker in text else ""
        if tail:
            return tail
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise ValueError("the tokenizer has neither a chat template that closes assistant turns nor an EOS token")
    return str(eos)


def _prefix(tokenizer: Any, prompt: str) -> str:
    from esr_analysis.models.chat import format_chat

    return format_chat(tokenizer, prompt, chat=bool(getattr(tokenizer, "chat_template", None)))[0]


def _check_text(name: str, text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return text.strip()


def self_correction_example(tokenizer: Any, prompt: str, opening: str, acknowledgement: str, answer: str,
                            meta: dict[str, Any] | None = None, *, complete: bool = True) -> Example:
    """A self-correction example (module docstring): the opening is context, the recovery is trained.

    ``complete=False`` marks an answer cut at a token limit: it is trained without the end of turn, as a
    prefix of a full-length answer, so the model does not learn to stop early."""
    opening, acknowledgement, answer = (_check_text(n, t) for n, t in
                                        (("opening", opening), ("acknowledgement", acknowledgement),
                                         ("answer", answer)))
    return Example(
        segments=(Segment(_prefix(tokenizer, _check_text("prompt", prompt)) + opening + " ", False),
                  Segment(acknowledgement + " " + answer + (end_of_turn_text(tokenizer) if complete else ""),
                          True)),
        kind="self_correction", meta=dict(meta or {}))


def normal_example(tokenizer: Any, prompt: str, answer: str, meta: dict[str, Any] | None = None, *,
                   complete: bool = True) -> Example:
    """A normal example (module docstring): only the answer and the end of turn are trained (no end of turn
    for an answer cut at a token limit, ``complete=False``)."""
    return Example(
        segments=(Segment(_prefix(tokenizer, _check_text("prompt", prompt)), False),
                  Segment(_check_text("answer", answer) + (end_of_turn_text(tokenizer) if complete else ""), True)),
        kind="normal", meta=dict(meta or {}))


def tokenize_example(tokenizer: Any, example: Example, max_length: int | None = None) -> TokenizedExample:
    """Token ids and loss labels of ``example`` (module docstring); ``ValueError`` if nothing is trained."""
    ids: list[int] = []
    labels: list[int] = []
    for seg in example.segments:
        seg_ids = list(tokenizer(seg.text, add_special_tokens=False)["input_ids"])
        ids += seg_ids
        labels += seg_ids if seg.trained else [IGNORE_INDEX] * len(seg_ids)
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    out = TokenizedExample(ids, labels)
    if out.n_trained == 0:
        raise ValueError(f"example has no trained tokens (after cutting to {max_length}): {example.text[:80]!r}")
    return out


# --------------------------------------------------------------------------------------------------
# the mix


def mix_counts(n_self_correction: int, n_normal_available: int, fraction: float) -> tuple[int, int]:
    """``(n_sc, n_normal)`` of the paper's formula for self-correction fraction ``fraction`` in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"self-correction fraction must be in (0, 1], got {fraction}")
    if n_self_correction < 0 or n_normal_available < 0:
        raise ValueError("example counts must be >= 0")
    n_sc = int(n_self_correction * fraction)
    n_normal = min(int(n_sc * (1.0 - fraction) / fraction), n_normal_available)
    return n_sc, n_normal


def mix_examples(self_correction: Sequence[Example], normal: Sequence[Example], fraction: float,
                 seed: int = 42) -> list[Example]:
    """The training mix (module docstring): drawn without replacement with ``random.Random(seed)``, shuffled."""
    n_sc, n_normal = mix_counts(len(self_correction), len(normal), fraction)
    rng = random.Random(seed)
    rows = rng.sample(list(self_correction), n_sc) + rng.sample(list(normal), n_normal)
    rng.shuffle(rows)
    return rows


# --------------------------------------------------------------------------------------------------
# files


def read_segments_jsonl(path: str | Path) -> list[Example]:
    """Examples from an axolotl ``segments`` JSONL file (the authors' format; rows may carry ``kind``/``meta``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the line of a malformed row.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"segments file not found: {path}")
    out: list[Example] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            segs = tuple(Segment(str(s["text"]), bool(s["label"])) for s in row["segments"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not an axolotl segments row ({exc})") from exc
        if not segs or not any(s.trained for s in segs):
            raise ValueError(f"{path}:{n}: a row needs at least one segment with label true")
        kind = row.get("kind", "segments")
        if kind not in ("self_correction", "normal", "segments"):
            raise ValueError(f"{path}:{n}: unknown kind {kind!r}")
        out.append(Example(segs, kind=kind, meta=dict(row.get("meta") or {})))
    if not out:
        raise ValueError(f"segments file {path} holds no rows")
    return out


def write_segments_jsonl(path: str | Path, examples: Iterable[Example]) -> Path:
    """Write ``examples`` as axolotl ``segments`` JSONL (atomically); returns the path."""
    text = "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in examples)
    return atomic_write_text(Path(path), text)


def load_acknowledgements(path: str | Path | None = None) -> list[str]:
    """Acknowledgement sentences, one per line (``#`` comments and blank lines skipped); default: the shipped
    ``data/finetune/acknowledgements.txt``."""
    from esr_analysis.paths import DATA_DIR

    p = Path(path) if path is not None else DATA_DIR / "finetune" / "acknowledgements.txt"
    if not p.is_file():
        raise FileNotFoundError(f"acknowledgement file not found: {p}")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    out = list(dict.fromkeys(ln for ln in lines if ln and not ln.startswith("#")))
    if not out:
        raise ValueError(f"acknowledgement file {p} is empty")
    return out
