"""Steered generation and teacher-forced replay, with typed per-row results.

``generate`` runs one batched nnsight generate per chunk of rows, each row with its own list of
interventions and its own seed; ``replay`` teacher-forces (prompt, response) pairs through the model
with the same interventions and returns per-token latent activations. Both validate every input
before any compute. See :mod:`esr_analysis.interventions` for the definitions of the edits and scopes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from esr_analysis.chat import format_chat
from esr_analysis.interventions import AblateLatents, AddLatent, AddVector, ResolvedIntervention
from esr_analysis.provenance import library_versions
from esr_analysis.sampling import SamplingSettings, make_row_sampler

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


@dataclass(frozen=True)
class LatentCapture:
    """Record the activations of ``latents`` of the SAE at the output of block ``layer``."""

    latents: tuple[int, ...]
    layer: int


class GenerationResult(BaseModel):
    """One generated row: inputs, outputs, and everything needed to replay it.

    ``latent_acts[t][j]`` is the activation of ``captured_latents[j]`` at the position whose output is
    generated token ``t`` (the last prompt position for ``t = 0``).
    """

    model_config = ConfigDict(frozen=True)

    prompt: str
    chat_input: str
    input_ids: list[int]
    output_ids: list[int]
    text: str
    seed: int
    interventions: list[ResolvedIntervention]
    settings: SamplingSettings
    model: str
    versions: dict[str, str]
    stopped_by_eos: bool
    captured_latents: list[int] | None = None
    capture_layer: int | None = None
    latent_acts: list[list[float]] | None = None


class ReplayResult(BaseModel):
    """Teacher-forced activations: ``latent_acts[t][j]`` for token ``t`` of ``tokens`` and latent ``latents[j]``.

    ``response_start`` is the index of the first response token in ``tokens``.
    """

    model_config = ConfigDict(frozen=True)

    prompt: str
    response: str
    tokens: list[int]
    token_strings: list[str]
    response_start: int
    latents: list[int]
    layer: int
    latent_acts: list[list[float]]


# --------------------------------------------------------------------------------------------------
# validation and planning


def _model_facts(model) -> tuple[str, int, int]:
    """(name, n_layers, d_model) of a wrapped model: its registered spec, else its HF config."""
    try:
        from esr_analysis.models import spec_of

        spec = spec_of(model)
        return spec.name, spec.n_layers, spec.d_model
    except (ImportError, LookupError, AttributeError, ValueError):
        from esr_analysis.tracing import hf_module

        cfg = hf_module(model).config
        cfg = getattr(cfg, "text_config", None) or cfg
        return str(getattr(cfg, "name_or_path", "") or type(cfg).__name__), cfg.num_hidden_layers, cfg.hidden_size


def _normalise_rows(prompts: Sequence[str], interventions) -> list[list[Any]]:
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of strings, not one string")
    if len(prompts) == 0:
        raise ValueError("the prompt list is empty")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"every prompt must be a non-empty string, got {p!r}")
    if interventions is None:
        return [[] for _ in prompts]
    items = list(interventions)
    if items and all(isinstance(x, AddLatent | AddVector | AblateLatents) for x in items):
        return [list(items) for _ in prompts]  # one list shared by every row
    if len(items) != len(prompts):
        raise ValueError(f"got {len(items)} intervention lists for {len(prompts)} prompts")
    rows = []
    for row in items:
        row = list(row or [])
        for iv in row:
            if not isinstance(iv, AddLatent | AddVector | AblateLatents):
                raise ValueError(f"not an intervention: {iv!r}")
        rows.append(row)
    return rows


def validate(model, rows: list[list[Any]], sae, capture: LatentCapture | None) -> None:
    """Check layers, latent indices and widths against the model and SAE; raise ``ValueError`` early."""
    from esr_analysis.saes import check_latents, check_sae_fits_model

    _, n_layers, d_model = _model_facts(model)
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


_NORM_CACHE: dict[tuple[int, int], float] = {}


def median_residual_norm(model, layer: int, texts: Sequence[str] = REFERENCE_TEXTS, *, skip_first: int = 1,
                         chat: bool = True) -> float:
    """Median L2 norm of block ``layer``'s output over ordinary positions of ``texts``.

    The first ``skip_first`` real positions of every row are left out: their norms are attention-sink
    outliers. Cached per (model, layer) for the default reference texts.
    """
    import torch

    from esr_analysis import tracing

    key = (id(model), layer)
    if texts is REFERENCE_TEXTS and key in _NORM_CACHE:
        return _NORM_CACHE[key]
    ids, mask = _pad([format_chat(model.tokenizer, t, chat=chat)[1] for t in texts], model.tokenizer)
    _, resid = tracing.forward_with_plan(model, ids, mask, [], tracing.step0_masks(mask),
                                         save_residual_layers=(layer,), stop_after_last=True)
    h = resid[layer].float()
    norms = []
    for b in range(h.shape[0]):
        real = mask[b].nonzero().flatten()[skip_first:]
        norms.append(h[b, real].norm(dim=-1))
    value = float(torch.cat(norms).median())
    if texts is REFERENCE_TEXTS:
        _NORM_CACHE[key] = value
    return value


def _pad(id_lists: list[list[int]], tokenizer) -> tuple[Any, Any]:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    T = max(len(x) for x in id_lists)
    ids = torch.full((len(id_lists), T), pad, dtype=torch.long)
    mask = torch.zeros((len(id_lists), T), dtype=torch.long)
    for b, x in enumerate(id_lists):
        ids[b, T - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[b, T - len(x):] = 1
    return ids, mask


def _sae_source(sae) -> str | None:
    from esr_analysis.saes import SlicedSAE

    if sae is None:
        return None
    if isinstance(sae, SlicedSAE):
        return sae.source or None
    return getattr(sae, "esr_source", None) or str(getattr(getattr(sae, "cfg", None), "metadata", "") or "") or None


def _resolve(model, rows, sae) -> tuple[list[list[ResolvedIntervention]], dict, dict]:
    """Resolve every row's interventions into records plus addends/ablation sets per layer."""
    import torch

    from esr_analysis.saes import SlicedSAE

    name, _, d_model = _model_facts(model)
    add_latents = sorted({iv.latent for r in rows for iv in r if isinstance(iv, AddLatent)})
    dec = SlicedSAE.from_sae(sae, add_latents) if add_latents else None
    source = _sae_source(sae)
    norms: dict[int, float] = {}

    def norm_at(layer: int) -> float:
        if layer not in norms:
            norms[layer] = median_residual_norm(model, layer)
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
                    d = dec.decoder_row(iv.latent).float()
                    d_norm = float(d.norm())
                    m = norm_at(iv.layer)
                    if iv.unit == "sae":
                        s_sae = iv.strength
                    else:
                        if d_norm == 0.0:
                            raise ValueError(f"latent {iv.latent} has a zero decoder row; relative units undefined")
                        s_sae = iv.strength * m / d_norm
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


