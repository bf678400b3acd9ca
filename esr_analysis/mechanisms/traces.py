"""Per-token traces of an episode: teacher-forced replay with the steering on (exp 6) or off (exp 9), and the
search for "backtracking" latents.

Definitions
-----------
* A **trace** of an episode is the activation, at every token of the replayed sequence (the stored model input
  followed by the stored generated ids), of chosen SAE latents at the output of block ``layer``, read in one
  teacher-forced pass (:func:`esr_analysis.steering.replay.replay`, through :mod:`esr_analysis.tracing`; remote
  with ``remote=``). **Steering on** applies the episode's own interventions exactly as generation did (the
  stored SAE-unit strengths, same scopes: the paper's exp 6); **steering off** applies none (the paper's exp 9).
  The two differ: with the steering on, the steered latent and everything downstream of it stay pushed.
* **Latent groups**: the steered latent(s) of the episode, the off-topic detectors, the backtracking latents and
  any latents the user names; a group's per-token value is the mean over its latents (``how="sum"`` for the
  paper's exp 6 plot).
* **Backtracking latents by label** (:func:`label_search`): each label gets the summed weight of the keywords it
  contains (:data:`BACKTRACK_KEYWORDS`; a label matching :data:`BACKTRACK_EXCLUDE`, e.g. software errors,
  scores 0); latents scoring at least ``min_score`` are kept, best first.
* **Backtracking latents by correlation** (:func:`correction_correlation`): over the response tokens of all
  annotated episodes, the Pearson correlation between each latent's activation and the indicator of the
  correction region ``[correction, on_topic)``; the ``top`` latents by correlation. Residuals come from
  :func:`esr_analysis.steering.residuals.read_residuals` and are encoded by the full SAE on the client, with
  running sums (no ``[tokens, d_sae]`` matrix is kept).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from esr_analysis.mechanisms.boundaries import Boundaries, TokenBoundaries, token_boundaries, token_char_spans
from esr_analysis.mechanisms.episodes import Episode

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

BACKTRACK_KEYWORDS: dict[str, float] = {
    "self-correct": 3, "self correct": 3, "backtrack": 3, "made a mistake": 3, "apolog": 3, "retract": 3,
    "start over": 3, "correction": 2, "correcting": 2, "mistake": 2, "incorrect": 2, "revis": 2, "reconsider": 2,
    "rephras": 2, "hesitat": 2, "second thought": 2, "wait": 2, "actually": 2, "oops": 2, "error": 1, "wrong": 1,
    "acknowledg": 1, "realiz": 1, "realis": 1, "clarif": 1, "sorry": 1, "restart": 1,
}
"""Keyword weights of the label search (our own list; substrings of lower-cased labels)."""

BACKTRACK_EXCLUDE = re.compile(r"\b(?:http|exception|sql|syntax error|stack ?trace|compiler|error code|"
                               r"traceback|status code|runtime error|debug)", re.IGNORECASE)
"""Labels about software errors, not about a writer correcting themselves."""


def label_search(labels: Any, *, keywords: Mapping[str, float] = BACKTRACK_KEYWORDS, min_score: float = 3.0,
                 top: int | None = 16) -> list[tuple[int, float, str]]:
    """``(latent, score, label)`` of the latents whose label scores at least ``min_score`` (module docstring),
    best first (ties by index), at most ``top``. ``labels`` is a
    :class:`~esr_analysis.sae.labels.LatentLabels` or a ``{latent: label}`` mapping."""
    entries = labels.entries if hasattr(labels, "entries") else {int(k): {"label": v} for k, v in labels.items()}
    scored = []
    for i, e in entries.items():
        label = str(e.get("label", "") if isinstance(e, Mapping) else e)
        low = label.lower()
        if not low or BACKTRACK_EXCLUDE.search(low):
            continue
        score = float(sum(w for k, w in keywords.items() if k in low))
        if score >= min_score:
            scored.append((int(i), score, label))
    scored.sort(key=lambda t: (-t[1], t[0]))
    return scored if top is None else scored[:top]


def steered_latents(episode: Episode) -> list[int]:
    """The latents the episode's interventions add (``add_latent`` records), in order, without repeats."""
    return list(dict.fromkeys(int(r["latent"]) for r in episode.interventions if r.get("kind") == "add_latent"))


