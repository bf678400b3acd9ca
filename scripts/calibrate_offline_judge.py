"""Fit the offline judge's calibration and report its quality on held-out pairs.

Reads ``data/judge_calibration/train.jsonl`` and ``heldout.jsonl`` (hand-written prompt / on-topic answer /
topic label items), builds on-topic, mismatched and mixed pairs (:mod:`esr_analysis.judge.calibration`),
embeds them with MiniLM, fits two logistic models of ``P(on-topic)`` on the train pairs

* ``prompt_only``: on ``cos_prompt`` (prompt vs answer cosine);
* ``with_label``: on ``cos_prompt`` and ``cos_label`` (latent label vs answer cosine);

and writes ``data/judge_calibration/offline_calibration.json`` with the coefficients and, on the held-out
pairs, the AUC (on-topic vs mismatched), class-balanced Brier score, accuracy at score 50, mean scores per
class, a reliability table, and for mixed answers the mean absolute error of score/100 against the
on-topic word fraction and its Spearman correlation.

Usage: ``python scripts/calibrate_offline_judge.py [--out PATH]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from esr_analysis.judge.calibration import (  # noqa: E402
    Pair,
    brier,
    fit_logistic,
    load_items,
    make_pairs,
    reliability_table,
    roc_auc,
    sigmoid,
)
from esr_analysis.judge.offline import EMBEDDING_MODEL, embed_texts, load_embedder  # noqa: E402

DATA = REPO / "data" / "judge_calibration"


def features(embedder: object, pairs: list[Pair]) -> np.ndarray:
    """``[n, 2]`` array of (cos_prompt, cos_label) for the pairs."""
    texts = sorted({t for p in pairs for t in (p.prompt, p.answer, p.label)})
    index = {t: i for i, t in enumerate(texts)}
    emb = embed_texts(embedder, texts)
    return np.array(
        [
            [emb[index[p.prompt]] @ emb[index[p.answer]], emb[index[p.label]] @ emb[index[p.answer]]]
            for p in pairs
        ]
    )


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def evaluate(probs: np.ndarray, y: np.ndarray) -> dict[str, object]:
    mixed = (y > 0) & (y < 1)
    clean = ~mixed
    probs_m, y_m = probs[mixed], y[mixed]
    probs, y = probs[clean], y[clean]
    return {
        "auc": round(roc_auc(probs, y), 4),
        "brier_balanced": round(brier(probs, y), 4),
        "accuracy_at_50_balanced": round(
            float(0.5 * np.mean(probs[y == 1] >= 0.5) + 0.5 * np.mean(probs[y == 0] < 0.5)), 4
        ),
        "mean_score_on_topic": round(float(100 * probs[y == 1].mean()), 2),
        "mean_score_mismatched": round(float(100 * probs[y == 0].mean()), 2),
        "reliability": reliability_table(probs, y, bins=5),
        "mixed_pairs": int(mixed.sum()),
        "mixed_mean_on_topic_fraction": round(float(y_m.mean()), 4),
        "mixed_mean_score": round(float(100 * probs_m.mean()), 2),
        "mixed_mae_vs_fraction": round(float(np.mean(np.abs(probs_m - y_m))), 4),
        "mixed_spearman_vs_fraction": round(spearman(probs_m, y_m), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA / "offline_calibration.json")
    args = parser.parse_args()

    train_items = load_items(DATA / "train.jsonl")
    held_items = load_items(DATA / "heldout.jsonl")
    overlap = {i.prompt for i in train_items} & {i.prompt for i in held_items}
    if overlap:
        raise SystemExit(f"train and held-out share prompts: {sorted(overlap)[:3]}")
    train = make_pairs(train_items, all_mismatches=True, mixed=True, seed=0)
    held = make_pairs(held_items, all_mismatches=True, mixed=True, seed=1)
    embedder = load_embedder("cpu")
    x_tr, x_ho = features(embedder, train), features(embedder, held)
    y_tr = np.array([p.target for p in train], dtype=float)
    y_ho = np.array([p.target for p in held], dtype=float)

    models, heldout = {}, {}
    for name, cols in (("prompt_only", [0]), ("with_label", [0, 1])):
        b0, b = fit_logistic(x_tr[:, cols], y_tr, balance=True)
        models[name] = {
            "features": ["cos_prompt", "cos_label"][: len(cols)],
            "intercept": round(b0, 6),
            "coef": [round(float(c), 6) for c in b],
        }
        probs_ho = sigmoid(b0 + x_ho[:, cols] @ b)
        probs_tr = sigmoid(b0 + x_tr[:, cols] @ b)
        heldout[name] = evaluate(probs_ho, y_ho)
        heldout[name]["train_auc"] = round(roc_auc(probs_tr, y_tr), 4)
    heldout["raw_cosine_auc"] = round(roc_auc(x_ho[:, 0], y_ho), 4)

    digest = hashlib.sha256()
    for f in ("train.jsonl", "heldout.jsonl"):
        digest.update((DATA / f).read_bytes())
    out = {
        "version": "offline-calibration-v1",
        "embedding_model": EMBEDDING_MODEL,
        "data_sha256": digest.hexdigest(),
        "models": models,
        "train": {
            "items": len(train_items),
            "on_topic_pairs": int((y_tr == 1).sum()),
            "mismatched_pairs": int((y_tr == 0).sum()),
            "mixed_pairs": int(((y_tr > 0) & (y_tr < 1)).sum()),
        },
        "heldout": {
            "items": len(held_items),
            "on_topic_pairs": int((y_ho == 1).sum()),
            "mismatched_pairs": int((y_ho == 0).sum()),
            **heldout,
        },
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for name in models:
        h = heldout[name]
        print(
            f"{name:12s} coef={models[name]['coef']} b0={models[name]['intercept']:.3f} | held-out AUC={h['auc']:.4f} "
            f"Brier(bal)={h['brier_balanced']:.4f} acc@50={h['accuracy_at_50_balanced']:.3f} "
            f"mean score on-topic={h['mean_score_on_topic']:.1f} mismatched={h['mean_score_mismatched']:.1f} | "
            f"mixed (on-topic fraction {h['mixed_mean_on_topic_fraction']:.2f}): mean score {h['mixed_mean_score']:.1f}, "
            f"MAE {h['mixed_mae_vs_fraction']:.3f}, Spearman {h['mixed_spearman_vs_fraction']:.3f}"
        )
    print(f"raw cosine AUC (held-out) = {heldout['raw_cosine_auc']:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
