"""One trace for attribution: read component sites (and their gradients), edit them, measure a metric.

:func:`site_pass` runs one teacher-forced forward pass (optionally with a backward pass) that, layer by layer in
forward order, applies the steering plans at block outputs, reads the ``head`` (the whole ``o_proj`` input of
the layer, ``[B, T, H * d_head]``; heads are split on the client), ``mlp_out`` and ``block_out`` sites,
applies edits (:func:`~esr_analysis.tracing.kernels.blend`: patching from a counterfactual, interpolation
for integrated gradients, additive latent edits), then measures a metric:

* ``{"kind": "logit_diff", "position", "target", "other", "exclude"}``: the logit difference at one position
  (:func:`~esr_analysis.tracing.kernels.logit_diff`);
* ``{"kind": "latent_pre", "layer", "positions", "slice"}``: summed SAE pre-activations at a block output
  (:func:`~esr_analysis.tracing.kernels.latent_pre_sum`).

With ``backward`` the metric (summed over rows, so each row gets its own gradient) is back-propagated and the
gradient at every read site returned. Gradients need no weights with ``requires_grad``: the first read site
is made a gradient source in place (:func:`~esr_analysis.tracing.kernels.track_grad`), which is also how a
backward pass works on NDIF. With ``dla`` the direct logit attribution of every head and MLP is computed
inside the trace (the model's weights never leave the server). Every key is ``"<layer>:<kind>"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from esr_analysis.errors import ConfigError
from esr_analysis.tracing import kernels
from esr_analysis.tracing.core import hf_module, import_nnsight, register_kernels
from esr_analysis.tracing.plans import LayerPlan
from esr_analysis.tracing.sites import find_sites

if TYPE_CHECKING:  # pragma: no cover
    import torch

SITE_ORDER = ("head", "mlp_out", "block_out")
"""The order in which one decoder layer computes the sites :func:`site_pass` reads."""


def norm_facts(lm: Any) -> tuple[bool, float]:
    """``(pre_norm_only, eps)``: whether every block adds its attention and MLP outputs to the residual stream
    as they are (Llama, Qwen2; not Gemma 2/3, which normalise them first), and the final RMS norm's epsilon."""
    sites = find_sites(lm)
    root = hf_module(lm)
    layer0 = root.get_submodule(f"{sites.layers}.0")
    post = any(hasattr(layer0, n) for n in ("post_attention_layernorm", "post_feedforward_layernorm")) and \
        hasattr(layer0, "pre_feedforward_layernorm")
    norm = root.get_submodule(sites.final_norm)
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None) or 1e-6
    return not post, float(eps)


SANDBOX_GRADIENTS = (
    "this trace needs gradients (backward pass), and the server ran it in its sandbox (an untrusted request), "
    "which cannot return them: ndif 0.1.2 runs the backward on the model host after the forward, past the "
    "sandbox runner's .grad request (OutOfOrderError; ndif's sandbox/ARCHITECTURE.md, 'Current "
    "simplifications'). Run it as a trusted request, or use what needs no backward pass: activation patching "
    "and direct logit attribution (both tested on the sandboxed path).")


