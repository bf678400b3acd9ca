"""Calibration helpers for the offline judge (pure numpy; used by ``scripts/calibrate_offline_judge.py``).

Data: ``data/judge_calibration/{train,heldout}.jsonl``, one item per line with ``prompt``, ``answer`` (an
on-topic answer written for that prompt) and ``label`` (an SAE-style description of the answer's topic).

Pairs built from a split (:func:`make_pairs`):

* **on-topic**: ``(prompt_i, answer_i)`` with the label of another item as the unrelated latent label
  (the answer does not drift toward it); target 1;
* **mismatched**: ``(prompt_i, answer_j)`` for ``j != i`` with ``label_j`` as the latent label (the
  answer is entirely about the latent's topic, like a fully derailed steered response); target 0;
* **mixed** (optional): the first ``k`` sentences of ``answer_i`` followed by the last sentences of a
  mismatched ``answer_j``, with ``label_j``, for every ``k`` that leaves both parts non-empty (a response
  that drifts mid-way without restarting); target = the on-topic fraction of its words.

The calibration maps features to ``P(on-topic)`` with a logistic regression (:func:`fit_logistic`, which
accepts fractional targets for the mixed pairs), whose probability times 100 is the offline score. Quality on held-out pairs: ROC AUC (:func:`roc_auc`, the
probability that an on-topic pair outscores a mismatched one), Brier score and a reliability table.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CalibrationItem:
    """One written (prompt, on-topic answer, topic label) item."""

    id: str
    prompt: str
    answer: str
    label: str


@dataclass(frozen=True)
class Pair:
    """A (prompt, answer, latent label) pair with its target: 1 on-topic, 0 mismatched, in between for a
    mixed answer (its on-topic word fraction)."""

    prompt: str
    answer: str
    label: str
    target: float


def load_items(path: str | Path) -> list[CalibrationItem]:
    """Items of one JSONL file; a malformed line raises ``ValueError`` naming the file and line."""
    items = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            items.append(CalibrationItem(rec["id"], rec["prompt"], rec["answer"], rec["label"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: not a calibration item ({exc})") from None
    return items


def sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` or ``?`` followed by whitespace."""
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def make_pairs(
    items: Sequence[CalibrationItem], *, all_mismatches: bool, mixed: bool = False, seed: int = 0
) -> list[Pair]:
    """On-topic, mismatched and (with ``mixed``) mixed pairs (module docstring). With ``all_mismatches``
    every ``i != j`` pair is a mismatched pair; otherwise one per prompt, from a seeded derangement (the
    derangement also chooses the partner of the mixed pairs)."""
    n = len(items)
    if n < 2:
        raise ValueError("need at least 2 items to build mismatched pairs")
    rng = random.Random(seed)
    pairs = []
    for i, it in enumerate(items):
        other = items[(i + 1 + rng.randrange(n - 1)) % n]
        pairs.append(Pair(it.prompt, it.answer, other.label, 1))
    if all_mismatches:
        js = [[j for j in range(n) if j != i] for i in range(n)]
    else:
        perm = list(range(n))
        while any(p == i for i, p in enumerate(perm)):
            rng.shuffle(perm)
        js = [[perm[i]] for i in range(n)]
    for i, it in enumerate(items):
        for j in js[i]:
            pairs.append(Pair(it.prompt, items[j].answer, items[j].label, 0))
    if mixed:
        perm = list(range(n))
        while any(p == i for i, p in enumerate(perm)):
            rng.shuffle(perm)
        for i, it in enumerate(items):
            own, theirs = sentences(it.answer), sentences(items[perm[i]].answer)
            for k in range(1, min(len(own), len(theirs) + 1)):
                head, tail = " ".join(own[:k]), " ".join(theirs[k:] or theirs[-1:])
                n_head, n_tail = len(head.split()), len(tail.split())
                pairs.append(
                    Pair(it.prompt, f"{head} {tail}", items[perm[i]].label, n_head / (n_head + n_tail))
                )
    return pairs


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, balance: bool = True, l2: float = 1e-3, iters: int = 100
) -> tuple[float, np.ndarray]:
    """Logistic regression ``P(y=1|x) = sigmoid(b0 + x @ b)`` fit by Newton's method on the cross-entropy,
    with targets ``y`` in [0, 1] (fractional targets allowed), a small ridge ``l2`` on ``b`` and, when
    ``balance``, weights that give each group (y == 1, y == 0, fractional y) the same total weight.
    Returns ``(b0, b)``."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if np.any((y < 0) | (y > 1)) or not (np.any(y == 1) and np.any(y == 0)):
        raise ValueError("y must lie in [0, 1] and contain both 0 and 1")
    w = np.ones_like(y)
    if balance:
        groups = [y == 1, y == 0, (y > 0) & (y < 1)]
        present = [g for g in groups if g.any()]
        for g in present:
            w[g] = len(y) / (len(present) * g.sum())
    a = np.hstack([np.ones((len(x), 1)), x])
    beta = np.zeros(a.shape[1])
    ridge = np.full(a.shape[1], l2)
    ridge[0] = 0.0
    for _ in range(iters):
        p = sigmoid(a @ beta)
        grad = a.T @ (w * (p - y)) + ridge * beta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(beta[0]), beta[1:]


def roc_auc(scores: Sequence[float], targets: Sequence[float]) -> float:
    """ROC AUC: P(score of a random positive (target 1) > score of a random negative (target 0)), ties
    counting 1/2; fractional targets are ignored."""
    s = np.asarray(scores, dtype=float)
    t = np.asarray(targets, dtype=float)
    pos, neg = s[t == 1], s[t == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("need both positives and negatives")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def brier(probs: Sequence[float], targets: Sequence[int], *, balance: bool = True) -> float:
    """Mean squared error of probabilities against 0/1 targets, class-balanced (each class weighs 1/2)
    when ``balance``."""
    p = np.asarray(probs, dtype=float)
    t = np.asarray(targets, dtype=float)
    if not balance:
        return float(np.mean((p - t) ** 2))
    return float(0.5 * np.mean((p[t == 1] - 1) ** 2) + 0.5 * np.mean(p[t == 0] ** 2))


def reliability_table(
    probs: Sequence[float], targets: Sequence[int], bins: int = 5
) -> list[dict[str, float]]:
    """Per probability bin: ``lo``, ``hi``, ``n``, mean predicted probability and observed on-topic rate,
    class-balanced (positives weighted so that both classes have equal total weight)."""
    p = np.asarray(probs, dtype=float)
    t = np.asarray(targets, dtype=float)
    w = np.where(t == 1, 0.5 / max(t.sum(), 1), 0.5 / max((1 - t).sum(), 1))
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for k in range(bins):
        lo, hi = edges[k], edges[k + 1]
        m = (p >= lo) & ((p < hi) if k < bins - 1 else (p <= hi))
        if not m.any():
            continue
        out.append(
            {
                "lo": round(float(lo), 3),
                "hi": round(float(hi), 3),
                "n": int(m.sum()),
                "mean_predicted": round(float(np.average(p[m], weights=w[m])), 4),
                "observed_on_topic": round(float(np.average(t[m], weights=w[m])), 4),
            }
        )
    return out
