"""Attribution of a metric to model components: attribution patching, DLA, integrated gradients, activation patching.

Sites (names are plain strings): ``L<l>.H<h>`` (head ``h`` of layer ``l``: its slice of the ``o_proj`` input,
equivalently its contribution through ``o_proj``), ``L<l>.mlp`` (MLP output), ``L<l>.block`` (block output, the
residual stream after block ``l``), and at the SAE's read layer ``R``: ``latent:<i>`` (SAE latent ``i``) and
``sae_error`` (the **error node** ``e = x - x_hat``, so ``x = sum_i f_i d_i + b_dec + e`` exactly).

Definitions, for a metric ``M`` (:mod:`.inputs`), a clean run (the episode, steering on) and a counterfactual run
(same token count; :data:`.inputs.COUNTERFACTUALS`):

* **Attribution patching (AtP)** of site ``s``: ``sum_t grad_s M(clean)[t] . (a_s(clean)[t] - a_s(cf)[t])``, the
  first-order estimate of how much ``M`` falls when ``s`` alone is patched from the counterfactual. All sites
  come from **3 passes**: one clean forward + backward, one counterfactual forward. For a latent,
  ``grad_{f_i} M = d_i . grad_x M`` and the error node's gradient is ``grad_x M``, so latents + error sum to
  the read layer's block AtP.
* **Activation patching** of a set ``S`` of sites: ``M(clean) - M(clean with every s in S set to its
  counterfactual value at every position)``; latents and the error node are patched additively
  (``x += (f_i(cf) - f_i(clean)) d_i``, ``x += e(cf) - e(clean)``). Sets run as rows of one batch, next to an
  unpatched row.
* **Integrated gradients** of the sites of one group (one layer and kind, patched jointly):
  ``mean_k grad_s M(a_alpha_k) . (a(clean) - a(cf))`` over ``a_alpha = a(cf) + alpha (a(clean) - a(cf))``,
  ``alpha_k = (k + 1/2) / steps``; all steps are rows of one forward + backward.
* **Direct logit attribution (DLA)** of a head or MLP: its output at the metric position dotted with
  ``(W_U[r] - W_U[a]) * gain / rms`` with the final norm's scale ``1 / rms`` frozen from the clean run; heads,
  MLPs, ``o_proj`` biases and the embedding then sum exactly to the logit difference (pre-norm models).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from esr_analysis.errors import ConfigError
from esr_analysis.mechanisms.attribution.inputs import Prepared, model_inputs

if TYPE_CHECKING:  # pragma: no cover
    import torch

KINDS = ("head", "mlp_out", "block_out")


def head_name(layer: int, head: int) -> str:
    return f"L{layer}.H{head}"


def site_name(layer: int, kind: str) -> str:
    """Name of a layer-level site (``mlp_out`` -> ``L<l>.mlp``, ``block_out`` -> ``L<l>.block``)."""
    return f"L{layer}." + {"mlp_out": "mlp", "block_out": "block"}[kind]


def parse_site(name: str) -> tuple[str, int, int | None]:
    """``(kind, layer or latent, head)`` of a site name; kinds ``head``, ``mlp_out``, ``block_out``, ``latent``,
    ``sae_error`` (layer -1)."""
    if name == "sae_error":
        return "sae_error", -1, None
    if name.startswith("latent:"):
        return "latent", int(name.split(":")[1]), None
    layer_s, part = name.split(".")
    layer = int(layer_s[1:])
    if part.startswith("H"):
        return "head", layer, int(part[1:])
    return {"mlp": "mlp_out", "block": "block_out"}[part], layer, None


@dataclass
class SaeNode:
    """The full SAE at the read layer as plain tensors (every latent of a ReLU / JumpReLU SAE, sliced exactly)."""

    layer: int
    params: dict[str, Any]

    @classmethod
    def of(cls, sae: Any, layer: int) -> SaeNode:
        import torch

        from esr_analysis.sae.sliced import SlicedSAE, sae_width

        _, d_sae = sae_width(sae)
        return cls(int(layer), SlicedSAE.from_sae(sae, range(d_sae)).params(dtype=torch.float32).as_kernel())

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f [.., d_sae], e [.., D])``: latent activations and the error node of residuals ``x``."""
        from esr_analysis.tracing.kernels import encode_slice

        x = x.float()
        f = encode_slice(x, self.params)
        return f, x - (f @ self.params["W_dec"] + self.params["b_dec"])


@dataclass
class Attribution:
    """Scores of one episode and counterfactual (plain data via :meth:`to_dict`)."""

    metric_clean: float
    metric_cf: float
    other: int
    atp: dict[str, float]
    dla: dict[str, float] = field(default_factory=dict)
    passes: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {"metric_clean": self.metric_clean, "metric_cf": self.metric_cf, "other": self.other,
                "atp": self.atp, "dla": self.dla, "passes": self.passes}