def episode_sequence(tokenizer: Any, episode: Episode, *, chat: bool = True) -> tuple[list[int], list[int]]:
    """``(prompt_ids, response_ids)`` replayed for an episode: the stored ids, else the prompt rendered by
    :func:`~esr_analysis.models.chat.format_chat` and the response tokenized without special tokens."""
    from esr_analysis.models.chat import format_chat

    p_ids = list(episode.input_ids) if episode.input_ids else format_chat(tokenizer, episode.prompt, chat=chat)[1]
    r_ids = list(episode.output_ids) if episode.output_ids else \
        list(tokenizer(episode.response, add_special_tokens=False)["input_ids"])
    return p_ids, r_ids


def episode_token_boundaries(tokenizer: Any, episode: Episode, boundaries: Boundaries | None, *,
                             chat: bool = True) -> TokenBoundaries:
    """The episode's character boundaries as token indices into its replayed sequence (unclear for ``None``)."""
    p_ids, r_ids = episode_sequence(tokenizer, episode, chat=chat)
    if boundaries is None or boundaries.unclear:
        return TokenBoundaries(-1, -1, -1, len(p_ids), len(p_ids) + len(r_ids))
    return token_boundaries(boundaries, token_char_spans(tokenizer, r_ids, episode.response), len(p_ids))


@dataclass
class EpisodeTrace:
    """One episode's per-token activations ``acts[t, j]`` of ``latents[j]`` (module docstring)."""

    episode_id: str
    kind: str
    steered: bool
    layer: int
    tokens: list[int]
    token_strings: list[str]
    response_start: int
    latents: list[int]
    acts: np.ndarray
    bounds: TokenBoundaries
    groups: dict[str, list[int]] = field(default_factory=dict)

    def series(self, latents: Sequence[int], how: str = "mean") -> np.ndarray:
        """Per-token ``[T]`` mean (or ``how="sum"``) over ``latents``; NaN everywhere for an empty list."""
        import numpy as np

        if not len(latents):
            return np.full(len(self.tokens), np.nan)
        cols = [self.latents.index(int(i)) for i in latents]
        sub = self.acts[:, cols]
        return sub.sum(axis=1) if how == "sum" else sub.mean(axis=1)

    def group(self, name: str, how: str = "mean") -> np.ndarray:
        """:meth:`series` of the named latent group."""
        return self.series(self.groups.get(name, []), how)


def trace_episodes(model: Any, sae: Any, episodes: Sequence[Episode], *, layer: int,
                   groups: Mapping[str, Sequence[int]], steering: bool,
                   boundaries: Sequence[Boundaries | None] | None = None, chat: bool = True, batch_size: int = 4,
                   remote: bool | str = False, progress: bool = False) -> list[EpisodeTrace]:
    """Trace ``episodes`` (module docstring) for the union of ``groups``' latents plus each episode's steered
    latent (group ``"steered"``, added per episode). ``boundaries[i]`` (character offsets into episode ``i``'s
    response) are mapped to tokens; ``None`` gives unclear token boundaries."""
    import numpy as np

    from esr_analysis.steering.replay import replay
    from esr_analysis.steering.results import LatentCapture

    if boundaries is not None and len(boundaries) != len(episodes):
        raise ValueError(f"{len(boundaries)} boundaries for {len(episodes)} episodes")
    steered = {e.episode_id: steered_latents(e) for e in episodes}
    latents = list(dict.fromkeys([int(i) for g in groups.values() for i in g]
                                 + [i for e in episodes for i in steered[e.episode_id]]))
    if not latents:
        raise ValueError("nothing to trace: no latent in groups and no steered latent in the episodes")
    capture = LatentCapture(tuple(latents), layer)
    tok = model.tokenizer
    out: list[EpisodeTrace | None] = [None] * len(episodes)
    with_ids = [i for i, e in enumerate(episodes) if e.input_ids]
    without = [i for i, e in enumerate(episodes) if not e.input_ids]
    for idx, exact in ((with_ids, True), (without, False)):
        if not idx:
            continue
        eps = [episodes[i] for i in idx]
        pairs = [(e.prompt, e.output_ids or e.response) for e in eps]
        ivs = [e.steering() if steering else [] for e in eps]
        results = replay(model, pairs, capture=capture, interventions=ivs, sae=sae, chat=chat,
                         batch_size=batch_size, remote=remote, progress=progress,
                         prompt_ids=[e.input_ids or [] for e in eps] if exact else None)
        for i, e, r in zip(idx, eps, results, strict=True):
            resp_ids = r.tokens[r.response_start:]
            b = boundaries[i] if boundaries is not None else None
            spans = token_char_spans(tok, resp_ids, e.response)
            tb = token_boundaries(b, spans, r.response_start) if b is not None and not b.unclear else \
                TokenBoundaries(-1, -1, -1, r.response_start, len(r.tokens))
            out[i] = EpisodeTrace(
                episode_id=e.episode_id, kind=e.kind, steered=steering, layer=layer, tokens=list(r.tokens),
                token_strings=list(r.token_strings), response_start=r.response_start, latents=list(r.latents),
                acts=np.asarray(r.latent_acts, dtype=np.float64), bounds=tb,
                groups={"steered": steered[e.episode_id], **{k: [int(i) for i in v] for k, v in groups.items()}},
            )
    return [t for t in out if t is not None]


