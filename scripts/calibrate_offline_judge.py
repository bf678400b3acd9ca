"""Fit the offline judge's calibration (v2) on the TRAINING split of the labelled judge set.

Reads the development data, ``data/judge_eval/judge_set.jsonl`` (built by ``scripts/build_judge_set.py``, all
``train``) and the second held-out split ``data/judge_eval/heldout_fresh.jsonl`` (development data since the
judge v3's errors on it were read); the third held-out split ``heldout3.jsonl`` is never read here. Every
labelled attempt (the item's true attempts, each on topic or not) is one example. Its features
(:func:`esr_analysis.judge.offline.attempt_features`: MiniLM cosine to the prompt, to the prompt without
the prompt's own words and to the latent label, the off-topic word share, repetition rate, distinct-2,
word share) feed two class-balanced logistic models of ``P(on-topic)``:

* ``prompt_only``: ``cos_prompt``, ``cos_noecho``, ``off_topic_word_share``, ``repetition_rate`` and
  ``distinct_2`` (used when no latent label is given);
* ``with_label``: the same plus ``cos_label``.

Candidate signals are compared by their training AUC and by a 5-fold cross-validated AUC with the folds
split by prompt (on-topic vs not, attempt level; also on-topic vs the ``drift`` items alone), and written
with the coefficients to ``data/judge_calibration/offline_calibration.json``. The held-out numbers come
from ``scripts/evaluate_judge.py``.

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

from esr_analysis.files import atomic_write_json  # noqa: E402
from esr_analysis.judge.calibration import fit_logistic, roc_auc, sigmoid  # noqa: E402
from esr_analysis.judge.offline import (  # noqa: E402
    EMBEDDING_MODEL,
    attempt_features,
    embed_texts,
    embedding_inputs,
    load_embedder,
    relevance_features,
)

JUDGE_SET = REPO / "data" / "judge_eval" / "judge_set.jsonl"
SECOND_SPLIT = REPO / "data" / "judge_eval" / "heldout_fresh.jsonl"  # development data since its errors were read
OUT = REPO / "data" / "judge_calibration" / "offline_calibration.json"
# word_share is left out of the models: on the development split its fitted sign was negative (markdown
# lists of on-topic answers have a lower word share than fluent drift), the opposite of what it measures;
# symbol runs are handled by the degenerate cap instead
FLUENCY = ["repetition_rate", "distinct_2", "code_share"]
RELEVANCE = ["cos_prompt", "cos_noecho", "off_topic_word_share"]
MODELS = {"prompt_only": [*RELEVANCE, *FLUENCY], "with_label": [*RELEVANCE, "cos_label", *FLUENCY]}
CANDIDATES = {
    "cos_prompt": ["cos_prompt"],
    "cos_prompt+cos_label": ["cos_prompt", "cos_label"],
    "cos_prompt+fluency": ["cos_prompt", *FLUENCY],
    "relevance+fluency without code_share (v3's prompt_only)": [*RELEVANCE, "repetition_rate", "distinct_2"],
    "relevance+fluency+word_share": [*RELEVANCE, *FLUENCY, "word_share"],
    "cos_prompt+cos_noecho": ["cos_prompt", "cos_noecho"],
    "cos_prompt+off_topic_word_share": ["cos_prompt", "off_topic_word_share"],
    "relevance": RELEVANCE,
    "relevance+fluency (prompt_only)": MODELS["prompt_only"],
    "relevance+cos_label+fluency (with_label)": MODELS["with_label"],
}
FOLDS = 5


def training_examples() -> tuple[list[dict], list[float], list[str], list[str]]:
    """Feature dicts, targets, prompts and categories of every attempt of the train split."""
    items = [json.loads(line) for path in (JUDGE_SET, SECOND_SPLIT)
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [it for it in items if it["split"] in ("train", "fresh")]
    rows = [(it, a) for it in train for a in it["attempts"]]
    ordered = sorted({t for it, a in rows for t in embedding_inputs(it["prompt"], it["latent_label"], a["text"])})
    emb = embed_texts(load_embedder(), ordered)
    vec = {t: emb[i] for i, t in enumerate(ordered)}
    feats = [attempt_features(relevance_features(vec, it["prompt"], it["latent_label"], a["text"]), a["text"],
                              it["prompt"]) for it, a in rows]
    targets = [1.0 if a["on_topic"] else 0.0 for _, a in rows]
    return feats, targets, [it["prompt"] for it, _ in rows], [it["category"] for it, _ in rows]


def _matrix(feats: list[dict], names: list[str]) -> np.ndarray:
    return np.array([[float(f[n]) for n in names] for f in feats])


def fit(feats: list[dict], targets: list[float], names: list[str]) -> tuple[dict, float]:
    x = _matrix(feats, names)
    b0, b = fit_logistic(x, np.array(targets), balance=True, l2=0.1)
    auc = roc_auc(sigmoid(b0 + x @ b).tolist(), targets)
    return {"features": names, "intercept": round(float(b0), 6), "coef": [round(float(c), 6) for c in b]}, auc


def cross_validated(feats: list[dict], targets: list[float], prompts: list[str], cats: list[str],
                    names: list[str]) -> dict[str, float]:
    """Out-of-fold AUCs with :data:`FOLDS` folds split by prompt: all attempts, and on-topic vs drift."""
    order = sorted(set(prompts))
    fold = np.array([order.index(p) % FOLDS for p in prompts])
    x, y = _matrix(feats, names), np.array(targets)
    out = np.zeros(len(y))
    for k in range(FOLDS):
        b0, b = fit_logistic(x[fold != k], y[fold != k], balance=True, l2=0.1)
        out[fold == k] = sigmoid(b0 + x[fold == k] @ b)
    keep = [i for i, c in enumerate(cats) if y[i] == 1 or c == "drift"]
    return {"auc": round(roc_auc(out.tolist(), targets), 4),
            "auc_on_vs_drift": round(roc_auc(out[keep].tolist(), y[keep].tolist()), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not JUDGE_SET.is_file():
        raise SystemExit(f"{JUDGE_SET} is missing: run `python scripts/build_judge_set.py generate` and "
                         "`python scripts/build_judge_set.py assemble` first")
    feats, targets, prompts, cats = training_examples()
    candidates = {name: {"train_auc": round(fit(feats, targets, cols)[1], 4),
                         **cross_validated(feats, targets, prompts, cats, cols)} for name, cols in CANDIDATES.items()}
    models, train_auc = {}, {}
    for name, cols in MODELS.items():
        models[name], auc = fit(feats, targets, cols)
        train_auc[name] = round(auc, 4)
    result = {
        "version": "offline-calibration-v3",
        "embedding_model": EMBEDDING_MODEL,
        "data": [str(p.relative_to(REPO)) for p in (JUDGE_SET, SECOND_SPLIT)],
        "data_sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in (JUDGE_SET, SECOND_SPLIT)],
        "split_used": "train + fresh (development)",
        "models": models,
        "train": {
            "attempts": len(targets),
            "on_topic_attempts": int(sum(targets)),
            "auc": train_auc,
            "candidate_signal_auc": candidates,
        },
        "command": "python scripts/calibrate_offline_judge.py",
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result["train"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
