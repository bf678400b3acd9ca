"""Traces that apply layer plans: one batched generate, teacher-forced forwards, residual replacement, scans.

The functions take plain tensors and :class:`~esr_analysis.tracing.plans.LayerPlan` objects and turn the plans
into plain dicts *before* entering a trace; inside a trace only :mod:`esr_analysis.tracing.kernels` and torch
run, and no object of this package is constructed, so the request is what NDIF's protected environment
accepts (``remote=True``). Every function honours ``remote`` for every trace it runs. Tested with
``remote="local"`` (NDIF's serialisation, run locally; ``tests/test_steering_generate.py``) and against a real
local NDIF server (``tests/test_tracing_ndif_local.py``).

Conventions inside a trace: the decoder-layer path comes from :mod:`esr_analysis.tracing.sites` (resolved
once, outside the trace, by inspecting the module tree), so wrapped models work too; inside, the path is
walked and block outputs are read and replaced by :mod:`~esr_analysis.tracing.kernels` (a tensor on
transformers 5, a tuple before). Batches are left-padded (:func:`~esr_analysis.tracing.plans.left_pad`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from esr_analysis.tracing import kernels
from esr_analysis.tracing.core import import_nnsight, register_kernels
from esr_analysis.tracing.plans import LayerPlan, step0_masks
from esr_analysis.tracing.sites import find_sites

if TYPE_CHECKING:  # pragma: no cover
    import torch


def generate_with_plan(
    lm,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    plans: list[LayerPlan],
    *,
    max_new_tokens: int,
    generate_kwargs: dict[str, Any],
    remote: bool | str = False,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """One batched nnsight generate that applies ``plans`` at every step.

    Returns the full token ids ``[B, T + n]`` and, for each layer with a read, the captured latent
    activations ``[B, n, k]``: entry ``t`` is read at the position whose output is generated token ``t``
    (the last prompt position for ``t = 0``, generated token ``t - 1`` after that).
    """
    import torch

    nnsight = import_nnsight()
    if remote:
        register_kernels()
    kplans = [p.as_kernel() for p in sorted(plans, key=lambda p: p.layer)]
    masks0 = step0_masks(attention_mask)
    one = torch.ones(1, 1, 1)
    masks_n = {"all": one, "prompt": None, "generated": one}
    layers_path = find_sites(lm).layers
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    n_steps = max_new_tokens
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was never reached.*")
        kwargs = dict(generate_kwargs)
        if "generation_config" not in kwargs:
            kwargs["max_new_tokens"] = max_new_tokens
        with lm.generate(remote=remote, **kwargs) as tracer:
            with tracer.invoke(inputs):
                reads = nnsight.save({p["layer"]: [] for p in kplans if p["read"] is not None})
                layers = kernels.module_at(lm, layers_path)
                for step in tracer.iter[:n_steps]:
                    masks = masks0 if step == 0 else masks_n
                    for lp in kplans:
                        hidden = kernels.apply_plan(layers[lp["layer"]], lp, masks)
                        if lp["read"] is not None:
                            reads[lp["layer"]].append(kernels.read_slice(hidden[:, -1, :], lp))
            with tracer.invoke():
                ids = nnsight.save(tracer.result)
    ids = ids.detach().cpu()
    captured = {layer: torch.stack(v, dim=1) for layer, v in reads.items() if len(v)}
    return ids, captured


def forward_with_plan(
    lm,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    plans: list[LayerPlan],
    masks: dict[str, torch.Tensor],
    *,
    save_residual_layers: tuple[int, ...] = (),
    stop_after_last: bool = False,
    remote: bool | str = False,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """One teacher-forced forward pass applying ``plans`` with the given per-scope masks ``[B, T, 1]``.

    Returns ``(latent_acts, residuals)``: for every layer with a read, the activations ``[B, T, k]`` after
    the edits; for every layer in ``save_residual_layers``, the (post-edit) block output ``[B, T, D]``.
    With ``stop_after_last`` the forward pass stops after the deepest layer touched (no LM head).
    """
    import torch

    nnsight = import_nnsight()
    if remote:
        register_kernels()
    plan_by_layer = {p.layer: p for p in plans}
    layers_touched = sorted(set(plan_by_layer) | set(save_residual_layers))
    # Every plan is built here, before the trace: constructing one inside it would ship its class by value.
    kplans = [plan_by_layer.get(layer, LayerPlan(layer=layer)).as_kernel() for layer in layers_touched]
    save_layers = tuple(int(x) for x in save_residual_layers)
    layers_path = find_sites(lm).layers
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    with torch.no_grad(), lm.trace(inputs, remote=remote) as tracer:
        acts = nnsight.save({})
        resid = nnsight.save({})
        layers = kernels.module_at(lm, layers_path)
        for lp in kplans:
            layer = lp["layer"]
            hidden = kernels.apply_plan(layers[layer], lp, masks)
            if lp["read"] is not None:
                acts[layer] = kernels.read_slice(hidden, lp)
            if layer in save_layers:
                resid[layer] = hidden.detach().cpu()
        if stop_after_last:
            tracer.stop()
    return dict(acts), dict(resid)


def forward_pooled(
    lm,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layer: int,
    encoder: dict[str, Any],
    pool_mask: torch.Tensor,
    *,
    chunk: int = 2048,
    remote: bool | str = False,
) -> dict[str, torch.Tensor]:
    """Per-row pooled statistics of an encoder's latents on block ``layer``'s output over ``pool_mask [B, T, 1]``:
    ``{"max", "count", "sum"}`` each ``[B, k]`` (:func:`~esr_analysis.tracing.kernels.pool_slice`), pooled
    inside the trace, so only ``[B, k]`` tensors come back. ``encoder`` is a plain slice dict (``W_dec`` not
    needed); the forward pass stops after block ``layer``. Only the window of positions from the first to the
    last one that ``pool_mask`` selects in any row is encoded (:func:`pool_window`): with left padding and the
    assistant turn last, that is the longest answer of the batch, not the prompts and padding before it.
    """
    import torch

    nnsight = import_nnsight()
    if remote:
        register_kernels()
    layers_path = find_sites(lm).layers
    t0, t1 = pool_window(pool_mask)
    window = pool_mask[:, t0:t1]
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    with torch.no_grad(), lm.trace(inputs, remote=remote) as tracer:
        layers = kernels.module_at(lm, layers_path)
        hidden = kernels.block_hidden(layers[int(layer)])
        pooled = nnsight.save(kernels.pool_slice(hidden[:, t0:t1], encoder, window, int(chunk)))
        tracer.stop()
    return dict(pooled)


def pool_window(pool_mask: torch.Tensor) -> tuple[int, int]:
    """``(t0, t1)``: the smallest range of positions holding every nonzero of ``pool_mask [B, T, 1]`` (the whole
    ``(0, T)`` when it has none). Pooling over ``[t0, t1)`` equals pooling over all ``T`` positions, because the
    positions outside it are masked in every row."""
    hit = (pool_mask != 0).flatten(2).any(-1).any(0).nonzero()
    if hit.numel() == 0:
        return 0, int(pool_mask.shape[1])
    return int(hit[0, 0]), int(hit[-1, 0]) + 1


def forward_with_residual_replaced(
    lm,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layer: int,
    residual: torch.Tensor | None,
    *,
    remote: bool | str = False,
) -> torch.Tensor:
    """Logits ``[B, T, V]`` of a forward pass whose block-``layer`` output is *replaced* by ``residual``.

    ``residual`` is ``[B, T, D]`` (cast to the model's dtype); ``None`` runs the unedited model. Used to
    measure an SAE's CE loss recovered (reconstruction or zeros in place of the residual).
    """
    import torch

    nnsight = import_nnsight()
    if remote:
        register_kernels()
    layer_path = f"{find_sites(lm).layers}.{int(layer)}"
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    with torch.no_grad(), lm.trace(inputs, remote=remote):
        if residual is not None:
            kernels.replace_output(kernels.module_at(lm, layer_path), residual)
        logits = nnsight.save(lm.output.logits.detach().cpu())
    return logits


def scan_shapes(lm, text: str, layer: int) -> tuple[int, ...]:
    """Shape of block ``layer``'s output for ``text`` without running weights (works on meta models)."""
    nnsight = import_nnsight()
    layers_path = find_sites(lm).layers
    with lm.scan(text):
        hidden = kernels.block_hidden(kernels.module_at(lm, layers_path)[layer])
        shape = nnsight.save(tuple(hidden.shape))
    return tuple(shape)
