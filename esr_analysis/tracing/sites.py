"""Component sites: the one map from a model to its parts (blocks, attention, heads, MLP, final norm, unembedding).

Every supported architecture (Llama, Qwen2, Gemma 2, Gemma 3, and Gemma 3's multimodal wrapper, whose text
model sits at ``model.language_model``) is mapped by *inspecting the module tree* (:func:`find_sites`), not by
hard-coded paths, so the same code works on wrapped models, merged-LoRA models and meta-device models.

Definitions (``L`` a decoder layer, ``H`` heads of width ``d_head``, ``D`` the model width)
---------------------------------------------------------------------------------------------
* ``block_out``: the output of decoder block ``L``, i.e. the residual stream after block ``L``, ``[B, T, D]``.
* ``attn_out``: the output of block ``L``'s attention output projection ``o_proj``, ``[B, T, D]``. (Llama and
  Qwen2 add it to the residual stream as is; Gemma 2 and 3 first apply ``post_attention_layernorm``.)
* ``head``: head ``h``'s slice of the ``o_proj`` *input*: the input ``[B, T, H * d_head]`` reshaped to
  ``[B, T, H, d_head]`` and indexed at ``h``, giving ``z_h`` of shape ``[B, T, d_head]``. Head ``h``'s
  **contribution** to the attention output is ``z_h @ W_O[:, h*d_head:(h+1)*d_head].T`` (``W_O`` is ``o_proj``'s
  ``[D, H*d_head]`` weight), so the contributions of all heads plus ``o_proj``'s bias (if any) sum to
  ``attn_out`` (:func:`head_contributions`, plain torch).
* ``mlp_out``: the output of block ``L``'s MLP (after ``down_proj``), ``[B, T, D]``; Gemma 2 and 3 apply
  ``post_feedforward_layernorm`` before adding it to the residual stream.
* ``final_norm``: the output of the final norm before the unembedding, ``[B, T, D]``.
* ``logits``: the output of the unembedding (``lm_head``), ``[B, T, V]``.

A :class:`Site` is plain data (kind, layer, head). :func:`find_sites` resolves a model's paths once, outside
any trace, into a plain :class:`ModelSites`; the in-trace helpers (:func:`read_site`, :func:`write_site`,
:func:`save_site`, :func:`module_at`) only walk attribute names from the wrapped model, so the code inside a
trace stays serialisable for NDIF (``remote=True``). Nothing here imports nnsight at module import time.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from esr_analysis.errors import ConfigError
from esr_analysis.tracing.kernels import module_at

if TYPE_CHECKING:  # pragma: no cover
    import torch

SITE_KINDS = ("block_out", "attn_out", "head", "mlp_out", "final_norm", "logits")
_LAYER_KINDS = ("block_out", "attn_out", "head", "mlp_out")
_MLP_NAMES = ("mlp", "feed_forward")
_NORM_NAMES = ("norm", "final_norm", "final_layernorm", "ln_f")


@dataclass(frozen=True)
class Site:
    """One component of a model: ``kind`` (one of :data:`SITE_KINDS`), its ``layer`` and, for heads, ``head``.

    ``layer`` is required for the per-layer kinds (``block_out``, ``attn_out``, ``head``, ``mlp_out``) and must
    be ``None`` for ``final_norm`` and ``logits``; ``head`` is required for ``head`` and ``None`` otherwise.
    """

    kind: str
    layer: int | None = None
    head: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise ConfigError(f"unknown site kind {self.kind!r}; choose one of {', '.join(SITE_KINDS)}")
        if self.kind in _LAYER_KINDS:
            if not isinstance(self.layer, int) or self.layer < 0:
                raise ConfigError(f"site {self.kind!r} needs a layer index >= 0, got {self.layer!r}")
        elif self.layer is not None:
            raise ConfigError(f"site {self.kind!r} has no layer; got layer={self.layer!r}")
        if self.kind == "head":
            if not isinstance(self.head, int) or self.head < 0:
                raise ConfigError(f"a head site needs a head index >= 0, got {self.head!r}")
        elif self.head is not None:
            raise ConfigError(f"only 'head' sites take a head index; {self.kind!r} got head={self.head!r}")


@dataclass(frozen=True)
class ModelSites:
    """Where a model's components live: dotted module paths relative to the HF model, plus head geometry.

    ``layers`` is the decoder-layer list; ``attention``, ``o_proj`` and ``mlp`` are relative to one decoder
    layer; ``final_norm`` and ``unembed`` are absolute.
    """

    layers: str
    attention: str
    o_proj: str
    mlp: str
    final_norm: str
    unembed: str
    n_layers: int
    n_heads: int
    head_dim: int
    d_model: int

    def check(self, site: Site) -> None:
        """Raise :class:`ConfigError` if ``site``'s layer or head does not exist in this model."""
        if site.layer is not None and not 0 <= site.layer < self.n_layers:
            raise ConfigError(f"layer {site.layer} is out of range: the model has {self.n_layers} decoder layers")
        if site.head is not None and not 0 <= site.head < self.n_heads:
            raise ConfigError(f"head {site.head} is out of range: the model has {self.n_heads} attention heads")

    def where(self, site: Site) -> dict[str, Any]:
        """``site`` as plain data for the in-trace helpers :func:`~esr_analysis.tracing.kernels.read_site` /
        :func:`~esr_analysis.tracing.kernels.write_site`: ``{"path", "kind", "head", "n_heads"}``.

        Build it *before* entering a trace: nothing of this module may run inside one (NDIF only has the
        kernels), so a site travels into a trace as this dict.
        """
        return {"path": self.module_path(site), "kind": site.kind, "head": site.head, "n_heads": self.n_heads}

    @property
    def body(self) -> str:
        """Dotted path of the decoder stack: the module holding ``layers`` and the final norm, whose output's
        ``last_hidden_state`` is the final-normed residual stream (``""``: the model itself)."""
        return self.layers.rpartition(".")[0]

    def layer_path(self, layer: int) -> str:
        """Dotted path of decoder layer ``layer``."""
        return f"{self.layers}.{layer}"

    def module_path(self, site: Site) -> str:
        """Dotted path of the module whose output (input, for ``head``) is ``site``."""
        self.check(site)
        if site.kind == "final_norm":
            return self.final_norm
        if site.kind == "logits":
            return self.unembed
        assert site.layer is not None  # guaranteed by Site
        base = self.layer_path(site.layer)
        rel = {"block_out": "", "attn_out": self.o_proj, "head": self.o_proj, "mlp_out": self.mlp}[site.kind]
        return f"{base}.{rel}" if rel else base


