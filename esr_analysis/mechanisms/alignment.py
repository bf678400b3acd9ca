"""Aligned statistics over many episodes (the paper's exp 9): alignment at the correction token with NaN masks,
per-episode region means, and paired tests on correctly paired arrays.

Definitions
-----------
* **Alignment.** Episode ``i``'s per-token series ``v_i`` is placed on offsets ``o = -W .. W`` around its
  correction token ``c_i``: ``A[i, o] = v_i[c_i + o]`` when ``c_i + o`` is a response token
  (``response_start <= c_i + o < end``), else **NaN** (never zero: a missing position is not an inactive
  latent). Per offset, :func:`aligned_summary` gives the mean over the episodes present, the SEM
  (``SD(ddof=1) / sqrt(n)``, NaN when ``n < 2``) and ``n``.
* **Regions** (token ranges of :class:`~esr_analysis.mechanisms.boundaries.TokenBoundaries`):
  ``before`` = off-topic ``[off_topic, correction)``, ``during`` = correction ``[correction, on_topic)``,
  ``after`` = on-topic ``[on_topic, end)``; the **region mean** of an episode is the mean of its series over a
  region (NaN for an empty region). A baseline episode's value is its mean over all response tokens.
* **Pairing.** Paired values are mappings ``key -> value`` (key = episode id, or latent id for comparisons
  against the baseline across latents). :func:`paired_values` requires the two key sets to be equal and raises
  :class:`PairingError` otherwise; pairs with a NaN on either side are dropped and counted (``n_dropped``).
* **Paired test** (:func:`paired_test`): the Wilcoxon signed-rank test of ``x - y`` (scipy, zero differences
  dropped, ``alternative`` as given), with effect sizes: the mean and median difference, Cohen's ``d_z`` (mean
  difference over the SD of the differences) and the matched-pairs rank-biserial correlation
  ``(W+ - W-) / (W+ + W-)``. When no test is possible (fewer than :data:`MIN_PAIRS` non-zero differences) ``p``
  is ``None`` with the reason, never 1.
* **Unpaired test** (:func:`unpaired_test`, e.g. recovery episodes vs baseline episodes): Mann-Whitney U with
  Cliff's delta ``P(x > y) - P(x < y)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from esr_analysis.mechanisms.boundaries import TokenBoundaries

MIN_PAIRS = 2
REGIONS = ("before", "during", "after")


class PairingError(ValueError):
    """Two sides of a paired comparison do not pair up (different keys or lengths)."""


def align_at(series: Sequence[np.ndarray], bounds: Sequence[TokenBoundaries], window: int) -> np.ndarray:
    """``[n_episodes, 2 * window + 1]`` (times any trailing dims of the series) aligned at each episode's
    correction token, NaN outside its response (module docstring). Unclear episodes give all-NaN rows."""
    import numpy as np

    if len(series) != len(bounds):
        raise PairingError(f"{len(series)} series for {len(bounds)} boundaries")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if not len(series):
        return np.full((0, 2 * window + 1), np.nan)
    tail = np.asarray(series[0]).shape[1:]
    out = np.full((len(series), 2 * window + 1, *tail), np.nan)
    for i, (v, b) in enumerate(zip(series, bounds, strict=True)):
        v = np.asarray(v, dtype=np.float64)
        if len(v) != b.end:
            raise PairingError(f"episode {i}: series of {len(v)} tokens but boundaries end at {b.end}")
        if b.unclear:
            continue
        lo = max(b.response_start, b.correction - window)
        hi = min(b.end, b.correction + window + 1)
        if hi > lo:
            out[i, lo - b.correction + window: hi - b.correction + window] = v[lo:hi]
    return out


def aligned_summary(aligned: np.ndarray) -> dict[str, np.ndarray]:
    """Per offset: ``mean``, ``sem`` and ``n`` over the non-NaN episodes, and the ``offsets`` themselves."""
    import numpy as np

    a = np.asarray(aligned, dtype=np.float64)
    w = (a.shape[1] - 1) // 2
    n = np.sum(~np.isnan(a), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.nansum(a, axis=0)
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        dev = np.where(np.isnan(a), 0.0, a - mean[None])
        var = np.where(n > 1, (dev ** 2).sum(axis=0) / np.maximum(n - 1, 1), np.nan)
        sem = np.sqrt(var) / np.sqrt(np.maximum(n, 1))
    return {"offsets": np.arange(-w, w + 1), "mean": mean, "sem": np.where(n > 1, sem, np.nan), "n": n}


def region_means(values: np.ndarray, bounds: TokenBoundaries) -> dict[str, Any]:
    """Mean of ``values`` (``[T]`` or ``[T, k]``) over each region (module docstring); NaN when the region is
    empty or the boundaries unclear."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if len(v) != bounds.end:
        raise PairingError(f"series of {len(v)} tokens but boundaries end at {bounds.end}")
    regions = bounds.regions()
    out: dict[str, Any] = {}
    for name in REGIONS:
        lo, hi = regions.get(name, (0, 0))
        out[name] = v[lo:hi].mean(axis=0) if hi > lo else np.full(v.shape[1:], np.nan) if v.ndim > 1 else np.nan
    return out


