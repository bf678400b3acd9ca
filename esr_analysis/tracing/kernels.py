"""The code that runs *inside* a trace, on plain data only: the one module shipped with remote requests.

NDIF does not have ``esr_analysis`` installed, and its protected environment trusts only a whitelist of
modules (torch, numpy, math, ...; not pydantic, not sae_lens, not dataclasses built on the server). So every
function called inside a trace lives here, takes plain ``dict``/``list``/``tuple``/``torch.Tensor`` values,
constructs no objects of this package, and imports only torch. :func:`esr_analysis.tracing.core.register_kernels`
ships this module (and nothing else of the package) by value with each remote request.

Plain-data formats (built on the client by :meth:`esr_analysis.tracing.plans.SliceParams.as_kernel` and
:meth:`esr_analysis.tracing.plans.LayerPlan.as_kernel`, before the trace is entered):

* **slice** ``{"W_enc": [D, k], "b_enc": [k], "W_dec": [k, D], "b_dec": [D], "threshold": [k] | None,
  "apply_b_dec_to_input": bool}``: a sliced SAE (see :class:`esr_analysis.sae.sliced.SlicedSAE`).
* **layer plan** ``{"layer": int, "adds": {scope: [B, D]}, "ablations": [(scope, slice, row_mask[B, k])],
  "read": slice | None}``: everything done at the output of one decoder block, in the order ablate, add,
  read (definitions in :mod:`esr_analysis.steering.interventions`).
* **masks** ``{scope: [B, T, 1] float tensor | None}``: where each scope applies (``None`` = inactive).
* **encoder** a slice without ``W_dec`` (only :func:`encode_slice`'s keys): what a read of many latents ships.
"""

from __future__ import annotations

from typing import Any


def pre_activations(h: Any, p: dict[str, Any]) -> Any:
    """Pre-activations ``(h - b_dec?) @ W_enc + b_enc`` ``[..., k]`` of a slice's latents (before the ReLU /
    JumpReLU gate, so their gradient is not zero where a latent is off)."""
    x = h - p["b_dec"] if p["apply_b_dec_to_input"] else h
    return x @ p["W_enc"] + p["b_enc"]


def encode_slice(h: Any, p: dict[str, Any]) -> Any:
    """Activations ``f(h)`` of a slice's latents: ``relu((h - b_dec?) @ W_enc + b_enc)``, times
    ``1[pre > threshold]`` for a JumpReLU slice (``threshold`` not ``None``)."""
    import torch

    pre = pre_activations(h, p)
    acts = torch.relu(pre)
    if p["threshold"] is not None:
        acts = acts * (pre > p["threshold"]).to(pre.dtype)
    return acts


def edit_delta(h: Any, plan: dict[str, Any], masks: dict[str, Any]) -> Any:
    """The total change ``h' - h`` of one layer plan given the scope masks; ``None`` when nothing applies.

    Ablating latents ``S`` subtracts ``sum_{i in S} f_i(h) d_i`` (activations of the incoming ``h``);
    adding contributes ``addend * mask``.
    """
    delta = None
    for scope, params, row_mask in plan["ablations"]:
        m = masks[scope]
        if m is None:
            continue
        f = encode_slice(h, params) * row_mask[:, None, :]
        d = -(f @ params["W_dec"]) * m
        delta = d if delta is None else delta + d
    for scope, addend in plan["adds"].items():
        m = masks[scope]
        if m is None:
            continue
        d = addend[:, None, :] * m
        delta = d if delta is None else delta + d
    return delta


def module_at(lm: Any, path: str) -> Any:
    """The nnsight envoy (or plain submodule) at dotted ``path``; numeric parts index module lists.

    Only walks attribute names from ``lm``, so it is safe inside a trace, locally or on NDIF.
    """
    node = lm
    for part in path.split(".") if path else ():
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def block_hidden(block: Any) -> Any:
    """A decoder block's output hidden state ``[B, T, D]`` (transformers 5 returns a tensor, earlier a tuple)."""
    out = block.output
    return out[0] if isinstance(out, tuple) else out


