"""The paper's headline numbers as data, and a side-by-side table of a run's estimates next to them.

The values are McKenzie et al. 2026 (arXiv 2602.06941, v2) as summarised in ``docs/method.md#experiments``;
rates are fractions (0-1), scores are points (0-100). Where the paper gives only a bound ("at most 1.1 %")
the record says so in ``relation`` (``"<="``, ``"<"``) instead of pretending to a value.

The paper reports Wald intervals. :func:`paper_table` instead attaches a **Wilson** interval to every rate
that has a value and an ``n``, computed from the reconstructed count ``round(value * n)``; the published
rates are rounded to 0.1 %, so these intervals are approximate (good to about ``0.05 % * n`` trials).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from esr_analysis.metrics.definitions import METRICS
from esr_analysis.metrics.intervals import wilson_interval

if TYPE_CHECKING:
    import pandas as pd

PAPER_MAIN_MODEL = "Llama-3.3-70B"
"""The model behind the paper's headline numbers (the only one with an ESR rate above 1 %)."""


@dataclass(frozen=True)
class PaperNumber:
    """One published number: ``metric`` (a name of :data:`esr_analysis.metrics.METRICS`) of ``condition`` in
    ``experiment`` for ``model``; ``value`` (with ``relation``: ``"="`` or an upper bound ``"<="``/``"<"``),
    ``n`` trials when published, and ``note`` (e.g. where in a sweep a peak lies)."""

    experiment: str
    condition: str
    model: str
    metric: str
    value: float
    n: int | None = None
    relation: Literal["=", "<=", "<"] = "="
    note: str = ""


_OTHERS = "Llama-3.1-8B, Gemma-2 2B/9B/27B"

PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    # exp 1: steered at each latent's threshold (calibrated to a first-attempt score of 30)
    PaperNumber("exp1", "steered", PAPER_MAIN_MODEL, "multi_attempt_rate", 0.074, 4877),
    PaperNumber("exp1", "steered", PAPER_MAIN_MODEL, "esr_rate", 0.038, 4877),
    PaperNumber("exp1", "steered", PAPER_MAIN_MODEL, "first_attempt_score", 26.3, 4877,
                note="calibration target 30"),
    PaperNumber("exp1", "steered", _OTHERS, "multi_attempt_rate", 0.011, 4512, "<=",
                note="each of the four; n 4,512-4,948 per model"),
    PaperNumber("exp1", "steered", _OTHERS, "esr_rate", 0.01, 4512, "<",
                note="each of the four; n 4,512-4,948 per model"),
    # exp 8: the same latents and prompts, unsteered (pooled over the five models)
    PaperNumber("exp8", "no_steering", "all five models", "multi_attempt_rate", 0.0, 13118),
    PaperNumber("exp8", "no_steering", "Llama-3.1-8B", "first_attempt_score", 87.8, note="lowest of the five"),
    PaperNumber("exp8", "no_steering", "Gemma-2 9B/27B", "first_attempt_score", 91.8, note="highest of the five"),
    # exp 2: boost sweep over mu +- 3 sigma of the thresholds (peaks over the levels)
    PaperNumber("exp2", "peak", PAPER_MAIN_MODEL, "multi_attempt_rate", 0.027, 500, note="peak, at -0.3 sigma"),
    PaperNumber("exp2", "peak", PAPER_MAIN_MODEL, "improvement_rate", 0.83, note="peak, at -1.0 sigma"),
    PaperNumber("exp2", "peak", PAPER_MAIN_MODEL, "esr_rate", 0.010, 500, note="peak, at -0.3 sigma"),
    # exp 3: ablating 26 off-topic-detector latents while steering
    PaperNumber("exp3", "ablation", PAPER_MAIN_MODEL, "multi_attempt_rate", 0.055, 4875, note="steered: 7.4 %"),
    PaperNumber("exp3", "ablation", PAPER_MAIN_MODEL, "esr_rate", 0.028, 4875, note="steered: 3.8 %"),
    # exp 5: the self-monitoring meta-prompt (baseline: pooled exp 1 trials)
    PaperNumber("exp5", "baseline", PAPER_MAIN_MODEL, "multi_attempt_rate", 0.074, 4877, note="pooled exp 1"),
    PaperNumber("exp5", "baseline", PAPER_MAIN_MODEL, "esr_rate", 0.038, 4877, note="pooled exp 1"),
    PaperNumber("exp5", "self_monitor", PAPER_MAIN_MODEL, "multi_attempt_rate", 0.317, note="4.3x the baseline"),
    PaperNumber("exp5", "self_monitor", PAPER_MAIN_MODEL, "esr_rate", 0.148, note="3.8x the baseline"),
)
"""The headline numbers (``docs/method.md#experiments``), one record per published value or bound."""

