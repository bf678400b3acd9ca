"""Steered generation: one batched nnsight ``generate`` per chunk of rows, each row with its own
interventions and its own seed.

Every input is validated and every intervention resolved before any compute
(:mod:`esr_analysis.steering.resolve`); see :mod:`esr_analysis.steering.interventions` for the edits and
scopes and :mod:`esr_analysis.steering.sampling` for the per-row seeded sampler. A row's default seed is
:func:`esr_analysis.seeds.derive_seed` of its prompt and resolved interventions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from esr_analysis.models.chat import format_chat
from esr_analysis.provenance import library_versions
from esr_analysis.seeds import derive_seed
from esr_analysis.steering.residuals import median_norm_function
from esr_analysis.steering.resolve import build_plans, model_facts, normalise_rows, resolve_rows, validate
from esr_analysis.steering.results import GenerationResult, LatentCapture
from esr_analysis.steering.sampling import SamplingSettings, make_row_sampler


def _eos_ids(model: Any) -> set[int]:
    from esr_analysis.tracing.core import hf_module

    cfg = getattr(hf_module(model), "generation_config", None)
    ids: set[int] = set()
    for src in (getattr(cfg, "eos_token_id", None), model.tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(x) for x in src)
    return ids


def _generation_kwargs(model: Any, settings: SamplingSettings, seeds: list[int]) -> dict[str, Any]:
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


def generate(
    model: Any,
    prompts: Sequence[str],
    *,
    interventions: Any = None,
    sae: Any = None,
    settings: SamplingSettings | None = None,
    seeds: Sequence[int] | int | None = None,
    capture: LatentCapture | None = None,
    batch_size: int = 16,
    chat: bool = True,
    llama_extra_header: bool = False,
    system_prompt: str | None = None,
    template_system_prompt: bool = False,
    remote: bool | str = False,
    progress: bool = True,
) -> list[GenerationResult]:
    """Generate one response per prompt, each row with its own interventions and seed.

    ``interventions`` is either one list applied to every row or one list per row. ``seeds`` is one seed
    per row, or an int ``s`` giving row ``i`` the seed ``s + i``; by default each row's seed is derived
    from its prompt and interventions. Rows are generated in batches of ``batch_size`` (one nnsight
    generate each); results come back in the order of ``prompts``. ``system_prompt`` and
    ``template_system_prompt``: see :func:`esr_analysis.models.chat.format_chat` (default: no system turn, as
    in the paper).
    """
    import torch
    from tqdm.auto import tqdm

    from esr_analysis.tracing.plans import left_pad
    from esr_analysis.tracing.run import generate_with_plan

    settings = settings or SamplingSettings()
    settings.check()
    rows = normalise_rows(prompts, interventions)
    validate(model, rows, sae, capture)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if isinstance(seeds, int):
        seeds = [seeds + i for i in range(len(rows))]
    if seeds is not None and len(seeds) != len(rows):
        raise ValueError(f"got {len(seeds)} seeds for {len(rows)} prompts")

    name = model_facts(model)[0]
    formatted = [format_chat(model.tokenizer, p, chat=chat, llama_extra_header=llama_extra_header,
                             system_prompt=system_prompt, template_system_prompt=template_system_prompt)
                 for p in prompts]
    records, addends, ablations = resolve_rows(model, rows, sae, median_norm_function(remote))
    row_seeds = (list(seeds) if seeds is not None
                 else [derive_seed(p, [r.model_dump() for r in recs]) for p, recs in zip(prompts, records, strict=True)])
    eos = _eos_ids(model)
    versions = library_versions()

    order = list(range(len(rows)))
    if len(rows) > batch_size:  # group similar lengths to reduce padding
        order.sort(key=lambda i: len(formatted[i][1]))
    results: dict[int, GenerationResult] = {}
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    bar = tqdm(total=len(rows), desc="generate", unit="row", disable=not progress or len(chunks) < 2)
    for chunk in chunks:
        plans = build_plans(model, sae, addends, ablations, capture, chunk)
        ids, mask = left_pad([formatted[i][1] for i in chunk], model.tokenizer)
        kw = _generation_kwargs(model, settings, [row_seeds[i] for i in chunk])
        out, captured = generate_with_plan(model, ids, mask, plans, max_new_tokens=settings.max_new_tokens,
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