def _build_plans(model, sae, addends, ablations, capture: LatentCapture | None, rows: list[int]):
    """Layer plans for the batch made of resolved rows ``rows`` (indices into what :func:`_resolve` saw)."""
    import torch

    from esr_analysis.saes import SlicedSAE
    from esr_analysis.tracing import LayerPlan, hf_module

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


def _default_seed(prompt: str, records: list[ResolvedIntervention]) -> int:
    blob = json.dumps([prompt, [r.model_dump() for r in records]], sort_keys=True, default=str)
    return int(hashlib.sha256(blob.encode()).hexdigest()[:8], 16) % 1_000_000


def _eos_ids(model) -> set[int]:
    from esr_analysis.tracing import hf_module

    cfg = getattr(hf_module(model), "generation_config", None)
    ids: set[int] = set()
    for src in (getattr(cfg, "eos_token_id", None), model.tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(x) for x in src)
    return ids


def _generation_kwargs(model, settings: SamplingSettings, seeds: list[int]) -> dict[str, Any]:
    from transformers import GenerationConfig, LogitsProcessorList

    tok = model.tokenizer
    eos = sorted(_eos_ids(model))
    cfg = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens or None, repetition_penalty=settings.repetition_penalty,
        temperature=None, top_p=None, top_k=None, eos_token_id=eos or None,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0),
        bos_token_id=tok.bos_token_id,
    )
    kw: dict[str, Any] = {"generation_config": cfg}
    if settings.temperature > 0:
        kw["logits_processor"] = LogitsProcessorList([make_row_sampler(seeds, settings.temperature, settings.top_p)])
    return kw