for _p in PAPER_NUMBERS:  # a typo in a metric name would silently never match a run's table
    if _p.metric not in METRICS:
        raise ValueError(f"paper number with unknown metric {_p.metric!r}")

_RATE = "rate"


def _is_rate(metric: str) -> bool:
    return METRICS[metric].kind == _RATE


def paper_interval(number: PaperNumber, confidence: float = 0.95) -> tuple[float, float]:
    """Approximate Wilson interval of a published rate from ``round(value * n)`` of ``n``; ``(nan, nan)`` for
    means, bounds, and rates published without ``n``."""
    if number.relation != "=" or number.n is None or not _is_rate(number.metric):
        return math.nan, math.nan
    return wilson_interval(round(number.value * number.n), number.n, confidence)


def paper_table(experiment: str | None = None) -> pd.DataFrame:
    """:data:`PAPER_NUMBERS` (of one ``experiment``, or all) as a DataFrame with ``ci_low``/``ci_high``
    from :func:`paper_interval`."""
    import pandas as pd

    rows = []
    for p in PAPER_NUMBERS:
        if experiment is not None and p.experiment != experiment:
            continue
        low, high = paper_interval(p)
        rows.append({**asdict(p), "ci_low": low, "ci_high": high})
    if not rows and experiment is not None:
        known = sorted({p.experiment for p in PAPER_NUMBERS})
        raise ValueError(f"the paper has no headline numbers for {experiment!r}; known: {', '.join(known)}")
    return pd.DataFrame(rows)


def _fmt(metric: str, value: Any, relation: str = "=") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{100 * value:.1f} %" if _is_rate(metric) else f"{value:.1f}"
    return text if relation == "=" else f"{relation} {text}"


def _fmt_ci(metric: str, low: Any, high: Any) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "-"
    return f"[{_fmt(metric, low)}, {_fmt(metric, high)}]"


def side_by_side(ours: pd.DataFrame, experiment: str, *, paper_condition: str | None = None,
                 model: str | None = None, label: str = "ours") -> pd.DataFrame:
    """One row per paper number of ``experiment`` (optionally one ``paper_condition`` / ``model``) that
    ``ours`` also estimates, as display strings: our value, ``n``, Wilson/t and latent-bootstrap intervals,
    then the paper's value (or bound), ``n`` and approximate Wilson interval.

    ``ours`` is one :func:`esr_analysis.metrics.summarize` table of a single condition (columns ``metric,
    value, n, ci_low, ci_high, boot_low, boot_high``). ``label`` names our column group (e.g. the model).
    """
    import pandas as pd

    missing = {"metric", "value", "n", "ci_low", "ci_high", "boot_low", "boot_high"} - set(ours.columns)
    if missing:
        raise ValueError(f"`ours` is not a summarize() table: missing columns {sorted(missing)}")
    if ours["metric"].duplicated().any():
        raise ValueError("`ours` holds several rows per metric; pass the summarize() table of one condition")
    mine = {r.metric: r for r in ours.itertuples()}
    rows = []
    for p in PAPER_NUMBERS:
        if p.experiment != experiment or p.metric not in mine:
            continue
        if (paper_condition is not None and p.condition != paper_condition) or (model is not None and p.model != model):
            continue
        r = mine[p.metric]
        low, high = paper_interval(p)
        rows.append({"metric": p.metric, f"{label}": _fmt(p.metric, r.value), f"{label} n": int(r.n),
                     f"{label} 95% CI": _fmt_ci(p.metric, r.ci_low, r.ci_high),
                     f"{label} latent-boot CI": _fmt_ci(p.metric, r.boot_low, r.boot_high),
                     "paper model": p.model, "paper": _fmt(p.metric, p.value, p.relation),
                     "paper n": "-" if p.n is None else f"{p.n:,}", "paper 95% CI (Wilson, approx.)":
                     _fmt_ci(p.metric, low, high), "note": p.note})
    if not rows:
        raise ValueError(f"no paper number of {experiment!r} matches the metrics of `ours` "
                         f"({', '.join(mine)}) and the filters given")
    return pd.DataFrame(rows)
