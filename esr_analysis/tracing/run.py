"""Traces that apply layer plans: one batched generate, teacher-forced forwards, residual replacement, scans.

The functions take plain tensors and :class:`~esr_analysis.tracing.plans.LayerPlan` objects, so the code
inside each trace is serialisable the way NDIF needs it (``remote=True``); it is tested with
``remote="local"``, which serialises the trace exactly as for NDIF.

Conventions inside a trace: decoder block ``L`` is found through :mod:`esr_analysis.tracing.sites` (paths
resolved once, outside the trace, by inspecting the module tree), so wrapped models work too; its output is
read and replaced with :func:`~esr_analysis.tracing.sites.block_hidden` /
:func:`~esr_analysis.tracing.sites.set_block_hidden` (a tensor on transformers 5, a tuple before). Batches are
left-padded (:func:`~esr_analysis.tracing.plans.left_pad`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from esr_analysis.tracing.core import import_nnsight, register_package_for_remote
from esr_analysis.tracing.plans import LayerPlan, edit_delta, encode_slice, step0_masks
from esr_analysis.tracing.sites import block_hidden, decoder_layers, find_sites, set_block_hidden

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _apply_plan(module: Any, lp: LayerPlan, masks: dict[str, Any]) -> Any:
    """Inside a trace: apply ``lp``'s edits to ``module``'s output and return the (edited) hidden state."""
    hidden = block_hidden(module)
    delta = edit_delta(hidden, lp, masks)
    if delta is None:
        return hidden
    hidden = hidden + delta.to(hidden.dtype)
    set_block_hidden(module, hidden)
    return hidden


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
        register_package_for_remote()
    plans = sorted(plans, key=lambda p: p.layer)
    masks0 = step0_masks(attention_mask)
    one = torch.ones(1, 1, 1)
    masks_n = {"all": one, "prompt": None, "generated": one}
    sites = find_sites(lm)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    n_steps = max_new_tokens
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was never reached.*")
        kwargs = dict(generate_kwargs)
        if "generation_config" not in kwargs:
            kwargs["max_new_tokens"] = max_new_tokens
        with lm.generate(remote=remote, **kwargs) as tracer:
            with tracer.invoke(inputs):
                reads = nnsight.save({p.layer: [] for p in plans if p.read is not None})
                layers = decoder_layers(lm, sites)
                for step in tracer.iter[:n_steps]:
                    masks = masks0 if step == 0 else masks_n
                    for lp in plans:
                        hidden = _apply_plan(layers[lp.layer], lp, masks)
                        if lp.read is not None:
                            f = encode_slice(hidden[:, -1, :].to(lp.read.W_enc.dtype), lp.read)
                            reads[lp.layer].append(f.detach().cpu())
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
        register_package_for_remote()
    plan_by_layer = {p.layer: p for p in plans}
    layers_touched = sorted(set(plan_by_layer) | set(save_residual_layers))
    sites = find_sites(lm)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    with torch.no_grad(), lm.trace(inputs, remote=remote) as tracer:
        acts = nnsight.save({})
        resid = nnsight.save({})
        layers = decoder_layers(lm, sites)
        for layer in layers_touched:
            lp = plan_by_layer.get(layer, LayerPlan(layer=layer))
            hidden = _apply_plan(layers[layer], lp, masks)
            if lp.read is not None:
                acts[layer] = encode_slice(hidden.to(lp.read.W_enc.dtype), lp.read).detach().cpu()
            if layer in save_residual_layers:
                resid[layer] = hidden.detach().cpu()
        if stop_after_last:
            tracer.stop()
    return dict(acts), dict(resid)


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
        register_package_for_remote()
    sites = find_sites(lm)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    with torch.no_grad(), lm.trace(inputs, remote=remote):
        if residual is not None:
            module = decoder_layers(lm, sites)[layer]
            hidden = block_hidden(module)
            set_block_hidden(module, residual.to(device=hidden.device, dtype=hidden.dtype))
        logits = nnsight.save(lm.output.logits.detach().cpu())
    return logits


def scan_shapes(lm, text: str, layer: int) -> tuple[int, ...]:
    """Shape of block ``layer``'s output for ``text`` without running weights (works on meta models)."""
    nnsight = import_nnsight()
    sites = find_sites(lm)
    with lm.scan(text):
        hidden = block_hidden(decoder_layers(lm, sites)[layer])
        shape = nnsight.save(tuple(hidden.shape))
    return tuple(shape)
