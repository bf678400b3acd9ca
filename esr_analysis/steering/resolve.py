"""From interventions as asked for to what a trace applies: validation, resolved records, layer plans.

Every public steering call (:func:`~esr_analysis.steering.generate.generate`,
:func:`~esr_analysis.steering.replay.replay`, :func:`~esr_analysis.steering.residuals.read_residuals`) goes
through the same three steps, all before any trace runs:

1. :func:`normalise_rows` and :func:`validate`: one intervention list per row; layers, latent indices, vector
   widths and the SAE's width are checked against the model, so bad input fails before any compute.
2. :func:`resolve_rows`: each intervention becomes a
   :class:`~esr_analysis.steering.interventions.ResolvedIntervention` record (what was applied, in SAE units
   and as a fraction of the median residual norm), and the additions and ablations are gathered per
   ``(layer, scope)``.
3. :func:`build_plans`: the :class:`~esr_analysis.tracing.plans.LayerPlan` list of one batch (a subset of
   the rows), with SAEs sliced to the latents used (exact for ReLU/JumpReLU SAEs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from esr_analysis.steering.interventions import AblateLatents, AddLatent, AddVector, ResolvedIntervention
from esr_analysis.steering.results import LatentCapture

if TYPE_CHECKING:  # pragma: no cover
    import torch

MedianNorm = Callable[[Any, int], float]
"""``median_norm(model, layer)``: the median residual norm used for relative units
(:func:`esr_analysis.steering.residuals.median_residual_norm`)."""


def model_facts(model: Any) -> tuple[str, int, int]:
    """``(name, n_layers, d_model)`` of a wrapped model: its registered spec, else its HF config."""
    try:
        from esr_analysis.models.loading import spec_of

        spec = spec_of(model)
        return spec.name, spec.n_layers, spec.d_model
    except (ImportError, LookupError, AttributeError, ValueError):
        from esr_analysis.tracing.core import hf_module

        cfg = hf_module(model).config
        cfg = getattr(cfg, "text_config", None) or cfg
        return str(getattr(cfg, "name_or_path", "") or type(cfg).__name__), cfg.num_hidden_layers, cfg.hidden_size


def check_layer(model: Any, layer: int) -> None:
    """Raise ``ValueError`` unless ``layer`` is a block index of ``model`` (``0 .. n_layers - 1``)."""
    _, n_layers, _ = model_facts(model)
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")


def check_prompts(prompts: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``prompts`` is a non-empty list of non-empty strings."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not one string")
    if len(prompts) == 0:
        raise ValueError("the prompt list is empty")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"every prompt must be a non-empty string, got {p!r}")


def intervention_rows(n_rows: int, interventions: Any) -> list[list[Any]]:
    """One intervention list per row: ``None`` gives empty lists, one flat list of interventions is shared by
    every row, else one list (or ``None``) per row is expected. Raises ``ValueError`` on anything else."""
    if interventions is None:
        return [[] for _ in range(n_rows)]
    items = list(interventions)
    if items and all(isinstance(x, AddLatent | AddVector | AblateLatents) for x in items):
        return [list(items) for _ in range(n_rows)]  # one list shared by every row
    if len(items) != n_rows:
        raise ValueError(f"got {len(items)} intervention lists for {n_rows} prompts")
    rows = []
    for row in items:
        row = list(row or [])
        for iv in row:
            if not isinstance(iv, AddLatent | AddVector | AblateLatents):
                raise ValueError(f"not an intervention: {iv!r}")
        rows.append(row)
    return rows


def normalise_rows(prompts: Sequence[str], interventions: Any) -> list[list[Any]]:
    """:func:`check_prompts`, then :func:`intervention_rows` for them."""
    check_prompts(prompts)
    return intervention_rows(len(prompts), interventions)


def validate(model: Any, rows: list[list[Any]], sae: Any, capture: LatentCapture | None) -> None:
    """Check layers, latent indices and widths against the model and SAE; raise ``ValueError`` early."""
    from esr_analysis.sae.sliced import check_latents, check_sae_fits_model

    _, n_layers, d_model = model_facts(model)
    needs_sae = capture is not None or any(isinstance(iv, AddLatent | AblateLatents) for r in rows for iv in r)
    if needs_sae:
        if sae is None:
            raise ValueError("latent interventions or captures need an SAE (pass sae=...)")
        check_sae_fits_model(sae, d_model)
    layers = [iv.layer for r in rows for iv in r] + ([capture.layer] if capture else [])
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    for r in rows:
        for iv in r:
            if isinstance(iv, AddLatent):
                check_latents(sae, [iv.latent])
            elif isinstance(iv, AblateLatents):
                check_latents(sae, iv.latents)
            elif isinstance(iv, AddVector) and len(iv.vector) != d_model:
                raise ValueError(f"vector {iv.name!r} has {len(iv.vector)} dims, the model has {d_model}")
    if capture is not None:
        if not capture.latents:
            raise ValueError("capture needs at least one latent")
        check_latents(sae, capture.latents)


def relative_to_sae_units(relative: float, median_norm: float, decoder_norm: float) -> float:
    """SAE units ``s = r m / ||d||`` of relative strength ``r`` for a decoder row of norm ``||d||`` at a layer of
    median residual norm ``m``, so that ``||s d|| = r m``."""
    return relative * median_norm / decoder_norm


def resolve_rows(model: Any, rows: list[list[Any]], sae: Any, median_norm: MedianNorm
                 ) -> tuple[list[list[ResolvedIntervention]], dict, dict]:
    """Resolve every row's interventions: ``(records, addends, ablations)``.

    ``records[b]`` are row ``b``'s :class:`ResolvedIntervention` records; ``addends[(layer, scope)]`` is a
    ``[B, d_model]`` float32 tensor of what each row adds there; ``ablations[(layer, scope)][b]`` is the set
    of latents row ``b`` removes there. An :class:`AddLatent` in ``unit="relative"`` with strength ``r``
    becomes ``s = r * m / ||d_i||`` SAE units, ``m = median_norm(model, layer)``, so ``||s d_i|| = r m``.
    """
    import torch

    from esr_analysis.sae.loading import sae_source_of
    from esr_analysis.sae.sliced import SlicedSAE

    _, _, d_model = model_facts(model)
    add_latents = sorted({iv.latent for r in rows for iv in r if isinstance(iv, AddLatent)})
    dec = SlicedSAE.from_sae(sae, add_latents) if add_latents else None
    source = sae_source_of(sae) if sae is not None else None
    norms: dict[int, float] = {}

    def norm_at(layer: int) -> float:
        if layer not in norms:
            norms[layer] = median_norm(model, layer)
        return norms[layer]

    records: list[list[ResolvedIntervention]] = []
    addends: dict[tuple[int, str], torch.Tensor] = {}
    ablations: dict[tuple[int, str], list[set[int]]] = {}
    B = len(rows)
    for b, row in enumerate(rows):
        recs = []
        for iv in row:
            if isinstance(iv, AddLatent | AddVector):
                if isinstance(iv, AddLatent):
                    assert dec is not None
                    d = dec.decoder_row(iv.latent).float()
                    d_norm = float(d.norm())
                    m = norm_at(iv.layer)
                    if iv.unit == "sae":
                        s_sae = iv.strength
                    else:
                        if d_norm == 0.0:
                            raise ValueError(f"latent {iv.latent} has a zero decoder row; relative units undefined")
                        s_sae = relative_to_sae_units(iv.strength, m, d_norm)
                    rec = ResolvedIntervention(kind=iv.kind, layer=iv.layer, scope=iv.scope, latent=iv.latent,
                                               unit=iv.unit, strength_given=iv.strength, strength_sae=s_sae,
                                               strength_relative=abs(s_sae) * d_norm / m if m > 0 else None,
                                               delta_norm=abs(s_sae) * d_norm, median_residual_norm=m, sae=source)
                    vec = s_sae * d
                else:
                    vec = iv.strength * torch.tensor(iv.vector, dtype=torch.float32)
                    rec = ResolvedIntervention(kind=iv.kind, layer=iv.layer, scope=iv.scope, vector_name=iv.name,
                                               strength_given=iv.strength, delta_norm=float(vec.norm()))
                key = (iv.layer, iv.scope)
                if key not in addends:
                    addends[key] = torch.zeros(B, d_model)
                addends[key][b] += vec
            else:
                key = (iv.layer, iv.scope)
                ablations.setdefault(key, [set() for _ in range(B)])[b].update(iv.latents)
                rec = ResolvedIntervention(kind=iv.kind, layer=iv.layer, scope=iv.scope, latents=iv.latents,
                                           sae=source)
            recs.append(rec)
        records.append(recs)
    return records, addends, ablations


def build_plans(model: Any, sae: Any, addends: dict, ablations: dict, capture: LatentCapture | None,
                rows: list[int]) -> list[Any]:
    """Layer plans for the batch made of resolved rows ``rows`` (indices into what :func:`resolve_rows` saw)."""
    import torch

    from esr_analysis.sae.sliced import SlicedSAE
    from esr_analysis.tracing.core import hf_module
    from esr_analysis.tracing.plans import LayerPlan

    dtype = next(hf_module(model).parameters()).dtype
    plans: dict[int, LayerPlan] = {}

    def plan(layer: int) -> LayerPlan:
        return plans.setdefault(layer, LayerPlan(layer=layer))

    for (layer, scope), vec in addends.items():
        vec = vec[rows]
        if vec.any():
            plan(layer).adds[scope] = vec.to(dtype)
    for (layer, scope), all_rows in ablations.items():
        per_row = [all_rows[i] for i in rows]
        union = sorted(set().union(*per_row))
        if not union:
            continue
        sl = SlicedSAE.from_sae(sae, union)
        mask = torch.tensor([[1.0 if lat in row else 0.0 for lat in union] for row in per_row], dtype=dtype)
        plan(layer).ablations.append((scope, sl.params(dtype=dtype), mask))
    if capture is not None:
        plan(capture.layer).read = SlicedSAE.from_sae(sae, capture.latents).params(dtype=torch.float32)
    return list(plans.values())