def _torch_module(model: Any) -> Any:
    """The underlying ``torch.nn.Module`` of an nnsight-wrapped model, or ``model`` itself."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model
    inner = getattr(model, "_module", None)
    if isinstance(inner, torch.nn.Module):
        return inner
    raise ConfigError(f"expected a torch module or an nnsight-wrapped model, got {type(model).__name__}")


def _attention_child(layer: Any) -> tuple[str, Any] | None:
    """``(name, module)`` of the direct child of ``layer`` that owns an ``o_proj`` linear map, if any."""
    for name, child in layer.named_children():
        o_proj = getattr(child, "o_proj", None)
        if o_proj is not None and hasattr(o_proj, "in_features") and hasattr(o_proj, "out_features"):
            return name, child
    return None


def _is_decoder_list(module: Any) -> bool:
    import torch

    if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
        return False
    return all(_attention_child(layer) is not None and any(hasattr(layer, n) for n in _MLP_NAMES)
               for layer in module)


_FOUND: weakref.WeakKeyDictionary[Any, ModelSites] = weakref.WeakKeyDictionary()


def find_sites(model: Any) -> ModelSites:
    """Resolve the component paths of ``model`` (an HF causal LM, or one wrapped by nnsight) by inspection.

    The decoder-layer list is the ``ModuleList`` whose items each have an attention child with an ``o_proj``
    and an MLP child; when several match (a vision tower also has layers), the one whose length equals the
    text config's ``num_hidden_layers`` wins. The final norm is the layer list's sibling named ``norm`` (or
    ``final_norm``/``final_layernorm``/``ln_f``); the unembedding is the model's output embedding. Raises
    :class:`ConfigError` when the tree does not fit this shape. The answer is remembered per model object
    (the walk costs tens of milliseconds on a large model, and every trace asks).
    """
    root = _torch_module(model)
    found = _FOUND.get(root)
    if found is None:
        found = _FOUND[root] = _inspect(root)
    return found


def _inspect(root: Any) -> ModelSites:
    """The tree walk of :func:`find_sites`."""
    import torch

    candidates = [(name, mod) for name, mod in root.named_modules() if _is_decoder_list(mod)]
    config: Any = getattr(root, "config", None)
    text_config: Any = config.get_text_config() if hasattr(config, "get_text_config") else config
    n_expected = getattr(text_config, "num_hidden_layers", None)
    if len(candidates) > 1 and n_expected is not None:
        candidates = [(n, m) for n, m in candidates if len(m) == n_expected]
    if len(candidates) != 1:
        found = [n for n, _ in candidates] or "none"
        raise ConfigError(f"cannot locate one decoder-layer list in {type(root).__name__} (found: {found})")
    layers_path, layers = candidates[0]
    first = layers[0]
    attn_name, attn = _attention_child(first)  # type: ignore[misc]  # present: _is_decoder_list checked it
    mlp_name = next(n for n in _MLP_NAMES if hasattr(first, n))
    parent_path, _, _ = layers_path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    norm_name = next((n for n in _NORM_NAMES if isinstance(getattr(parent, n, None), torch.nn.Module)), None)
    if norm_name is None:
        raise ConfigError(f"no final norm next to {layers_path!r} (looked for {', '.join(_NORM_NAMES)})")
    unembed = root.get_output_embeddings() if hasattr(root, "get_output_embeddings") else None
    unembed_path = next((n for n, m in root.named_modules() if unembed is not None and m is unembed), None)
    if unembed_path is None:
        raise ConfigError(f"{type(root).__name__} has no output embedding (unembedding) module")
    o_proj = attn.o_proj
    head_dim = getattr(attn, "head_dim", None) or getattr(text_config, "head_dim", None)
    if not head_dim:
        n_heads_cfg = getattr(text_config, "num_attention_heads", None)
        if not n_heads_cfg:
            raise ConfigError(f"cannot tell the head width of {type(root).__name__} (no head_dim, no config)")
        head_dim = int(o_proj.in_features) // int(n_heads_cfg)
    head_dim = int(head_dim)
    if int(o_proj.in_features) % head_dim:
        raise ConfigError(f"o_proj input width {o_proj.in_features} is not a multiple of head_dim {head_dim}")
    return ModelSites(
        layers=layers_path,
        attention=attn_name,
        o_proj=f"{attn_name}.o_proj",
        mlp=mlp_name,
        final_norm=f"{parent_path}.{norm_name}" if parent_path else norm_name,
        unembed=unembed_path,
        n_layers=len(layers),
        n_heads=int(o_proj.in_features) // head_dim,
        head_dim=head_dim,
        d_model=int(o_proj.out_features),
    )


# ------------------------------------------------------------------------------------------ plain torch maths


def split_heads(o_proj_input: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The ``o_proj`` input ``[..., H * d_head]`` viewed as ``[..., H, d_head]`` (head ``h`` is ``[..., h, :]``)."""
    if o_proj_input.shape[-1] % n_heads:
        raise ConfigError(f"width {o_proj_input.shape[-1]} is not divisible by {n_heads} heads")
    return o_proj_input.unflatten(-1, (n_heads, o_proj_input.shape[-1] // n_heads))


def head_contributions(o_proj_input: torch.Tensor, o_proj_weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Each head's contribution to the attention output, ``[..., H, D]``.

    ``contribution[..., h, :] = z_h @ W_O[:, h*d_head:(h+1)*d_head].T`` with ``z_h`` head ``h``'s slice of the
    ``o_proj`` input and ``W_O`` the ``[D, H*d_head]`` ``o_proj`` weight. Summed over heads, plus ``o_proj``'s
    bias if it has one, this is ``o_proj``'s output.
    """
    import torch

    z = split_heads(o_proj_input, n_heads)  # [..., H, d_head]
    w = o_proj_weight.unflatten(1, (n_heads, o_proj_weight.shape[1] // n_heads))  # [D, H, d_head]
    return torch.einsum("...hk,dhk->...hd", z.to(w.dtype), w)


# ------------------------------------------------------------------------------------------ inside a trace


def decoder_layers(lm: Any, sites: ModelSites) -> Any:
    """The decoder-layer list of ``lm`` (index it with a layer number)."""
    return module_at(lm, sites.layers)