# --------------------------------------------------------------------------------------------------
# public API


def generate(
    model,
    prompts: Sequence[str],
    *,
    interventions=None,
    sae=None,
    settings: SamplingSettings | None = None,
    seeds: Sequence[int] | int | None = None,
    capture: LatentCapture | None = None,
    batch_size: int = 16,
    chat: bool = True,
    llama_extra_header: bool = False,
    remote: bool | str = False,
    progress: bool = True,
) -> list[GenerationResult]:
    """Generate one response per prompt, each row with its own interventions and seed.

    ``interventions`` is either one list applied to every row or one list per row. ``seeds`` is one seed
    per row, or an int ``s`` giving row ``i`` the seed ``s + i``; by default each row's seed is derived
    from its prompt and interventions. Rows are generated in batches of ``batch_size`` (one nnsight
    generate each); results come back in the order of ``prompts``.
    """
    import torch
    from tqdm.auto import tqdm

    from esr_analysis import tracing

    settings = settings or SamplingSettings()
    settings.check()
    rows = _normalise_rows(prompts, interventions)
    validate(model, rows, sae, capture)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if isinstance(seeds, int):
        seeds = [seeds + i for i in range(len(rows))]
    if seeds is not None and len(seeds) != len(rows):
        raise ValueError(f"got {len(seeds)} seeds for {len(rows)} prompts")

    name = _model_facts(model)[0]
    formatted = [format_chat(model.tokenizer, p, chat=chat, llama_extra_header=llama_extra_header) for p in prompts]
    records, addends, ablations = _resolve(model, rows, sae)
    row_seeds = list(seeds) if seeds is not None else [_default_seed(p, r) for p, r in zip(prompts, records, strict=True)]
    eos = _eos_ids(model)
    versions = library_versions()

    order = list(range(len(rows)))
    if len(rows) > batch_size:  # group similar lengths to reduce padding
        order.sort(key=lambda i: len(formatted[i][1]))
    results: dict[int, GenerationResult] = {}
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    bar = tqdm(total=len(rows), desc="generate", unit="row", disable=not progress or len(chunks) < 2)
    for chunk in chunks:
        plans = _build_plans(model, sae, addends, ablations, capture, chunk)
        ids, mask = _pad([formatted[i][1] for i in chunk], model.tokenizer)
        kw = _generation_kwargs(model, settings, [row_seeds[i] for i in chunk])
        out, captured = tracing.generate_with_plan(model, ids, mask, plans,
                                                   max_new_tokens=settings.max_new_tokens,
                                                   generate_kwargs=kw, remote=remote)
        T = ids.shape[1]
        for j, i in enumerate(chunk):
            gen = out[j, T:].tolist()
            stop = next((t for t, tok in enumerate(gen) if tok in eos), None)
            kept = gen if stop is None else gen[: stop + 1]
            acts = None
            if capture is not None:
                acts = captured[capture.layer][j, : len(kept)].to(torch.float32).tolist()
            results[i] = GenerationResult(
                prompt=prompts[i], chat_input=formatted[i][0], input_ids=formatted[i][1], output_ids=kept,
                text=model.tokenizer.decode(kept, skip_special_tokens=True), seed=row_seeds[i],
                interventions=records[i], settings=settings, model=name, versions=versions,
                stopped_by_eos=stop is not None,
                captured_latents=list(capture.latents) if capture else None,
                capture_layer=capture.layer if capture else None, latent_acts=acts,
            )
        bar.update(len(chunk))
    bar.close()
    return [results[i] for i in range(len(rows))]


