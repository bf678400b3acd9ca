"""Teacher-forced replay: run (prompt, response) pairs through the model with the same interventions as in
generation and read chosen SAE latents token by token.

Scopes map onto the replayed sequence as in generation (:mod:`esr_analysis.steering.interventions`):
``prompt`` = the prompt positions, ``generated`` = the last prompt position and every response position,
``all`` = both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from esr_analysis.models.chat import format_chat
from esr_analysis.steering.residuals import median_norm_function
from esr_analysis.steering.resolve import build_plans, normalise_rows, resolve_rows, validate
from esr_analysis.steering.results import LatentCapture, ReplayResult

if TYPE_CHECKING:  # pragma: no cover
    import torch


def scope_masks(attention_mask: torch.Tensor, first_response: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scope masks ``[B, T, 1]`` of a teacher-forced batch: ``all`` = real tokens, ``prompt`` = real tokens before
    ``first_response`` (``[B, 1]``, the index of each row's first response token), ``generated`` = the last prompt
    position and every response position."""
    import torch

    pos = torch.arange(attention_mask.shape[1])[None, :]
    real = attention_mask.bool()
    masks = {"all": real, "prompt": real & (pos < first_response), "generated": real & (pos >= first_response - 1)}
    return {k: v.to(torch.float32)[:, :, None] for k, v in masks.items()}


def replay(
    model: Any,
    pairs: Sequence[tuple[str, str | Sequence[int]]],
    *,
    capture: LatentCapture,
    interventions: Any = None,
    sae: Any = None,
    chat: bool = True,
    batch_size: int = 8,
    remote: bool | str = False,
    progress: bool = True,
    prompt_ids: Sequence[Sequence[int]] | None = None,
) -> list[ReplayResult]:
    """Teacher-force ``(prompt, response)`` pairs with the same interventions and return per-token activations.

    ``response`` is a string (tokenized without special tokens) or the exact generated token ids. The
    scopes map onto the replayed sequence as in generation: ``prompt`` = prompt positions, ``generated`` =
    the last prompt position and every response position, ``all`` = both. ``prompt_ids`` (one list per pair)
    gives the exact model input of each prompt as it was generated (e.g. a stored trial's ``input_ids``)
    instead of rendering ``prompt`` with :func:`~esr_analysis.models.chat.format_chat`.
    """
    import torch
    from tqdm.auto import tqdm

    from esr_analysis.tracing.plans import left_pad
    from esr_analysis.tracing.run import forward_with_plan

    if capture is None:
        raise ValueError("replay needs capture=LatentCapture(latents, layer)")
    prompts = [p for p, _ in pairs]
    rows = normalise_rows(prompts, interventions)
    validate(model, rows, sae, capture)
    if prompt_ids is not None and len(prompt_ids) != len(pairs):
        raise ValueError(f"got {len(prompt_ids)} prompt_ids lists for {len(pairs)} pairs")
    tok = model.tokenizer
    seqs, starts, responses = [], [], []
    for k, (prompt, response) in enumerate(pairs):
        if prompt_ids is None:
            _, p_ids = format_chat(tok, prompt, chat=chat)
        else:
            p_ids = [int(t) for t in prompt_ids[k]]
            if not p_ids:
                raise ValueError(f"empty prompt_ids for prompt {prompt!r}")
        r_ids = list(tok(response, add_special_tokens=False)["input_ids"]) if isinstance(response, str) else list(response)
        if not r_ids:
            raise ValueError(f"empty response for prompt {prompt!r}")
        seqs.append(p_ids + r_ids)
        starts.append(len(p_ids))
        responses.append(response if isinstance(response, str) else tok.decode(r_ids))
    _, addends, ablations = resolve_rows(model, rows, sae, median_norm_function(remote))
    out: list[ReplayResult] = []
    bar = tqdm(total=len(pairs), desc="replay", unit="pair", disable=not progress or len(pairs) <= batch_size)
    for lo in range(0, len(pairs), batch_size):
        idx = list(range(lo, min(lo + batch_size, len(pairs))))
        plans = build_plans(model, sae, addends, ablations, capture, idx)
        ids, mask = left_pad([seqs[i] for i in idx], tok)
        T = ids.shape[1]
        masks = scope_masks(mask, torch.tensor([T - len(seqs[i]) + starts[i] for i in idx])[:, None])
        acts, _ = forward_with_plan(model, ids, mask, plans, masks, stop_after_last=True, remote=remote)
        for j, i in enumerate(idx):
            L = len(seqs[i])
            a = acts[capture.layer][j, T - L:].to(torch.float32)
            out.append(ReplayResult(
                prompt=prompts[i], response=responses[i], tokens=seqs[i],
                token_strings=[tok.decode([t]) for t in seqs[i]], response_start=starts[i],
                latents=list(capture.latents), layer=capture.layer, latent_acts=a.tolist(),
            ))
        bar.update(len(idx))
    bar.close()
    return out
