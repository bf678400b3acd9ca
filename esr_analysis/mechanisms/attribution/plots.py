"""Figures and tables of an attribution summary (:func:`esr_analysis.mechanisms.attribution.study.aggregate`):
the layer x head heatmap of mean AtP, the MLP bar chart, the top-components table and the top-10 vs random-10
head patching check. matplotlib is imported inside the functions."""

from __future__ import annotations

from typing import Any

from esr_analysis.mechanisms.attribution.methods import site_name
from esr_analysis.mechanisms.attribution.study import head_matrix


def plot_summary(summary: dict[str, Any], n_layers: int, n_heads: int, title: str = "") -> Any:
    """One figure: heatmap (layer x head, mean AtP), MLP bars (mean AtP per layer), top-10 vs random-10 heads
    patch effects with their bootstrap intervals. Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1.2, 1.2, 0.6]})
    mat = np.array(head_matrix(summary, n_layers, n_heads))
    lim = float(np.abs(mat).max()) or 1.0
    im = axes[0].imshow(mat, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
    axes[0].set(xlabel="head", ylabel="layer", title="heads: mean AtP")
    fig.colorbar(im, ax=axes[0])
    mlp = [summary["mean_atp"].get(site_name(layer, "mlp_out"), 0.0) for layer in range(n_layers)]
    axes[1].bar(range(n_layers), mlp, color="tab:orange")
    axes[1].set(xlabel="layer", title="MLPs: mean AtP")
    pairs = [("top-10", summary["top10_patch_effect"]), ("random-10", summary["random10_patch_effect"])]
    for i, (_name, (mean, lo, hi)) in enumerate(pairs):
        err = [[mean - lo if lo == lo else 0], [hi - mean if hi == hi else 0]]
        axes[2].bar(i, mean, yerr=err, capsize=4, color="tab:blue" if i == 0 else "tab:gray")
    axes[2].set_xticks([0, 1], [p[0] for p in pairs])
    axes[2].set(title="heads patched jointly:\nrestart-metric drop")
    fig.suptitle(title or f"attribution over {summary['n_episodes']} episodes ({summary['counterfactual']})")
    fig.tight_layout()
    return fig


def components_table(summary: dict[str, Any]) -> str:
    """The top components as a plain-text table: site, mean AtP [95 % bootstrap], mean DLA, latent label."""
    lines = [f"{'site':14s} {'AtP mean':>9s} {'[lo, hi]':>20s} {'DLA':>8s}  label"]
    for c in summary["top_components"]:
        mean, lo, hi = c["atp"]
        dla = f"{c['dla_mean']:8.3f}" if "dla_mean" in c else f"{'':8s}"
        lines.append(f"{c['site']:14s} {mean:9.3f} [{lo:8.3f}, {hi:8.3f}] {dla}  {c.get('label', '')}")
    return "\n".join(lines)