def replay(
    model,
    pairs: Sequence[tuple[str, str | Sequence[int]]],
    *,
    capture: LatentCapture,
    interventions=None,
    sae=None,
    chat: bool = True,
    batch_size: int = 8,
    remote: bool | str = False,
    progress: bool = True,
) -> list[ReplayResult]:
    """Teacher-force ``(prompt, response)`` pairs with the same interventions and return per-token activations.

    ``response`` is a string (tokenized without special tokens) or the exact generated token ids. The
    scopes map onto the replayed sequence as in generation: ``prompt`` = prompt positions, ``generated`` =
    the last prompt position and every response position, ``all`` = both.
    """
    import torch
    from tqdm.auto import tqdm

    from esr_analysis import tracing

    if capture is None:
        raise ValueError("replay needs capture=LatentCapture(latents, layer)")
    prompts = [p for p, _ in pairs]
    rows = _normalise_rows(prompts, interventions)
    validate(model, rows, sae, capture)
    tok = model.tokenizer
    seqs, starts, responses = [], [], []
    for prompt, response in pairs:
        _, p_ids = format_chat(tok, prompt, chat=chat)
        r_ids = list(tok(response, add_special_tokens=False)["input_ids"]) if isinstance(response, str) else list(response)
        if not r_ids:
            raise ValueError(f"empty response for prompt {prompt!r}")
        seqs.append(p_ids + r_ids)
        starts.append(len(p_ids))
        responses.append(response if isinstance(response, str) else tok.decode(r_ids))
    _, addends, ablations = _resolve(model, rows, sae)
    out: list[ReplayResult] = []
    bar = tqdm(total=len(pairs), desc="replay", unit="pair", disable=not progress or len(pairs) <= batch_size)
    for lo in range(0, len(pairs), batch_size):
        idx = list(range(lo, min(lo + batch_size, len(pairs))))
        plans = _build_plans(model, sae, addends, ablations, capture, idx)
        ids, mask = _pad([seqs[i] for i in idx], tok)
        T = ids.shape[1]
        pos = torch.arange(T)[None, :]
        first_resp = torch.tensor([T - len(seqs[i]) + starts[i] for i in idx])[:, None]
        real = mask.bool()
        masks = {"all": real, "prompt": real & (pos < first_resp), "generated": real & (pos >= first_resp - 1)}
        masks = {k: v.to(torch.float32)[:, :, None] for k, v in masks.items()}
        acts, _ = tracing.forward_with_plan(model, ids, mask, plans, masks, stop_after_last=True, remote=remote)
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


def read_residuals(
    model,
    prompts: Sequence[str],
    layer: int,
    *,
    interventions=None,
    sae=None,
    chat: bool = True,
    remote: bool | str = False,
) -> list[Any]:
    """Block ``layer``'s output ``[T_i, d_model]`` for each chat-formatted prompt, after the interventions.

    Interventions apply with the replay scopes (the whole input counts as prompt). This is the
    remote-friendly way to get residuals for local SAE encoding (e.g. detector discovery on 70B).
    """
    from esr_analysis import tracing

    rows = _normalise_rows(prompts, interventions)
    validate(model, rows, sae, None)
    _, n_layers, _ = _model_facts(model)
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    seqs = [format_chat(model.tokenizer, p, chat=chat)[1] for p in prompts]
    _, addends, ablations = _resolve(model, rows, sae)
    plans = _build_plans(model, sae, addends, ablations, None, list(range(len(rows))))
    ids, mask = _pad(seqs, model.tokenizer)
    _, resid = tracing.forward_with_plan(model, ids, mask, plans, tracing.step0_masks(mask),
                                         save_residual_layers=(layer,), stop_after_last=True, remote=remote)
    T = ids.shape[1]
    return [resid[layer][b, T - len(s):].float() for b, s in enumerate(seqs)]