def _all_reads(n_layers: int) -> dict[int, tuple[str, ...]]:
    return {layer: KINDS for layer in range(n_layers)}


def site_scores(grads: dict[str, Any], delta: dict[str, Any], n_heads: int) -> dict[str, float]:
    """``sum_t g . delta`` per site from per-key gradients and differences ``[B, T, W]`` (rows averaged)."""
    out: dict[str, float] = {}
    for key, g in grads.items():
        layer_s, kind = key.split(":")
        layer = int(layer_s)
        prod = (g.float() * delta[key].float()).mean(0).sum(0)  # [W]
        if kind == "head":
            for h, v in enumerate(prod.unflatten(-1, (n_heads, -1)).sum(-1).tolist()):
                out[head_name(layer, h)] = v
        else:
            out[site_name(layer, kind)] = float(prod.sum())
    return out


def latent_scores(node: SaeNode, g: torch.Tensor, x_clean: torch.Tensor, x_cf: torch.Tensor,
                  top: int | None = None) -> dict[str, float]:
    """AtP (or IG, with ``g`` averaged over the path) of every latent and the error node at the read layer:
    ``sum_t (f_i(clean) - f_i(cf)) (d_i . g_t)`` and ``sum_t (e(clean) - e(cf)) . g_t``; the ``top`` latents by
    absolute score are kept (all when ``None``) plus ``sae_error``."""
    import torch

    f_c, e_c = node.split(x_clean)
    f_f, e_f = node.split(x_cf)
    g = g.float()
    lat = ((f_c - f_f) * (g @ node.params["W_dec"].T)).reshape(-1, f_c.shape[-1]).sum(0)
    keep = torch.nonzero(lat).flatten()
    if top is not None and keep.numel() > top:
        keep = keep[lat[keep].abs().argsort(descending=True)[:top]]
    out = {f"latent:{int(i)}": float(lat[i]) for i in keep}
    out["sae_error"] = float(((e_c - e_f) * g).sum())
    return out


def _cf_inputs(lm, prep: Prepared, cf_ids, cf_ivs, sae, rows: int = 1, remote: bool | str = False):
    return model_inputs(lm, cf_ids, prep.start, cf_ivs, sae, rows, remote=remote)


def attribution_patching(lm: Any, prep: Prepared, cf_ids: Sequence[int], cf_interventions: list[Any], *,
                         metric: dict[str, Any], sae: Any = None, node: SaeNode | None = None,
                         dla: bool = True, top_latents: int | None = 50, remote: bool | str = False
                         ) -> tuple[Attribution, dict[str, Any]]:
    """AtP of every head, MLP and block (and, with ``node``, every latent and the error node) from 3 passes;
    DLA from the clean pass when the metric is a logit difference and the model pre-norm only.

    Returns the :class:`Attribution` and the runs' state ``{"metric": fixed metric dict, "clean": values,
    "cf": values}`` for :func:`activation_patching` and :func:`integrated_gradients`.
    """
    from esr_analysis.tracing.attribution import norm_facts, site_pass
    from esr_analysis.tracing.sites import find_sites

    sites = find_sites(lm)
    reads = _all_reads(sites.n_layers)
    ivs = prep.episode.parsed_interventions()
    ids, mask, plans, masks = model_inputs(lm, prep.ids, prep.start, ivs, sae, remote=remote)
    do_dla = dla and metric["kind"] == "logit_diff" and norm_facts(lm)[0]
    clean = site_pass(lm, ids, mask, plans, masks, reads=reads, metric=metric, backward=True, dla=do_dla,
                      remote=remote)
    fixed = dict(metric)
    if metric["kind"] == "logit_diff":
        fixed["other"] = int(clean["other"][0])
    ids2, mask2, plans2, masks2 = _cf_inputs(lm, prep, cf_ids, cf_interventions, sae, remote=remote)
    cf = site_pass(lm, ids2, mask2, plans2, masks2, reads=reads, metric=fixed, remote=remote)
    delta = {k: clean["values"][k] - cf["values"][k] for k in clean["grads"]}
    atp = site_scores(clean["grads"], delta, sites.n_heads)
    if node is not None:
        key = f"{node.layer}:block_out"
        atp.update(latent_scores(node, clean["grads"][key][0], clean["values"][key][0], cf["values"][key][0],
                                 top_latents))
    dla_out: dict[str, float] = {}
    if clean["dla"] is not None:
        d = clean["dla"]
        for layer in range(sites.n_layers):
            for h in range(sites.n_heads):
                dla_out[head_name(layer, h)] = float(d["heads"][layer, 0, h])
            dla_out[site_name(layer, "mlp_out")] = float(d["mlp"][layer, 0])
            dla_out[f"L{layer}.o_bias"] = float(d["bias"][layer, 0])
        dla_out["embed"] = float(d["embed"][0])
        dla_out["total"] = float(d["total"][0])
    result = Attribution(float(clean["metric"][0]), float(cf["metric"][0]), int(fixed.get("other", -1)), atp,
                         dla_out)
    return result, {"metric": fixed, "clean": clean["values"], "cf": cf["values"]}


