"""Figures of the anatomy of a recovery: a per-token trace of one episode (the paper's Fig. 6 style) and the
aligned mean ± SEM over episodes with ``n`` per offset (Figs. A.15-A.16 style).

Nothing is hard-coded: region shading comes from each episode's token boundaries, axis limits from the data,
and the figure widens with the number of tokens so every token's text stays readable on the x-axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

REGION_COLOURS = {"prompt": "#E8E8E8", "before": "#9B59B6", "during": "#E67E22", "after": "#2980B9"}
REGION_NAMES = {"prompt": "prompt", "before": "off-topic", "during": "correction", "after": "on-topic"}
GROUP_COLOURS = ("#17A2B8", "#E67E22", "#C0392B", "#27AE60", "#6A0DAD", "#7F7F7F")


def smooth(values: np.ndarray, alpha: float | None) -> np.ndarray:
    """Exponential smoothing ``s_t = alpha * v_t + (1 - alpha) * s_{t-1}`` (``None``: unchanged); NaNs are
    skipped (the previous smoothed value carries over)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if alpha is None:
        return v
    out = np.full_like(v, np.nan)
    prev = np.nan
    for i, x in enumerate(v):
        if not np.isnan(x):
            prev = x if np.isnan(prev) else alpha * x + (1 - alpha) * prev
        out[i] = prev
    return out


def _label(token: str) -> str:
    t = token.replace("\n", "⏎").replace("\t", "⇥")
    return t if t.strip() else repr(t)[1:-1] or "·"


def plot_trace(trace: Any, groups: Sequence[str], *, how: str = "mean", alpha: float | None = None,
               include_prompt: bool = False, title: str | None = None, max_width: float = 60.0) -> Any:
    """A Fig. 6-style figure of one :class:`~esr_analysis.mechanisms.traces.EpisodeTrace`: a strip of regions,
    then one panel per latent group (``how`` over its latents, optionally smoothed with ``alpha``), tokens on
    the shared x-axis. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    lo = 0 if include_prompt else trace.response_start
    x = np.arange(lo, len(trace.tokens))
    width = min(max_width, max(8.0, 0.16 * len(x)))
    fig, axes = plt.subplots(1 + len(groups), 1, sharex=True, figsize=(width, 1.0 + 1.8 * len(groups)),
                             gridspec_kw={"height_ratios": [0.3] + [1.2] * len(groups)}, squeeze=False)
    axes = axes[:, 0]
    strip = axes[0]
    spans = [("prompt", 0, trace.response_start)] if include_prompt else []
    spans += [(k, a, b) for k, (a, b) in trace.bounds.regions().items()]
    for ax in axes:
        for k, a, b in spans:
            if b > a:
                ax.axvspan(a - 0.5, b - 0.5, color=REGION_COLOURS[k], alpha=0.2 if ax is not strip else 0.6, lw=0)
    for k, a, b in spans:
        if b > a:
            strip.text((a + b - 1) / 2, 0.5, REGION_NAMES[k], ha="center", va="center", fontsize=9)
    strip.set_yticks([])
    for i, (ax, g) in enumerate(zip(axes[1:], groups, strict=True)):
        y = smooth(trace.group(g, how)[lo:], alpha)
        lats = trace.groups.get(g, [])
        ax.plot(x, y, color=GROUP_COLOURS[i % len(GROUP_COLOURS)], lw=2)
        ax.set_ylabel(f"{g}\n({how} of {len(lats)})", fontsize=9)
        ax.grid(alpha=0.3)
    last = axes[-1]
    last.set_xticks(x, [_label(trace.token_strings[t]) for t in x], rotation=90, fontsize=7)
    last.set_xlim(x[0] - 0.5, x[-1] + 0.5)
    fig.suptitle(title or f"episode {trace.episode_id} · steering {'on' if trace.steered else 'off'} · "
                 f"layer {trace.layer}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_aligned(summaries: Mapping[str, Mapping[str, np.ndarray]], *, title: str = "", window_label: str = ""
                 ) -> Any:
    """Figs. A.15-A.16-style: per group the aligned mean ± SEM (from
    :func:`esr_analysis.mechanisms.alignment.aligned_summary`) around the correction token (offset 0, dashed),
    and below it the number of episodes present at each offset. Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, axn) = plt.subplots(2, 1, sharex=True, figsize=(10, 5.5), gridspec_kw={"height_ratios": [3, 1]})
    for i, (name, s) in enumerate(summaries.items()):
        c = GROUP_COLOURS[i % len(GROUP_COLOURS)]
        off, mean, sem = s["offsets"], s["mean"], s["sem"]
        ax.plot(off, mean, color=c, lw=2, label=name)
        band = np.where(np.isnan(sem), 0.0, sem)
        ax.fill_between(off, mean - band, mean + band, color=c, alpha=0.2, lw=0)
        axn.step(off, s["n"], where="mid", color=c, label=name)
    for a in (ax, axn):
        a.axvline(0, color="k", ls="--", lw=1)
        a.grid(alpha=0.3)
    ax.axvspan(ax.get_xlim()[0], 0, color=REGION_COLOURS["before"], alpha=0.08, lw=0)
    ax.set_ylabel("mean activation ± SEM")
    ax.legend(fontsize=9)
    axn.set_ylabel("n episodes")
    axn.set_xlabel(window_label or "tokens relative to the correction start")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
