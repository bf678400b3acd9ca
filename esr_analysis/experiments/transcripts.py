"""Readable transcripts of graded trials: the prompt, the steering, each judge attempt with its score.

A reader cannot judge a rate without seeing what the responses look like, so reports and notebooks print a
few trials next to every table. :func:`pick_transcripts` chooses them deterministically (ESR episodes first,
then other multi-attempt trials, then single-attempt trials spread over the first-attempt scores) and
:func:`format_transcript` renders one as plain text (no markdown, so degenerate output full of fences or
markup prints as it is). Definitions of attempts, scores and degraded text: ``docs/method.md#metrics``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from esr_analysis.metrics.definitions import is_degraded

if TYPE_CHECKING:
    import pandas as pd

PICK_KINDS = ("esr", "multi_attempt", "degraded", "spread")
"""What :func:`pick_transcripts` can look for: ``esr`` (multi-attempt and last score above the first),
``multi_attempt`` (several attempts, not an ESR episode), ``degraded`` (a run of 5 identical words) and
``spread`` (single-attempt trials at evenly spaced ranks of the first-attempt score)."""


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN / pandas NA
    except (TypeError, ValueError):
        return False


def attempts_of(grade: Mapping[str, Any] | None) -> list[tuple[str, float | None]]:
    """The judge's attempts as ``(text, score)`` in order (our grades store ``text``; the authors'
    ``attempt_text``). Empty for a missing grade or one with an error."""
    if not grade or grade.get("error"):
        return []
    out = []
    for a in grade.get("attempts") or []:
        text = a.get("text", a.get("attempt_text", "")) or ""
        score = a.get("score")
        out.append((str(text), None if _missing(score) else float(score)))
    return out


def _strength(row: Mapping[str, Any]) -> str:
    boost: Any = row.get("boost")
    if _missing(boost):
        return "no steering"
    rel = None
    for iv in row.get("interventions") or []:
        if isinstance(iv, Mapping) and not _missing(iv.get("strength_relative")):
            rel = float(iv["strength_relative"])
            break
    text = f"boost {float(boost):g} SAE units"
    return text + (f" (= {rel:.2f} x the median residual norm)" if rel is not None else "")


def _wrap(text: str, width: int, indent: str) -> str:
    lines = []
    for para in text.strip("\n").split("\n"):
        lines.extend(textwrap.wrap(para, width=width, initial_indent=indent, subsequent_indent=indent,
                                   replace_whitespace=False, drop_whitespace=True) or [indent.rstrip()])
    return "\n".join(lines)


def _clip(text: str, max_chars: int | None) -> str:
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[:max_chars].rstrip() + f" [... {len(text) - max_chars} more characters]"


def format_transcript(row: Mapping[str, Any], *, width: int = 100, max_chars: int | None = 700) -> str:
    """One trial (a row of :func:`esr_analysis.store.load_run`) as plain text.

    Header: condition, latent and label, strength (SAE units and, when recorded, relative to the median
    residual norm), seed; then a verdict line (attempt count, scores ``s_1 -> s_k``, ESR episode, degraded);
    then the prompt and each attempt with its score, each clipped to ``max_chars`` characters (``None``:
    whole). A trial whose grade has no attempts shows the raw response.
    """
    attempts = attempts_of(row.get("grade"))
    response = row.get("response") or ""
    latent: Any = row.get("latent")
    head = [str(row.get("condition") or "?")]
    if not _missing(latent):
        label = row.get("latent_label")
        head.append(f"latent {int(latent)}" + (f" ({label})" if label and not _missing(label) else ""))
    head.append(_strength(row))
    if not _missing(row.get("seed")):
        head.append(f"seed {int(row['seed'])}")
    scores = [s for _, s in attempts if s is not None]
    if row.get("error") and not _missing(row.get("error")):
        verdict = f"excluded: {row['error']}"
    elif not scores:
        verdict = "no scored attempt (excluded from every metric)"
    else:
        plural = "s" if len(scores) > 1 else ""
        verdict = f"{len(scores)} attempt{plural}, scores " + " -> ".join(f"{s:g}" for s in scores)
        if len(scores) > 1:
            verdict += "  [ESR episode]" if scores[-1] > scores[0] else "  [multi-attempt, not improved]"
    if is_degraded(response):
        verdict += "  [degraded: a word repeated 5+ times in a row]"
    parts = ["=" * min(width, 100), " | ".join(head), verdict, "PROMPT:",
             _wrap(str(row.get("prompt") or ""), width, "  ")]
    if attempts:
        for i, (text, score) in enumerate(attempts, 1):
            parts.append(f"ATTEMPT {i} (score {'-' if score is None else f'{score:g}'}):")
            parts.append(_wrap(_clip(text, max_chars), width, "  "))
    else:
        parts.append("RESPONSE:")
        parts.append(_wrap(_clip(str(response), max_chars), width, "  "))
    return "\n".join(parts)


def _kind_mask(df: pd.DataFrame, kind: str) -> pd.Series:
    import pandas as pd

    n = df["n_attempts"].fillna(0).astype(int)
    first = df["first_score"].astype(float)
    last = df["last_score"].astype(float)
    if kind == "esr":
        return (n > 1) & (last > first)
    if kind == "multi_attempt":
        return (n > 1) & ~(last > first)
    if kind == "degraded":
        return pd.Series([is_degraded(r) for r in df["response"]], index=df.index, dtype=bool)
    if kind == "spread":
        return n == 1
    raise ValueError(f"unknown transcript kind {kind!r}; choose from {', '.join(PICK_KINDS)}")


def pick_transcripts(df: pd.DataFrame, n: int = 3, *, condition: str | None = None,
                     kinds: Sequence[str] = ("esr", "multi_attempt", "spread")) -> pd.DataFrame:
    """Up to ``n`` scored trials of ``df`` (of one ``condition`` if given), chosen by ``kinds`` in order
    (:data:`PICK_KINDS`) without repeats; a ``why`` column says which kind picked each.

    Within a kind, trials are taken in ``trial_id`` order, except ``spread``, which takes trials at evenly
    spaced ranks of the first-attempt score (lowest to highest) so the picks show the range of scores.
    The choice depends only on the trials, never on a random draw.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    for k in kinds:
        if k not in PICK_KINDS:
            raise ValueError(f"unknown transcript kind {k!r}; choose from {', '.join(PICK_KINDS)}")
    pool = df
    if condition is not None:
        if condition not in set(df["condition"]):
            present = ", ".join(map(str, sorted(set(df["condition"]))))
            raise ValueError(f"no trials of condition {condition!r}; present: {present}")
        pool = df[df["condition"] == condition]
    pool = pool[pool["n_attempts"].fillna(0).astype(int) >= 1].sort_values("trial_id")
    chosen: list[Any] = []
    why: list[str] = []
    for kind in kinds:
        left = n - len(chosen)
        if left <= 0:
            break
        cand = pool[_kind_mask(pool, kind) & ~pool.index.isin(chosen)]
        if cand.empty:
            continue
        if kind == "spread":
            cand = cand.sort_values(["first_score", "trial_id"])
            m = len(cand)
            ranks = sorted({round(i * (m - 1) / max(left - 1, 1)) for i in range(min(left, m))})
            idx = [cand.index[r] for r in ranks]
        else:
            idx = list(cand.index[:left])
        chosen.extend(idx)
        why.extend([kind] * len(idx))
    out = pool.loc[chosen].copy()
    out["why"] = why
    return out


def transcripts_text(df: pd.DataFrame, **kwargs: Any) -> str:
    """:func:`format_transcript` of every row of ``df`` (e.g. from :func:`pick_transcripts`), joined."""
    if df.empty:
        return "(no scored trials to show)"
    fmt_kw = {k: kwargs.pop(k) for k in ("width", "max_chars") if k in kwargs}
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)}")
    return "\n".join(format_transcript(r, **fmt_kw) for r in df.to_dict("records"))

