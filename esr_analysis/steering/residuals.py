"""The one residual reader (:func:`read_residuals`) and the one attention-sink rule (:func:`ordinary_positions`).

Definitions
-----------
* The **residual at layer L** of a token is the output of decoder block ``L`` at that token's position (the
  residual stream after block ``L``), read in one teacher-forced forward pass that stops after block ``L``.
* **Attention sinks.** A few positions carry residuals whose norm is tens of times the typical norm: the
  model parks attention there, their content is not about the text. Two kinds are dropped:

  1. the first :data:`SINK_PREFIX` (1) real positions of every sequence (the first token, a sink in every
     model we use), and
  2. any other real position whose L2 norm exceeds :data:`SINK_NORM_FACTOR` (10) times the median norm of
     the non-prefix real positions of the set read together (rare; e.g. a token right after a special
     token).

  Every other real (non-padding) position is **ordinary**. Everything that summarises "typical" residuals
  uses ordinary positions only: the median residual norm behind relative steering units
  (:func:`median_residual_norm`), mean residuals for contrastive directions
  (:func:`esr_analysis.steering.directions.mean_residual`), the SAE's training data and quality measures
  (:mod:`esr_analysis.sae.training`, :mod:`esr_analysis.sae.harvest`). The rule lives only in
  :func:`ordinary_positions`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from esr_analysis.steering.resolve import (
    build_plans,
    check_layer,
    intervention_rows,
    normalise_rows,
    resolve_rows,
    validate,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

SINK_PREFIX = 1
"""Real positions at the start of every sequence that are attention sinks."""

SINK_NORM_FACTOR = 10.0
"""A later position is a sink when its norm exceeds this multiple of the set's median (non-prefix) norm."""

REFERENCE_TEXTS = (
    "Explain how to make a cup of tea.",
    "How do you change a flat tyre on a bicycle?",
    "Write a short note thanking a friend for dinner.",
    "What is the difference between weather and climate?",
    "Describe the steps to plant a tree.",
    "How do you compute the average of a list of numbers?",
    "Give three tips for a job interview.",
    "Explain what a budget is and why it helps.",
)
"""Neutral prompts over which :func:`median_residual_norm` is measured by default."""


