"""Paper-style figures (``docs/method.md#figures``) drawn from store runs.

* :func:`fig2_esr` (Fig. 2 style): per arm (e.g. exp 1 steered, exp 8 baseline) a density histogram of the
  score deltas ``s_k - s_1`` of multi-attempt trials (30 bins over [-100, 100], shifted so 0 is a bin centre,
  red dashed line at 0, "NN% improved" of multi-attempt trials), and horizontal bars of the multi-attempt %
  and the ESR % with 95 % intervals (Wilson; latent-clustered bootstrap as a thin black whisker).
* :func:`fig3_boost` (Fig. 3 style): multi-attempt %, multi-attempt improvement rate and ESR % against the
  boost level (``sigma`` levels in SD units, or multiples of each latent's threshold), with 95 % Wilson bands;
  unlike the authors, nothing is smoothed.
* :func:`fig4_meta` (Fig. 4 style): mean first-attempt score, multi-attempt % and ESR % for the matched
  baseline (hatched) and each meta-prompt variant (solid), with intervals.
* :func:`fig5_detectors` (Fig. 5 / A.14 style): first-attempt score, multi-attempt % and ESR % for the steered
  baseline and the detector ablation (bars with Wilson intervals) beside the matched random sets as a
  distribution (one dot per set, a box over them), from the detector summary
  (:func:`esr_analysis.mechanisms.null.detector_summary`).
* :func:`fig7_mix_sweep` (Fig. 7 style): the organisms of a mix-ratio sweep against their self-correction
  fraction (:func:`esr_analysis.finetune.sweep.mix_sweep`).

matplotlib is imported inside the functions (Agg backend when no display).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ARM_COLOURS = ("#1A5276", "#82E0AA", "#E67E22", "#6A0DAD", "#17A2B8", "#C0392B")
VARIANT_COLOURS = {"baseline": "#7f7f7f", "dont_get_distracted": "#6A0DAD", "ignore_latent_label": "#0E6655",
                   "self_monitor": "#E67E22", "resist_manipulation": "#C0392B"}



def _save(fig: Any, path: str | Path) -> None:
    """Write ``fig`` to ``path`` atomically (format from the suffix, PNG by default), 150 dpi, tight box."""
    from esr_analysis.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")

def _plt() -> Any:
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        with contextlib.suppress(Exception):
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _frame(run: Any) -> Any:
    from esr_analysis.store.read import load_run

    return load_run(run) if isinstance(run, str | Path) else run


def _deltas(df: Any) -> list[float]:
    from esr_analysis.metrics.trials import prepare_trials

    v = prepare_trials(df)
    return [t.sk - t.s1 for t in v.trials if t.k > 1]


def _est(df: Any, metric: str) -> Any:
    from esr_analysis.metrics.summary import summarize

    return summarize(df, metrics=[metric], n_boot=500).iloc[0]


def fig2_esr(arms: Mapping[str, Any], path: str | Path | None = None, title: str | None = None) -> Any:
    """Fig. 2-style figure for ``{arm name: run dir or load_run frame}``; saved to ``path`` if given."""
    import numpy as np

    plt = _plt()
    frames = {k: _frame(v) for k, v in arms.items()}
    n = len(frames)
    fig = plt.figure(figsize=(16, max(4, 1.6 * n + 1.5)))
    gs = fig.add_gridspec(n, 3, width_ratios=[2.2, 1, 1], wspace=0.35, hspace=0.4)
    width = 200 / 30
    bins = np.arange(-100 - width / 2, 100 + width, width)
    for i, (name, df) in enumerate(frames.items()):
        ax = fig.add_subplot(gs[i, 0])
        d = _deltas(df)
        if d:
            ax.hist(d, bins=bins, density=True, color=ARM_COLOURS[i % len(ARM_COLOURS)], alpha=0.7, edgecolor="black")
        ax.axvline(0, color="red", ls="--")
        ax.set_xlim(-100, 100)
        improved = 100 * sum(x > 0 for x in d) / len(d) if d else float("nan")
        ax.text(0.02, 0.85, f"{improved:.0f}% improved" if d else "no multi-attempt trials",
                transform=ax.transAxes, fontsize=11)
        ax.text(0.98, 0.85, name, transform=ax.transAxes, ha="right", fontsize=11,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
        ax.grid(alpha=0.3)
        if i == n // 2:
            ax.set_ylabel("Density")
        if i == n - 1:
            ax.set_xlabel("Score Delta (Last Attempt - First Attempt)")
    names = list(frames)
    for col, (metric, label) in enumerate((("multi_attempt_rate", "Multi-Attempt %"), ("esr_rate", "ESR Rate (%)"))):
        ax = fig.add_subplot(gs[:, col + 1])
        ys = np.arange(n)[::-1]
        hi_max = 0.0
        for y, name in zip(ys, names, strict=True):
            r = _est(frames[name], metric)
            v, lo, hi = 100 * r.value, 100 * r.ci_low, 100 * r.ci_high
            hi_max = max(hi_max, hi if hi == hi else 0, 100 * r.boot_high if r.boot_high == r.boot_high else 0)
            ax.barh(y, v if v == v else 0, color=ARM_COLOURS[names.index(name) % len(ARM_COLOURS)], alpha=0.7,
                    edgecolor="black")
            if v == v:
                ax.errorbar(v, y, xerr=[[v - lo], [hi - v]], color="black", capsize=4)
                ax.errorbar(v, y - 0.25, xerr=[[v - 100 * r.boot_low], [100 * r.boot_high - v]], color="grey",
                            capsize=2, lw=1)
                ax.text(v, y + 0.3, f"{v:.1f}% (n={int(r.n)})", fontsize=10, fontweight="bold")
        ax.set_yticks(ys)
        ax.set_yticklabels(names if col == 0 else [])  # the ESR panel shares the rows of the first
        ax.set_xlim(0, max(10.0 if metric == "esr_rate" else 5.0, 1.25 * hi_max))
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="x")
    if title:
        fig.suptitle(title)
    fig.text(0.99, 0.01, "bars: 95% Wilson; grey: 95% latent-clustered bootstrap", ha="right", fontsize=8)
    if path is not None:
        _save(fig, path)
    return fig


def _level(cond: str) -> tuple[str, float]:
    mode, _, val = str(cond).partition(":")
    return mode, float(val)


def fig3_boost(run: Any, path: str | Path | None = None, mode: str = "sigma") -> Any:
    """Fig. 3-style boost sweep from an exp 2 run (``mode``: ``"sigma"`` or ``"multiple"``)."""
    from esr_analysis.metrics.summary import summarize

    plt = _plt()
    df = _frame(run)
    df = df[df["condition"].astype(str).str.startswith(mode + ":")]
    if df.empty:
        raise ValueError(f"no exp 2 trials with {mode} levels in this run")
    table = summarize(df, by="condition", metrics=["multi_attempt_rate", "improvement_rate", "esr_rate"], n_boot=200)
    table["x"] = [_level(c)[1] for c in table["condition"]]
    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    for ax, (metric, label) in zip(axes, (("multi_attempt_rate", "Multi-Attempt %"),
                                          ("improvement_rate", "Multi-Attempt Improvement Rate (%)"),
                                          ("esr_rate", "ESR Rate (%)")), strict=True):
        t = table[table.metric == metric].sort_values("x")
        ax.plot(t.x, 100 * t.value, lw=4, color="#6A0DAD", marker="o")
        ax.fill_between(t.x, 100 * t.ci_low, 100 * t.ci_high, color="#6A0DAD", alpha=0.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if mode == "sigma":
            ax.axvline(0, color="red", ls="--")
        else:
            ax.axvline(1, color="red", ls="--")
    axes[-1].set_xlabel("Normalized Boost Level (standard deviations from mean)" if mode == "sigma"
                        else "Boost (multiple of the latent's own threshold)")
    if path is not None:
        _save(fig, path)
    return fig


def fig4_meta(run: Any, path: str | Path | None = None) -> Any:
    """Fig. 4-style meta-prompting bars from an exp 5 run (matched baseline hatched, variants solid)."""
    import numpy as np

    from esr_analysis.metrics.summary import summarize

    plt = _plt()
    df = _frame(run)
    conds = ["baseline"] + sorted(c for c in df["condition"].unique() if c != "baseline")
    table = summarize(df, by="condition", metrics=["first_attempt_score", "multi_attempt_rate", "esr_rate"], n_boot=200)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, (metric, label, scale) in zip(axes, (("first_attempt_score", "Mean first-attempt score", 1),
                                                 ("multi_attempt_rate", "Multi-Attempt %", 100),
                                                 ("esr_rate", "ESR Rate (%)", 100)), strict=True):
        for i, c in enumerate(conds):
            r = table[(table.metric == metric) & (table.condition == c)].iloc[0]
            v = scale * r.value
            colour = VARIANT_COLOURS.get(c, ARM_COLOURS[i % len(ARM_COLOURS)])
            ax.bar(i, v if v == v else 0, color=colour, alpha=0.4 if c == "baseline" else 0.9,
                   hatch="///" if c == "baseline" else None, edgecolor="black")
            if v == v:
                ax.errorbar(i, v, yerr=[[v - scale * r.ci_low], [scale * r.ci_high - v]], color="black", capsize=4)
        ax.set_xticks(np.arange(len(conds)))
        ax.set_xticklabels(conds, rotation=20)
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    if path is not None:
        _save(fig, path)
    return fig


DETECTOR_COLOURS = {"baseline": "#6A0DAD", "detectors": "#17A2B8", "random": "#FFA500"}


def fig5_detectors(summary: Mapping[str, Any], path: str | Path | None = None, title: str | None = None) -> Any:
    """Fig. 5-style detector-ablation figure from a detector summary dict; saved to ``path`` if given."""
    plt = _plt()
    base, det = summary["baseline"], summary["detector_ablation"]
    rand_metric = {"multi_attempt_rate": summary.get("random_multi_attempt_rates") or [],
                   "esr_rate": summary.get("random_esr_rates") or []}
    panels = [("multi_attempt_rate", "multi_attempt_ci", "Multi-Attempt %"), ("esr_rate", "esr_ci", "ESR Rate (%)")]
    has_first = "first_attempt_score" in base and "first_attempt_score" in det
    fig, axes = plt.subplots(1, len(panels) + has_first, figsize=(16 if has_first else 11, 6))
    if has_first:
        ax = axes[0]
        vals = [base["first_attempt_score"], det["first_attempt_score"]]
        ax.bar([0, 1], [v if v == v else 0 for v in vals], color=[DETECTOR_COLOURS["baseline"],
               DETECTOR_COLOURS["detectors"]], alpha=0.8, edgecolor="black")
        rm = (summary.get("random_metrics") or {}).get("first_attempt_score")
        if rm is not None and rm == rm:
            ax.bar(2, rm, color=DETECTOR_COLOURS["random"], alpha=0.8, edgecolor="black")
        ax.set_xticks([0, 1, 2], ["Steered\nbaseline", "Detector\nablation", "Random ablation\n(pooled)"])
        ax.set_ylim(0, 100)
        ax.set_title("Mean first-attempt score")
        ax.grid(alpha=0.3, axis="y")
    for ax, (metric, ci, label) in zip(axes[int(has_first):], panels, strict=True):
        for x, (m, colour) in enumerate(((base, DETECTOR_COLOURS["baseline"]), (det, DETECTOR_COLOURS["detectors"]))):
            v, (lo, hi) = 100 * m[metric], m[ci]
            ax.bar(x, v if v == v else 0, color=colour, alpha=0.8, edgecolor="black")
            if v == v:
                ax.errorbar(x, v, yerr=[[v - 100 * lo], [100 * hi - v]], color="black", capsize=5)
                ax.text(x, -0.13, f"({round(m[metric] * m['n'])}/{m['n']})", ha="center", va="top", fontsize=9,
                        transform=ax.get_xaxis_transform())
        r = [100 * x for x in rand_metric[metric] if x == x]
        if r:
            ax.boxplot([r], positions=[2], widths=0.5, showfliers=False,
                       medianprops={"color": DETECTOR_COLOURS["random"], "lw": 2})
            jitter = [2 + 0.18 * ((i * 0.618) % 1 - 0.5) for i in range(len(r))]
            ax.scatter(jitter, r, color=DETECTOR_COLOURS["random"], edgecolor="black", zorder=3, s=28)
        ax.set_xticks([0, 1, 2], ["Steered\nbaseline", "Detector\nablation", f"Random sets\n(n={len(r)})"])
        ax.set_xlim(-0.6, 2.6)
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
        ax.set_ylim(bottom=0)
    pct, dci = summary.get("detector_percentile"), summary.get("difference_ci") or [float("nan")] * 2
    fig.text(0.99, -0.04, f"{summary.get('n_detectors')} detectors ({summary.get('rule')}); detector multi-attempt "
             f"rate at the {pct:.0f}th percentile of the random sets; paired latent-bootstrap 95% interval of "
             f"ablation - baseline: [{100 * dci[0]:.1f}, {100 * dci[1]:.1f}] points; bars: Wilson 95%",
             ha="right", fontsize=8)
    if title:
        fig.suptitle(title)
    if path is not None:
        _save(fig, path)
    return fig


def fig7_mix_sweep(sweep: Mapping[str, Any], path: str | Path | None = None,
                   base: Mapping[str, Any] | None = None, title: str | None = None) -> Any:
    """Fig. 7-style mix-ratio sweep from :func:`esr_analysis.finetune.sweep.mix_sweep`: multi-attempt %, ESR % and
    mean first-attempt score against the self-correction fraction ``p``, steered (solid) and unsteered
    (dashed), with 95 % intervals (Wilson for rates, student-t for means); ``base`` (``{"organism": M, "organism_no_steer": M}`` of the base model, same
    evaluation) as dotted reference lines. Saved to ``path`` if given."""
    plt = _plt()
    rows = sweep["rows"]
    xs = [100 * r["fraction"] for r in rows]
    panels = [("multi_attempt_rate", "multi_attempt_ci", "Multi-attempt %", 100.0),
              ("esr_rate", "esr_ci", "ESR rate (%)", 100.0),
              ("first_attempt_score", "first_attempt_ci", "Mean first-attempt score", 1.0)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (metric, ci, label, k) in zip(axes, panels, strict=True):
        for cond, style, name in (("organism", "-o", "steered (exp 1)"), ("organism_no_steer", "--s", "unsteered")):
            pts = [(x, r[cond]) for x, r in zip(xs, rows, strict=True) if cond in r and r[cond].get(metric) is not None]
            if not pts:
                continue
            vx = [x for x, _ in pts]
            vy = [k * m[metric] for _, m in pts]
            lo = [k * (m[metric] - m[ci][0]) if m.get(ci) else 0 for _, m in pts]
            hi = [k * (m[ci][1] - m[metric]) if m.get(ci) else 0 for _, m in pts]
            ax.errorbar(vx, vy, yerr=[lo, hi], fmt=style, capsize=4, label=name)
            if base and cond in base and base[cond].get(metric) is not None:
                ax.axhline(k * base[cond][metric], ls=":", color=ax.lines[-1].get_color(), alpha=0.8,
                           label=f"base model, {name.split(' ')[0]}")
        ax.set_xlabel("self-correction fraction p of the training mix (%)")
        ax.set_xticks(xs)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 100 if k == 1.0 else None)
    axes[0].legend(fontsize=8)
    n = rows[0].get("organism", {}).get("n")
    fig.text(0.99, -0.03, f"n = {n} steered trials per organism (same latents, prompts, seeds, judge); "
             "bars: Wilson 95% (rates), student-t 95% (mean scores)", ha="right", fontsize=8)
    if title:
        fig.suptitle(title)
    if path is not None:
        _save(fig, path)
    return fig


def figures_for_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Every figure a pipeline run supports, written to ``out_dir`` (default ``<run_dir>/figures``)."""
    rd = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else rd / "figures"
    written: list[Path] = []
    arms = {}
    if (rd / "exp1" / "trials.jsonl").is_file():
        arms["Steered (exp 1)"] = rd / "exp1"
    if (rd / "exp8" / "trials.jsonl").is_file():
        arms["No steering (exp 8)"] = rd / "exp8"
    if arms:
        p = out / f"fig2_esr_{rd.name}.png"
        fig2_esr(arms, p, title=rd.name)
        written.append(p)
    if (rd / "exp2" / "trials.jsonl").is_file():
        for mode in ("sigma", "multiple"):
            p = out / f"fig3_boost_{mode}_{rd.name}.png"
            try:
                fig3_boost(rd / "exp2", p, mode=mode)
                written.append(p)
            except ValueError:
                pass
    if (rd / "exp5" / "trials.jsonl").is_file():
        p = out / f"fig4_meta_{rd.name}.png"
        fig4_meta(rd / "exp5", p)
        written.append(p)
    _plt().close("all")
    return written