def set_block_hidden(block: Any, hidden: Any) -> None:
    """Replace a decoder block's output hidden state, keeping any other tuple items."""
    out = block.output
    block.output = (hidden,) + tuple(out[1:]) if isinstance(out, tuple) else hidden


def read_site(lm: Any, where: dict[str, Any]) -> Any:
    """Inside a trace: the value at a component site, given as ``ModelSites.where(site)`` (a plain dict).

    ``[B, T, d_head]`` for a head (its slice of the ``o_proj`` input), else the module's output hidden state
    ``[B, T, D]`` (or the logits for the unembedding).
    """
    module = module_at(lm, where["path"])
    if where["kind"] == "block_out":
        return block_hidden(module)
    if where["kind"] == "head":
        x = module.input
        return x.unflatten(-1, (where["n_heads"], x.shape[-1] // where["n_heads"]))[..., where["head"], :]
    return module.output


def write_site(lm: Any, where: dict[str, Any], value: Any) -> None:
    """Inside a trace: replace the value at a site (``ModelSites.where(site)``) with ``value``, shaped as
    :func:`read_site` returns it. For a head only that head's slice of the ``o_proj`` input changes, so only
    its contribution to the attention output changes."""
    module = module_at(lm, where["path"])
    if where["kind"] == "block_out":
        set_block_hidden(module, value)
    elif where["kind"] == "head":
        x = module.input
        new = x.clone()
        n_heads = where["n_heads"]
        new.unflatten(-1, (n_heads, x.shape[-1] // n_heads))[..., where["head"], :] = value.to(x.dtype)
        module.input = new
    else:
        module.output = value


def apply_plan(module: Any, plan: dict[str, Any], masks: dict[str, Any]) -> Any:
    """Inside a trace: apply ``plan``'s edits to decoder block ``module``'s output; return the (edited) hidden
    state ``[B, T, D]``."""
    hidden = block_hidden(module)
    delta = edit_delta(hidden, plan, masks)
    if delta is None:
        return hidden
    hidden = hidden + delta.to(hidden.dtype)
    set_block_hidden(module, hidden)
    return hidden


def read_slice(hidden: Any, plan: dict[str, Any]) -> Any:
    """The read slice's activations on ``hidden`` (cast to the slice's dtype), detached on the CPU."""
    p = plan["read"]
    return encode_slice(hidden.to(p["W_enc"].dtype), p).detach().cpu()


def replace_output(module: Any, residual: Any) -> None:
    """Inside a trace: replace decoder block ``module``'s output hidden state by ``residual`` (cast to it)."""
    hidden = block_hidden(module)
    set_block_hidden(module, residual.to(device=hidden.device, dtype=hidden.dtype))


# ------------------------------------------------------------------------------------------ attribution kernels
# Used by :func:`esr_analysis.tracing.attribution.site_pass`; definitions in
# :mod:`esr_analysis.mechanisms.attribution`.


def track_grad(x: Any) -> Any:
    """Make ``x`` a source of gradients if nothing upstream is tracked (the model's weights are frozen, and NDIF
    runs without gradients): ``requires_grad_`` in place, so every later site depends on it. Returns ``x``."""
    if not x.requires_grad:
        x.requires_grad_(True)
    return x


def blend(x: Any, edit: dict[str, Any]) -> Any:
    """``x + weight * (target - x) + add`` for an edit ``{"target", "weight", "add"}`` (absent keys or ``None``
    values skip their term). ``weight`` 1 patches in ``target``; ``1 - alpha`` interpolates towards it."""
    out = x
    if edit.get("target") is not None:
        out = out + edit["weight"].to(x.dtype) * (edit["target"].to(x.dtype) - out)
    if edit.get("add") is not None:
        out = out + edit["add"].to(x.dtype)
    return out


def logit_diff(logits: Any, m: dict[str, Any]) -> tuple[Any, Any]:
    """``(logit[target] - logit[other], other)`` per row at position ``m["position"]``; ``other`` is
    ``m["other"]`` when ``>= 0``, else the top token outside ``m["exclude"]`` (chosen on detached logits)."""
    import torch

    row = logits[:, m["position"], :]
    if m["other"] >= 0:
        other = torch.full((row.shape[0],), m["other"], dtype=torch.long, device=row.device)
    else:
        masked = row.detach().float().clone()
        masked[:, m["exclude"].to(row.device)] = float("-inf")
        other = masked.argmax(dim=-1)
    alt = row.gather(-1, other[:, None])[:, 0]
    return row[:, m["target"]] - alt, other


def latent_pre_sum(hidden: Any, m: dict[str, Any]) -> Any:
    """``sum_{t in positions} sum_j pre_j(hidden[:, t])`` per row for the slice ``m["slice"]``: ``[B]``."""
    p = m["slice"]
    h = hidden[:, m["positions"].to(hidden.device), :].to(p["W_enc"].dtype)
    return pre_activations(h, p).sum(dim=(1, 2))


def site_value(block: Any, kind: str, path: str, plan: dict[str, Any] | None, masks: dict[str, Any]) -> Any:
    """Inside a trace: the value of site ``kind`` of decoder ``block``: the whole ``o_proj`` input for ``head``
    (``path`` = the ``o_proj`` path in the block), the MLP output for ``mlp_out`` (``path`` = the MLP's), the
    block output after applying ``plan`` (if any) for ``block_out``."""
    if kind == "head":
        return module_at(block, path).input
    if kind == "mlp_out":
        return module_at(block, path).output
    return apply_plan(block, plan, masks) if plan is not None else block_hidden(block)


def set_site_value(block: Any, kind: str, path: str, value: Any) -> None:
    """Inside a trace: replace the value :func:`site_value` returns for the same arguments."""
    if kind == "head":
        module_at(block, path).input = value
    elif kind == "mlp_out":
        module_at(block, path).output = value
    else:
        set_block_hidden(block, value)


def dla_terms(lm_head: Any, final_norm: Any, layers: Any, o_proj: str, values: dict[str, Any], f: dict[str, Any],
              chunk: int = 64) -> dict[str, Any]:
    """Direct logit attribution at position ``t = f["position"]`` of the logit difference ``target - other``
    (``f["target"]``: a token id; ``f["other"]``: token ids ``[B]``), with the final RMS norm's scale
    ``s = 1 / sqrt(mean(x^2) + eps)`` frozen from this run (``x = f["final_in"][:, t]``, ``eps = f["eps"]``):
    the term of a residual-stream vector ``v`` is ``(unembed(v * g * s))[target] - [other]`` with ``g`` the norm's
    gain, so the terms of every component add up to the logit difference. Components: each head's
    ``z_h W_O,h^T`` (``z`` = ``values["<layer>:head"]``, the ``o_proj`` input), each MLP output
    (``values["<layer>:mlp_out"]``), each ``o_proj`` bias, the block-0 input ``f["embed"]``; ``total`` is the
    term of ``x`` itself. Returns ``{"heads": [L, B, H], "mlp": [L, B], "bias": [L, B], "embed": [B],
    "total": [B]}`` on the CPU.

    No weight is read: the modules are *called* (``o_proj`` on head-masked inputs and on zeros for its bias, the
    final norm on a vector of ones for its gain ``g = norm(1) * sqrt(1 + eps)``, the unembedding on the scaled
    vectors, ``chunk`` rows at a time). A sandboxed NDIF runs a trace in a process that holds a weightless
    model, where ``module.weight`` does not exist but a module call is forwarded to the model.
    """
    import torch

    t, n_heads, target, other = f["position"], f["n_heads"], f["target"], f["other"]
    x = f["final_in"][:, t, :].float()
    batch, width = x.shape
    scale = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + f["eps"])  # [B, 1]
    gain = final_norm(torch.ones(1, 1, width, dtype=f["final_in"].dtype)).float().reshape(1, width)
    gain = gain * (1.0 + f["eps"]) ** 0.5
    rows = []  # [B, n, D] per-row component vectors, in the order heads (L*H), mlp (L), bias (L), embed, total
    biases = []
    for layer in range(f["n_layers"]):
        proj = module_at(layers[layer], o_proj)
        z = values[f"{layer}:head"][:, t, :]
        d_in = z.shape[-1]
        masks = torch.eye(n_heads, dtype=z.dtype).repeat_interleave(d_in // n_heads, dim=1)  # [H, H * d_head]
        bias = proj(torch.zeros(1, d_in, dtype=z.dtype)).float()  # [1, D]
        per_head = proj((z[:, None, :] * masks[None]).reshape(batch * n_heads, d_in)).float() - bias
        rows.append(per_head.reshape(batch, n_heads, width))
        biases.append(bias.expand(batch, width)[:, None, :])
    mlp = torch.stack([values[f"{layer}:mlp_out"][:, t, :].float() for layer in range(f["n_layers"])], dim=1)
    vectors = torch.cat([*rows, mlp, *biases, f["embed"].float()[:, None, :], x[:, None, :]], dim=1) * gain * scale[:, None]
    zero = lm_head(torch.zeros(1, width, dtype=f["final_in"].dtype)).float()  # unembedding bias (0 without one)
    terms = []
    for b in range(batch):
        for i in range(0, vectors.shape[1], chunk):
            logits = lm_head(vectors[b, i:i + chunk].to(f["final_in"].dtype)).float() - zero
            terms.append((logits[:, target] - logits[:, other[b]]).detach().cpu())
    flat = torch.cat(terms).reshape(batch, -1)
    n_l, n_h = f["n_layers"], n_heads
    heads = flat[:, : n_l * n_h].reshape(batch, n_l, n_h).transpose(0, 1)
    rest = flat[:, n_l * n_h:]
    return {"heads": heads, "mlp": rest[:, :n_l].T, "bias": rest[:, n_l: 2 * n_l].T, "embed": rest[:, 2 * n_l],
            "total": rest[:, 2 * n_l + 1]}


def pool_slice(hidden: Any, p: dict[str, Any], mask: Any, chunk: int) -> dict[str, Any]:
    """Per row, over the positions where ``mask [B, T, 1]`` is 1, of each latent of slice (or encoder) ``p``:
    ``{"max": [B, k], "count": [B, k], "sum": [B, k]}`` = the largest activation (0 when the mask is empty),
    the number of positions with activation > 0 and the sum of activations (float32, detached, on the CPU).

    Latents are encoded ``chunk`` at a time, so at most ``[B, T, chunk]`` activations exist at once; ReLU and
    JumpReLU activations are >= 0, so zeroing masked positions leaves the maximum over the others unchanged.
    """
    import torch

    x = hidden.to(p["W_enc"].dtype)
    m = mask.to(x.dtype)
    k = p["W_enc"].shape[1]
    maxes, counts, sums = [], [], []
    for lo in range(0, k, chunk):
        hi = min(k, lo + chunk)
        sub = {"W_enc": p["W_enc"][:, lo:hi], "b_enc": p["b_enc"][lo:hi], "b_dec": p["b_dec"],
               "threshold": None if p["threshold"] is None else p["threshold"][lo:hi],
               "apply_b_dec_to_input": p["apply_b_dec_to_input"]}
        a = encode_slice(x, sub) * m
        maxes.append(a.amax(dim=1).float())
        counts.append((a > 0).sum(dim=1).float())
        sums.append(a.sum(dim=1).float())
    return {"max": torch.cat(maxes, -1).detach().cpu(), "count": torch.cat(counts, -1).detach().cpu(),
            "sum": torch.cat(sums, -1).detach().cpu()}