def ordinary_positions(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                       prefix: int = SINK_PREFIX, factor: float = SINK_NORM_FACTOR) -> torch.Tensor:
    """Boolean mask of the ordinary positions (module docstring) of residuals read together.

    ``hidden`` is ``[B, T, D]`` (left-padded rows, ``attention_mask [B, T]`` marking real tokens; ``None`` =
    all real) and the result ``[B, T]``; the first ``prefix`` real positions of each row are sinks. A flat set
    ``[N, D]`` of positions already without their prefix (harvested activations) gives ``[N]`` and only the
    norm rule applies. The median is taken over all non-prefix real positions passed in.
    """
    import torch

    if hidden.ndim == 2:
        return ordinary_positions(hidden[None], None, prefix=0, factor=factor)[0]
    if hidden.ndim != 3:
        raise ValueError(f"residuals must be [B, T, D] or [N, D], got shape {tuple(hidden.shape)}")
    real = torch.ones(hidden.shape[:2], dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    real = real.to(hidden.device)
    rank = real.long().cumsum(dim=1)  # 1 at the first real position of a row, 2 at the second, ...
    candidates = real & (rank > prefix)
    norms = hidden.float().norm(dim=-1)
    if not bool(candidates.any()):
        return candidates
    median = norms[candidates].median()
    return candidates & (norms <= factor * median)


def residual_batch(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int, *,
                   plans: Sequence[Any] = (), masks: dict[str, Any] | None = None,
                   remote: bool | str = False) -> torch.Tensor:
    """Block ``layer``'s output ``[B, T, D]`` (after ``plans``' edits, cast to float32) of one left-padded batch.

    ``masks`` are the per-scope position masks of the edits (default: the prefill masks,
    :func:`esr_analysis.tracing.plans.step0_masks`). The pass stops after the deepest layer touched.
    """
    from esr_analysis.tracing.plans import step0_masks
    from esr_analysis.tracing.run import forward_with_plan

    _, resid = forward_with_plan(model, input_ids, attention_mask, list(plans),
                                 step0_masks(attention_mask) if masks is None else masks,
                                 save_residual_layers=(layer,), stop_after_last=True, remote=remote)
    return resid[layer].float()


def read_residuals(model: Any, prompts: Sequence[str] | Sequence[Sequence[int]], layer: int, *,
                   interventions: Any = None, sae: Any = None, chat: bool = True, batch_size: int | None = None,
                   remote: bool | str = False) -> list[torch.Tensor]:
    """Block ``layer``'s output ``[T_i, d_model]`` (float32) for each input, after the interventions.

    An input is a prompt (rendered by the chat template with ``chat``, else tokenized as raw text with the
    tokenizer's special tokens) or a list of token ids used as is. Interventions apply with the replay scopes
    (the whole input counts as prompt). Inputs run in left-padded batches of ``batch_size`` (default: one
    batch). This is also the remote-friendly way to get residuals for local SAE encoding.
    """
    from esr_analysis.models.chat import format_chat
    from esr_analysis.tracing.plans import left_pad

    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("read_residuals needs a non-empty list of prompts or token-id lists")
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    pretokenized = all(not isinstance(p, str) for p in prompts)
    if pretokenized:
        seqs = [[int(t) for t in p] for p in prompts]
        if any(not s for s in seqs):
            raise ValueError("every token-id list must be non-empty")
        rows = intervention_rows(len(seqs), interventions)
    else:
        rows = normalise_rows(list(prompts), interventions)  # type: ignore[arg-type]
    validate(model, rows, sae, None)
    check_layer(model, layer)
    if not pretokenized:
        seqs = [format_chat(model.tokenizer, p, chat=chat)[1] for p in prompts]  # type: ignore[arg-type]
    _, addends, ablations = resolve_rows(model, rows, sae, median_norm_function(remote))
    step = batch_size or len(seqs)
    out: list[torch.Tensor] = []
    for lo in range(0, len(seqs), step):
        idx = list(range(lo, min(lo + step, len(seqs))))
        plans = build_plans(model, sae, addends, ablations, None, idx)
        ids, mask = left_pad([seqs[i] for i in idx], model.tokenizer)
        h = residual_batch(model, ids, mask, layer, plans=plans, remote=remote)
        T = ids.shape[1]
        out.extend(h[j, T - len(seqs[i]):] for j, i in enumerate(idx))
    return out


def ordinary_residuals(model: Any, prompts: Sequence[str] | Sequence[Sequence[int]], layer: int, *,
                       chat: bool = True, batch_size: int | None = None, prefix: int = SINK_PREFIX,
                       factor: float = SINK_NORM_FACTOR, remote: bool | str = False) -> torch.Tensor:
    """Block ``layer``'s residuals ``[N, D]`` (float32) at the ordinary positions of all ``prompts`` (unsteered),
    in order; the norm rule's median is over the whole set (see :func:`ordinary_positions`)."""
    import torch

    rows = read_residuals(model, prompts, layer, chat=chat, batch_size=batch_size, remote=remote)
    kept = torch.cat([r[prefix:] for r in rows])
    if kept.shape[0] == 0:
        raise ValueError(f"no ordinary positions: every input has at most {prefix} tokens")
    return kept[ordinary_positions(kept, factor=factor)]


_NORM_CACHE: dict[tuple[int, int], float] = {}


def median_norm_function(remote: bool | str) -> Callable[[Any, int], float]:
    """``median_norm(model, layer)`` for :func:`esr_analysis.steering.resolve.resolve_rows`: the default
    :func:`median_residual_norm`, run where ``remote`` says."""

    def median_norm(model: Any, layer: int) -> float:
        return median_residual_norm(model, layer, remote=remote)

    return median_norm


def median_residual_norm(model: Any, layer: int, texts: Sequence[str] = REFERENCE_TEXTS, *,
                         chat: bool = True, remote: bool | str = False) -> float:
    """Median L2 norm of block ``layer``'s output over the ordinary positions of ``texts`` (chat-formatted
    with ``chat``): the unit ``m`` of relative steering strengths. Cached per (model, layer) for the
    default :data:`REFERENCE_TEXTS`. The reading pass runs where ``remote`` says (as every trace of a remote
    call must: run locally, a meta model would load its full weights)."""
    key = _norm_key(model, layer)
    if texts is REFERENCE_TEXTS and key in _NORM_CACHE:
        return _NORM_CACHE[key]
    value = float(ordinary_residuals(model, list(texts), layer, chat=chat, remote=remote).norm(dim=-1).median())
    if texts is REFERENCE_TEXTS:
        _NORM_CACHE[key] = value
    return value


def remember_median_norm(model: Any, layer: int, value: float | None) -> None:
    """Set (``None``: clear) the cached median norm of ``(model, layer)`` for the default reference texts; the
    dry-run planner measures the norm pass once and then lets generations skip it, as they do in a run."""
    if value is None:
        _NORM_CACHE.pop(_norm_key(model, layer), None)
    else:
        _NORM_CACHE[_norm_key(model, layer)] = float(value)


def _norm_key(model: Any, layer: int) -> tuple[int, int]:
    """The key of :data:`_NORM_CACHE`: one entry per (model object, layer)."""
    return (id(model), layer)