def _edits_for(sets: Sequence[Sequence[str]], state: dict[str, Any], n_heads: int, node: SaeNode | None,
               offset: int) -> dict[str, dict[str, Any]]:
    """Blend edits for rows ``offset + j`` patching ``sets[j]`` (row 0 and other rows untouched)."""
    import torch

    rows = offset + len(sets)
    edits: dict[str, dict[str, Any]] = {}
    for j, names in enumerate(sets):
        b = offset + j
        for name in names:
            kind, layer, head = parse_site(name)
            if kind in ("latent", "sae_error"):
                if node is None:
                    raise ConfigError(f"site {name} needs the SAE node")
                key = f"{node.layer}:block_out"
                x_c, x_f = state["clean"][key][0], state["cf"][key][0]
                f_c, e_c = node.split(x_c)
                f_f, e_f = node.split(x_f)
                add = e_f - e_c if kind == "sae_error" else \
                    (f_f[:, layer] - f_c[:, layer])[:, None] * node.params["W_dec"][layer][None, :]
                ed = edits.setdefault(key, {})
                if ed.get("add") is None:
                    ed["add"] = torch.zeros((rows,) + tuple(x_c.shape))
                ed["add"][b] += add
                continue
            key = f"{layer}:{kind}"
            target = state["cf"][key]
            ed = edits.setdefault(key, {})
            if ed.get("weight") is None:
                ed["target"] = target
                ed["weight"] = torch.zeros((rows, 1, target.shape[-1]), dtype=target.dtype)
            if kind == "head":
                assert head is not None
                w = target.shape[-1] // n_heads
                ed["weight"][b, 0, head * w:(head + 1) * w] = 1
            else:
                ed["weight"][b, 0, :] = 1
    return edits


def activation_patching(lm: Any, prep: Prepared, state: dict[str, Any], sets: Sequence[Sequence[str]], *,
                        sae: Any = None, node: SaeNode | None = None, batch_size: int = 16,
                        remote: bool | str = False) -> list[float]:
    """``M(clean) - M(clean with the sites of set j patched from the counterfactual)`` for every set ``j``."""
    from esr_analysis.tracing.attribution import site_pass
    from esr_analysis.tracing.sites import find_sites

    n_heads = find_sites(lm).n_heads
    ivs = prep.episode.parsed_interventions()
    effects: list[float] = []
    step = max(1, batch_size - 1)
    for lo in range(0, len(sets), step):
        chunk = list(sets[lo:lo + step])
        ids, mask, plans, masks = model_inputs(lm, prep.ids, prep.start, ivs, sae, rows=len(chunk) + 1,
                                               remote=remote)
        edits = _edits_for(chunk, state, n_heads, node, offset=1)
        out = site_pass(lm, ids, mask, plans, masks, reads={}, metric=state["metric"], edits=edits, remote=remote)
        m = out["metric"]
        effects.extend(float(m[0] - m[j + 1]) for j in range(len(chunk)))
    return effects


def integrated_gradients(lm: Any, prep: Prepared, state: dict[str, Any], groups: Sequence[str], *, steps: int = 8,
                         sae: Any = None, node: SaeNode | None = None, top_latents: int | None = 50,
                         remote: bool | str = False) -> dict[str, float]:
    """IG scores of the sites in each group ``"<layer>:<kind>"`` (one forward + backward per group, the
    ``steps`` interpolation points as rows); for the read layer's ``block_out`` also every latent and the error."""
    import torch

    from esr_analysis.tracing.attribution import site_pass
    from esr_analysis.tracing.sites import find_sites

    n_heads = find_sites(lm).n_heads
    ivs = prep.episode.parsed_interventions()
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    out: dict[str, float] = {}
    for key in groups:
        layer_s, kind = key.split(":")
        ids, mask, plans, masks = model_inputs(lm, prep.ids, prep.start, ivs, sae, rows=steps, remote=remote)
        clean, cf = state["clean"][key], state["cf"][key]
        edit = {"target": cf, "weight": (1 - alphas)[:, None, None].to(cf.dtype)}
        r = site_pass(lm, ids, mask, plans, masks, reads={int(layer_s): (kind,)}, metric=state["metric"],
                      backward=True, edits={key: edit}, remote=remote)
        g = r["grads"][key]
        out.update(site_scores({key: g}, {key: (clean - cf).expand_as(g)}, n_heads))
        if node is not None and kind == "block_out" and int(layer_s) == node.layer:
            out.update(latent_scores(node, g.float().mean(0), clean[0], cf[0], top_latents))
    return out