def response_mean(values: np.ndarray, bounds: TokenBoundaries) -> Any:
    """Mean of ``values`` over the response tokens ``[response_start, end)`` (the baseline's value)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    if len(v) != bounds.end:
        raise PairingError(f"series of {len(v)} tokens but boundaries end at {bounds.end}")
    return v[bounds.response_start:bounds.end].mean(axis=0)


def paired_values(a: Mapping[Any, float], b: Mapping[Any, float]) -> tuple[list[Any], np.ndarray, np.ndarray, int]:
    """``(keys, x, y, n_dropped)`` of two keyed value sets (module docstring); :class:`PairingError` when the
    key sets differ."""
    import numpy as np

    if set(a) != set(b):
        only_a, only_b = sorted(map(str, set(a) - set(b)))[:5], sorted(map(str, set(b) - set(a)))[:5]
        raise PairingError(f"paired values do not pair: keys only in the first {only_a}, only in the second "
                           f"{only_b} ({len(a)} vs {len(b)} keys)")
    keys = sorted(a, key=str)
    x = np.array([float(a[k]) for k in keys])
    y = np.array([float(b[k]) for k in keys])
    ok = ~(np.isnan(x) | np.isnan(y))
    return [k for k, keep in zip(keys, ok, strict=True) if keep], x[ok], y[ok], int((~ok).sum())


def paired_test(a: Mapping[Any, float], b: Mapping[Any, float], *, alternative: str = "two-sided") -> dict[str, Any]:
    """Wilcoxon signed-rank test of ``a - b`` over paired keys, with effect sizes (module docstring)."""
    import numpy as np
    from scipy import stats

    keys, x, y, dropped = paired_values(a, b)
    d = x - y
    out: dict[str, Any] = {"test": "wilcoxon signed-rank (paired)", "alternative": alternative, "n": len(keys),
                           "n_dropped": dropped, "mean_x": _f(x.mean()) if len(x) else None,
                           "mean_y": _f(y.mean()) if len(y) else None, "mean_diff": _f(d.mean()) if len(d) else None,
                           "median_diff": _f(np.median(d)) if len(d) else None, "statistic": None, "p": None}
    sd = d.std(ddof=1) if len(d) > 1 else float("nan")
    out["cohens_dz"] = _f(d.mean() / sd) if len(d) > 1 and sd > 0 else None
    nz = d[d != 0]
    if len(nz):
        ranks = stats.rankdata(np.abs(nz))
        w_plus, w_minus = ranks[nz > 0].sum(), ranks[nz < 0].sum()
        out["rank_biserial"] = _f((w_plus - w_minus) / (w_plus + w_minus))
    else:
        out["rank_biserial"] = None
    if len(nz) < MIN_PAIRS:
        out["reason"] = f"only {len(nz)} non-zero paired differences (need {MIN_PAIRS})"
        return out
    res = stats.wilcoxon(x, y, zero_method="wilcox", alternative=alternative)
    out["statistic"], out["p"] = _f(res.statistic), _f(res.pvalue)
    return out


def unpaired_test(x: Sequence[float], y: Sequence[float], *, alternative: str = "two-sided") -> dict[str, Any]:
    """Mann-Whitney U of ``x`` vs ``y`` (NaNs dropped) with Cliff's delta (module docstring)."""
    import numpy as np
    from scipy import stats

    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    xa, ya = xa[~np.isnan(xa)], ya[~np.isnan(ya)]
    out: dict[str, Any] = {"test": "mann-whitney u (unpaired)", "alternative": alternative, "n_x": len(xa),
                           "n_y": len(ya), "mean_x": _f(xa.mean()) if len(xa) else None,
                           "mean_y": _f(ya.mean()) if len(ya) else None, "statistic": None, "p": None,
                           "cliffs_delta": None}
    if not len(xa) or not len(ya):
        out["reason"] = "an empty side"
        return out
    diff = np.sign(xa[:, None] - ya[None, :])
    out["cliffs_delta"] = _f(diff.mean())
    res = stats.mannwhitneyu(xa, ya, alternative=alternative)
    out["statistic"], out["p"] = _f(res.statistic), _f(res.pvalue)
    return out