def site_pass(lm: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`_site_pass`, with the sandbox's failure on a backward pass turned into a clear error
    (:data:`SANDBOX_GRADIENTS`)."""
    try:
        return _site_pass(lm, *args, **kwargs)
    except Exception as exc:
        text = str(exc)
        if kwargs.get("backward") and kwargs.get("remote") and "OutOfOrderError" in text and ".grad" in text:
            raise RuntimeError(SANDBOX_GRADIENTS) from exc
        raise


def _site_pass(
    lm: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    plans: Sequence[LayerPlan],
    masks: dict[str, Any],
    *,
    reads: Mapping[int, Sequence[str]],
    metric: dict[str, Any],
    backward: bool = False,
    edits: dict[str, dict[str, Any]] | None = None,
    dla: bool = False,
    remote: bool | str = False,
) -> dict[str, Any]:
    """Run one forward (and with ``backward`` one backward) pass; see the module docstring.

    ``reads`` maps a layer to the site kinds read there; ``edits`` maps ``"<layer>:<kind>"`` to a
    :func:`~esr_analysis.tracing.kernels.blend` edit (tensors broadcastable to the site's value).
    Returns ``{"metric": [B], "other": [B] | None, "values": {key: [B, T, W]}, "grads": {key: [B, T, W]},
    "dla": {"heads": [L, B, H], "mlp": [L, B], "bias": [L, B], "embed": [B], "total": [B]} | None}``, all on
    the CPU. For ``dla`` the metric must be a logit difference and every layer's heads and MLP must be read.
    """
    import torch

    nnsight = import_nnsight()
    if remote:
        register_kernels()
    sites = find_sites(lm)
    edits = dict(edits or {})
    kplans = {p.layer: p.as_kernel() for p in plans}
    want = {int(layer): tuple(k for k in SITE_ORDER if k in kinds) for layer, kinds in reads.items()}
    latent_layer = int(metric["layer"]) if metric["kind"] == "latent_pre" else None
    edit_layers = {int(k.split(":")[0]) for k in edits}
    touched = sorted(set(want) | set(kplans) | edit_layers | ({latent_layer} if latent_layer is not None else set()))
    if latent_layer is not None and backward:
        want = {layer: kinds for layer, kinds in want.items() if layer <= latent_layer}  # no gradient beyond it
    pre_norm, eps = norm_facts(lm)
    if dla:
        if metric["kind"] != "logit_diff":
            raise ConfigError("direct logit attribution needs a logit-difference metric")
        if not pre_norm:
            raise ConfigError("direct logit attribution is implemented for pre-norm blocks (Llama, Qwen2) only: "
                              "Gemma normalises attention and MLP outputs before adding them")
        if any(set(want.get(layer, ())) < {"head", "mlp_out"} for layer in range(sites.n_layers)):
            raise ConfigError("direct logit attribution needs every layer's heads and MLP read")
    paths = {"head": sites.o_proj, "mlp_out": sites.mlp, "block_out": ""}
    facts = {"position": int(metric.get("position", -1)), "n_layers": sites.n_layers, "n_heads": sites.n_heads,
             "eps": eps}
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if metric["kind"] == "logit_diff" and facts["position"] in (-1, input_ids.shape[1] - 1):
        inputs["logits_to_keep"] = 1  # the unembedding at the last position only (the [B, T, V] logits dominate)
        metric = {**metric, "position": -1}
    grad_ctx = torch.enable_grad() if backward else torch.no_grad()
    # Inside the trace: one statement per line (remote="local" re-compiles the body and miscounts continuation
    # lines, which breaks nnsight's `with t.backward():` capture), and only kernels and torch.
    # Only plain data enters the trace: a `Sites` object (or any other object of this package) referenced in
    # the body would be pickled by reference, and the server has no esr_analysis (ModuleNotFoundError there).
    layers_path, final_norm_path, o_proj_path, unembed_path = sites.layers, sites.final_norm, sites.o_proj, sites.unembed
    with grad_ctx, lm.trace(inputs, remote=remote):
        values = nnsight.save({})
        grads = nnsight.save({})
        out = nnsight.save({})
        tracked = []
        layers = kernels.module_at(lm, layers_path)
        for layer in touched:
            block = layers[layer]
            if dla and layer == 0:
                facts["embed"] = block.input[:, facts["position"], :]
            for kind in SITE_ORDER:
                key = f"{layer}:{kind}"
                read = kind in want.get(layer, ())
                if not (read or key in edits or kind == "block_out"):
                    continue
                x = kernels.site_value(block, kind, paths[kind], kplans.get(layer), masks)
                if key in edits:
                    x = kernels.blend(x, edits[key])
                    kernels.set_site_value(block, kind, paths[kind], x)
                if read and backward:
                    x = kernels.track_grad(x)
                    tracked.append((key, x))
                if read:
                    values[key] = x.detach().cpu()
                if kind == "block_out" and layer == latent_layer:
                    value = kernels.latent_pre_sum(x, metric)
        if metric["kind"] == "logit_diff" and dla:
            facts["final_in"] = kernels.module_at(lm, final_norm_path).input
        if metric["kind"] == "logit_diff":
            value, other = kernels.logit_diff(lm.output.logits, metric)
            out["other"] = other.detach().cpu()
        if dla:
            facts["target"] = metric["target"]
            facts["other"] = other
            unembed = kernels.module_at(lm, unembed_path)
            final_norm = kernels.module_at(lm, final_norm_path)
            out["dla"] = kernels.dla_terms(unembed, final_norm, layers, o_proj_path, values, facts)
        out["metric"] = value.detach().float().cpu()
        if backward:
            total = value.sum()
            with total.backward():
                for key, x in reversed(tracked):
                    grads[key] = x.grad.detach().cpu()
    return {"metric": out["metric"], "other": out.get("other"), "values": dict(values), "grads": dict(grads),
            "dla": out.get("dla")}