def correction_correlation(model: Any, sae: Any, episodes: Sequence[Episode], bounds: Sequence[TokenBoundaries],
                           *, layer: int, steering: bool = False, top: int = 16, exclude: Sequence[int] = (),
                           batch_size: int = 4, remote: bool | str = False) -> list[tuple[int, float]]:
    """``(latent, r)`` of the ``top`` latents most correlated with the correction region (module docstring),
    over the response tokens of the episodes with clear ``bounds`` (token indices into prompt + response, as
    :func:`token_boundaries` gives). Latents in ``exclude`` (e.g. the steered ones) are skipped."""
    import torch

    from esr_analysis.steering.residuals import read_residuals

    if len(bounds) != len(episodes):
        raise ValueError(f"{len(bounds)} token boundaries for {len(episodes)} episodes")
    keep = [i for i, b in enumerate(bounds) if not b.unclear]
    if not keep:
        raise ValueError("no episode has clear boundaries; nothing to correlate")
    seqs, rows = [], []
    for i in keep:
        e = episodes[i]
        p_ids, r_ids = episode_sequence(model.tokenizer, e)
        if len(p_ids) != bounds[i].response_start or len(p_ids) + len(r_ids) != bounds[i].end:
            raise ValueError(f"episode {e.episode_id}: token boundaries do not fit its replayed sequence")
        seqs.append(p_ids + r_ids)
        rows.append(e.steering() if steering else [])
    sx = sxx = sxy = None
    n = sy = syy = 0.0
    for lo in range(0, len(seqs), batch_size):
        hs = read_residuals(model, seqs[lo:lo + batch_size], layer, interventions=rows[lo:lo + batch_size],
                            sae=sae if steering else None, remote=remote)
        for h, i in zip(hs, keep[lo:lo + batch_size], strict=True):
            b = bounds[i]
            with torch.no_grad():
                x = sae.encode(h[b.response_start:b.end].to(sae.W_enc.dtype)).double()
            y = torch.zeros(x.shape[0], dtype=torch.float64)
            y[b.correction - b.response_start:b.on_topic - b.response_start] = 1.0
            sx = x.sum(0) if sx is None else sx + x.sum(0)
            sxx = (x * x).sum(0) if sxx is None else sxx + (x * x).sum(0)
            sxy = (x * y[:, None]).sum(0) if sxy is None else sxy + (x * y[:, None]).sum(0)
            n += x.shape[0]
            sy += float(y.sum())
            syy += float((y * y).sum())
    assert sx is not None and sxx is not None and sxy is not None
    cov = sxy / n - (sx / n) * (sy / n)
    var_x = (sxx / n - (sx / n) ** 2).clamp(min=0.0)
    var_y = syy / n - (sy / n) ** 2
    denom = (var_x * var_y).sqrt()
    r = torch.where(denom > 1e-12, cov / denom.clamp(min=1e-30), torch.zeros_like(cov))
    for j in exclude:
        r[int(j)] = float("-inf")
    order = torch.argsort(r, descending=True)[:top]
    return [(int(j), float(r[j])) for j in order if torch.isfinite(r[j])]
