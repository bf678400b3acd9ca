"""Evaluate the offline judge on the labelled judge set; write ``data/results/judge_offline_v2.json``.

Grades the items of the two splits with ``make_judge("offline")`` and reports, per split:

* ``heldout``: the fourth held-out split ``data/judge_eval/heldout4.jsonl``
  (``scripts/build_fresh_heldout.py --split heldout4``), written and labelled before the judge v5 was
  evaluated on it; the one that counts;
* ``dev``: the development data: ``data/judge_eval/judge_set.jsonl`` (all ``train``, including the first
  held-out split), the second held-out split ``data/judge_eval/heldout_fresh.jsonl`` (its errors under the
  judge v3 were read on 2026-12-04) and the third, ``data/judge_eval/heldout3.jsonl`` (its one error under the
  judge v4 was read on 2026-12-05), so both became development data. The calibration is fit on the first two
  (``scripts/calibrate_offline_judge.py``); the judge's rules were analysed on all three.

Measures:

* ``attempt_count_accuracy``: share of items whose number of attempts equals the labelled number;
* ``false_split_rate``: share of ``restart_words`` items (on-topic answers with restart-like words, one
  attempt) split into more than one attempt; ``false_split_rate_on_topic`` the same for ``on_topic``;
* ``auc_on_vs_off``: ROC AUC of the first-attempt score, on-topic items (``on_topic``, ``restart_words``,
  ``steered_on_topic``) against off-topic ones (``mismatched``, ``drift``);
* ``degenerate_mean_score``: mean first-attempt score of ``degenerate`` items (0-100);
* ``restart_recall``: share of ``restart`` items split into exactly their two attempts, and
  ``restart_esr_rate`` the share of them whose last score beats the first (an ESR episode);
* ``mean_first_score`` per category; the targets and whether each is met.

Usage: ``python scripts/evaluate_judge.py [--out PATH]``; ``--dev-only`` grades the development split only
and writes nothing (for work on the judge, which must never look at the held-out split).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from esr_analysis.files import atomic_write_json  # noqa: E402
from esr_analysis.judge import GradeRequest, make_judge  # noqa: E402
from esr_analysis.judge.calibration import roc_auc  # noqa: E402
from esr_analysis.judge.offline import OFFLINE_VERSION  # noqa: E402

JUDGE_SET = REPO / "data" / "judge_eval" / "judge_set.jsonl"
SECOND_SPLIT = REPO / "data" / "judge_eval" / "heldout_fresh.jsonl"
THIRD_SPLIT = REPO / "data" / "judge_eval" / "heldout3.jsonl"
DEV = (JUDGE_SET, SECOND_SPLIT, THIRD_SPLIT)
HELDOUT = REPO / "data" / "judge_eval" / "heldout4.jsonl"
OUT = REPO / "data" / "results" / "judge_offline_v2.json"
ON = ("on_topic", "restart_words", "steered_on_topic")
OFF = ("mismatched", "drift")
TARGETS = {
    "false_split_rate": ("<=", 0.02),
    "degenerate_mean_score": ("<=", 10.0),
    "auc_on_vs_off": (">=", 0.95),
    "attempt_count_accuracy": (">=", 0.95),
}


def _rate(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _auc(pairs: list[tuple[float, int]]) -> float | None:
    ys = {y for _, y in pairs}
    return round(roc_auc([x for x, _ in pairs], [y for _, y in pairs]), 4) if ys == {0, 1} else None


def metrics(items: list[dict], grades: list) -> dict:
    rows = [(it, [a.score for a in g.attempts]) for it, g in zip(items, grades, strict=True)]
    first = {id(it): (s[0] if s else 0.0) for it, s in rows}
    by_cat: dict[str, list[float]] = {}
    for it, _ in rows:
        by_cat.setdefault(it["category"], []).append(first[id(it)])
    on_off = [(first[id(it)], 1 if it["category"] in ON else 0) for it, _ in rows if it["category"] in ON + OFF]
    restarts = [(it, s) for it, s in rows if it["category"] == "restart"]
    out = {
        "n_items": len(rows),
        "attempt_count_accuracy": _rate([len(s) == it["n_attempts"] for it, s in rows]),
        "false_split_rate": _rate([len(s) > 1 for it, s in rows if it["category"] == "restart_words"]),
        "false_split_rate_on_topic": _rate([len(s) > 1 for it, s in rows if it["category"] == "on_topic"]),
        "auc_on_vs_off": round(roc_auc([x for x, _ in on_off], [y for _, y in on_off]), 4) if on_off else None,
        "auc_on_vs_drift": _auc([(x, y) for (x, y), (it, _) in zip(on_off, [r for r in rows if r[0]["category"] in ON + OFF],
                                                                  strict=True) if it["category"] != "mismatched"]),
        "degenerate_mean_score": round(statistics.mean(by_cat["degenerate"]), 2) if "degenerate" in by_cat else None,
        "restart_recall": _rate([len(s) == 2 for _, s in restarts]),
        "restart_recall_weak_acknowledgement": _rate(
            [len(s) == 2 for it, s in restarts if it["source"].get("kind") == "weak"]
        ),
        "restart_esr_rate": _rate([len(s) > 1 and s[-1] > s[0] for _, s in restarts]),
        "n_per_category": {c: len(v) for c, v in sorted(by_cat.items())},
        "mean_first_score": {c: round(statistics.mean(v), 2) for c, v in sorted(by_cat.items())},
    }
    out["targets_met"] = {
        k: (out[k] is not None and (out[k] <= t if op == "<=" else out[k] >= t)) for k, (op, t) in TARGETS.items()
    }
    return out


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _errors(items: list[dict], grades: list) -> list[dict]:
    return [
        {"id": it["id"], "category": it["category"], "n_attempts": it["n_attempts"],
         "got": [[a.text[:80], a.score] for a in g.attempts]}
        for it, g in zip(items, grades, strict=True)
        if len(g.attempts) != it["n_attempts"]
        or (it["category"] == "degenerate" and g.attempts and (g.attempts[0].score or 0) > 30)
        or (it["category"] in OFF and g.attempts and (g.attempts[0].score or 0) > 50)
        or (it["category"] in ON and g.attempts and (g.attempts[0].score or 0) < 50)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--dev-only", action="store_true", help="grade the development split only; write nothing")
    args = parser.parse_args(argv)
    judge = make_judge("offline")
    dev = [it for path in DEV for it in _read(path)]
    splits = {"dev": dev} if args.dev_only else {"heldout": _read(HELDOUT), "dev": dev}
    graded = {
        name: judge.grade_sync([GradeRequest(prompt=it["prompt"], response=it["response"],
                                             latent_label=it["latent_label"]) for it in items])
        for name, items in splits.items()
    }
    result = {
        "judge": OFFLINE_VERSION,
        "judge_id": judge.judge_id,
        "rubric_hash": judge.rubric_hash,
        "data": {"heldout": str(HELDOUT.relative_to(REPO)), "dev": [str(p.relative_to(REPO)) for p in DEV]},
        "targets": {k: f"{op} {t}" for k, (op, t) in TARGETS.items()},
        "splits": {name: metrics(splits[name], graded[name]) for name in splits},
        "errors": {name: _errors(splits[name], graded[name]) for name in splits},
        "command": "python scripts/evaluate_judge.py",
    }
    print(json.dumps(result["splits"], indent=2))
    if args.dev_only:
        print(json.dumps(result["errors"]["dev"], indent=1))
        return 0
    if args.out.is_file():  # a comparison recorded by hand (another judge version on the same split) is kept
        previous = json.loads(args.out.read_text(encoding="utf-8")).get("previous_judge_on_heldout")
        if previous is not None and previous.get("heldout_split") == result["data"]["heldout"]:
            result["previous_judge_on_heldout"] = previous
    atomic_write_json(args.out, result)
    print(markdown_table(result))
    return 0


def markdown_table(result: dict) -> str:
    """The held-out table (with the development split for reference) as markdown."""
    held, train = result["splits"]["heldout"], result["splits"]["dev"]
    lines = ["| measure | held-out (fourth split) | development | target | met (held-out) |", "|---|---|---|---|---|"]
    for key in ("attempt_count_accuracy", "false_split_rate", "auc_on_vs_off", "degenerate_mean_score"):
        lines.append(f"| {key} | {held[key]} | {train[key]} | {result['targets'][key]} | "
                     f"{'yes' if held['targets_met'][key] else 'NO'} |")
    for key in ("auc_on_vs_drift", "false_split_rate_on_topic", "restart_recall", "restart_recall_weak_acknowledgement",
                "restart_esr_rate"):
        lines.append(f"| {key} | {held[key]} | {train[key]} | | |")
    lines.append(f"| items | {held['n_items']} | {train['n_items']} | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