def _f(v: Any) -> float | None:
    v = float(v)
    return v if v == v else None


def summarize_traces(recoveries: Sequence[Any], baseline: Sequence[Any], group_names: Sequence[str]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(region_means, tests)`` of recovery traces against baseline traces
    (:class:`~esr_analysis.mechanisms.traces.EpisodeTrace`), per latent group (values = group means per token).

    ``region_means[group]`` holds the mean over episodes of each region mean (``before``/``during``/``after``),
    the baseline mean, and ``n`` per region; ``region_means["per_latent"][latent]`` the same per latent of the
    fixed groups. ``tests[group]``: ``before_gt_after`` and ``during_vs_before`` (paired by episode),
    ``before_gt_baseline_by_latent`` (paired by latent; fixed groups with at least two latents) and
    ``before_gt_baseline_episodes`` / ``after_vs_baseline_episodes`` (unpaired, episodes vs baseline episodes).
    Only recoveries with clear boundaries enter.
    """
    import numpy as np

    clear = [t for t in recoveries if not t.bounds.unclear]
    means: dict[str, Any] = {}
    tests: dict[str, Any] = {}
    per_latent: dict[str, Any] = {}
    for g in group_names:
        regions = {t.episode_id: region_means(t.group(g), t.bounds) for t in clear}
        base = {t.episode_id: float(response_mean(t.group(g), t.bounds)) for t in baseline}
        by_region = {r: {k: float(v[r]) for k, v in regions.items()} for r in REGIONS}
        entry: dict[str, Any] = {}
        for r in REGIONS:
            vals = np.array(list(by_region[r].values()), dtype=np.float64)
            entry[r] = _f(np.nanmean(vals)) if np.any(~np.isnan(vals)) else None
            entry[f"n_{r}"] = int(np.sum(~np.isnan(vals)))
        bvals = np.array(list(base.values()), dtype=np.float64)
        entry["baseline"] = _f(np.nanmean(bvals)) if np.any(~np.isnan(bvals)) else None
        entry["n_baseline"] = int(np.sum(~np.isnan(bvals)))
        means[g] = entry
        gt: dict[str, Any] = {
            "before_gt_after": paired_test(by_region["before"], by_region["after"], alternative="greater"),
            "during_vs_before": paired_test(by_region["during"], by_region["before"]),
            "before_gt_baseline_episodes": unpaired_test(list(by_region["before"].values()), list(base.values()),
                                                         alternative="greater"),
            "after_vs_baseline_episodes": unpaired_test(list(by_region["after"].values()), list(base.values())),
        }
        fixed = _fixed_group(clear + list(baseline), g)
        if fixed is not None:
            lat_before, lat_base = {}, {}
            for j in fixed:
                rb = [region_means(t.series([j]), t.bounds) for t in clear]
                bb = [float(response_mean(t.series([j]), t.bounds)) for t in baseline]
                row = {r: _nanmean([x[r] for x in rb]) for r in REGIONS}
                row["baseline"] = _nanmean(bb)
                per_latent[str(j)] = row
                lat_before[j], lat_base[j] = row["before"], row["baseline"]
            if len(fixed) >= 2:
                gt["before_gt_baseline_by_latent"] = paired_test(
                    {k: np.nan if v is None else v for k, v in lat_before.items()},
                    {k: np.nan if v is None else v for k, v in lat_base.items()}, alternative="greater")
        tests[g] = gt
    means["per_latent"] = per_latent
    return means, tests


def _fixed_group(traces: Sequence[Any], name: str) -> list[int] | None:
    """The group's latents when every trace has the same list (``None`` for per-episode groups)."""
    lists = {tuple(t.groups.get(name, [])) for t in traces}
    return list(lists.pop()) if len(lists) == 1 else None


def _nanmean(values: Sequence[float]) -> float | None:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return _f(np.nanmean(a)) if np.any(~np.isnan(a)) else None
