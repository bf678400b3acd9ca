"""``esr run <preset> --dry-run``: plan every remote request of a pipeline run without sending anything.

For each phase of :func:`esr_analysis.experiments.pipeline.run_pipeline` the planner counts the requests a run
sends (upper bounds: every selected latent survives every filter, nothing is cached yet), builds the phase's
largest request with the toolkit's real call (``generate``, ``max_activations``, the median-norm pass) on a
weightless model of the config's model, and measures its serialised size with
:mod:`esr_analysis.tracing.sizing` (the bytes nnsight's remote backend would post; nothing is sent). The SAE
is a random stand-in with the real SAE's shape that holds only the latents the request touches (a sliced SAE
ships only those rows), so no SAE is downloaded. The expected result of a request is the sum of the bytes of
the tensors it saves (:func:`generate_result_bytes` and friends), before the server's compression.

Phases (counts with ``N`` latents, ``B = batch_size`` rows per request, ``P`` prompts):

* norm pass: one forward per steering layer over the reference texts (relative strengths are recorded for every
  steered row, so it runs once per run; cached per model);
* selection read (relevance rule ``zero``): ``ceil(P / B) * C`` forwards reading all ``N * candidate_factor``
  candidates (``topk``: all SAE latents) in ``C`` chunks of at most
  :data:`~esr_analysis.experiments.selection.READ_BYTES_PER_REQUEST` of encoder weights each;
* calibration: ``n_steps * ceil(N * samples_per_step / B)`` generations of ``search.max_new_tokens`` tokens, plus
  ``ceil(N / B)`` for the achieved score;
* exp1 (steered) and exp8 (unsteered): ``ceil(N * n_prompts_per_latent / B)`` generations each;
* exp2 (boost sweep): ``ceil(N * n_prompts_per_latent * L / B)`` with ``L`` = ``boost.n_levels`` (sigma mode,
  an upper bound: clamped levels merge) + ``len(boost.multiples)`` (multiple mode);
* exp5 (meta-prompting): ``ceil(N * n_prompts_per_latent * (1 + V) / B)`` for ``V`` variants, measured on the
  longest prompts with the longest variant suffix;
* exp7 (cross-judge) sends no model request: it re-grades stored responses with other judges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

PLANNED_EXPERIMENTS = ("exp1", "exp8", "exp2", "exp5", "exp7")
REQUEST_LIMIT_BYTES = 10 * 2**20
"""The per-request goal (10 MiB) the table flags against."""


@dataclass
class PhasePlan:
    """One phase: ``requests`` requests of up to ``rows`` rows; ``payload_bytes`` is the measured size of its
    largest request (as sent), ``result_bytes`` the expected result of one request."""

    phase: str
    requests: int
    rows: int
    payload_bytes: int
    payload_raw_bytes: int
    result_bytes: int
    note: str = ""

    @property
    def total_payload(self) -> int:
        return self.requests * self.payload_bytes

    @property
    def total_result(self) -> int:
        return self.requests * self.result_bytes


@dataclass
class RunPlan:
    """Every planned request of a run, by phase (see the module docstring)."""

    config: str
    model: str
    phases: list[PhasePlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.phases)

    def table(self) -> str:
        """The plan as a fixed-width text table with totals."""
        head = f"{'phase':<40} {'requests':>8} {'rows':>4} {'payload/req':>12} {'result/req':>11} " \
               f"{'payload total':>13} {'result total':>12}"
        lines = [f"dry run of {self.config} on {self.model}: nothing was sent", head, "-" * len(head)]
        for p in self.phases:
            flag = "  > 10 MiB" if p.payload_bytes > REQUEST_LIMIT_BYTES else ""
            lines.append(f"{p.phase:<40} {p.requests:>8} {p.rows:>4} {_mb(p.payload_bytes):>12} "
                         f"{_mb(p.result_bytes):>11} {_mb(p.total_payload):>13} {_mb(p.total_result):>12}{flag}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<40} {self.requests:>8} {'':>4} {'':>12} {'':>11} "
                     f"{_mb(sum(p.total_payload for p in self.phases)):>13} "
                     f"{_mb(sum(p.total_result for p in self.phases)):>12}")
        lines += [f"* {p.phase}: {p.note}" for p in self.phases if p.note]
        lines += [f"* {n}" for n in self.notes]
        return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def generate_result_bytes(rows: int, prompt_len: int, new_tokens: int, read_latents: int = 0) -> int:
    """Saved tensors of one batched generate (``tracing.run.generate_with_plan``): token ids ``[B, T + n]``
    int64 and, with a read, ``n`` float32 slices ``[B, k]``."""
    return rows * (prompt_len + new_tokens) * 8 + new_tokens * rows * read_latents * 4


def read_result_bytes(rows: int, prompt_len: int, read_latents: int) -> int:
    """Saved activations ``[B, T, k]`` float32 of one reading forward (``tracing.run.forward_with_plan``)."""
    return rows * prompt_len * read_latents * 4


def residual_result_bytes(rows: int, prompt_len: int, d_model: int, dtype_bytes: int) -> int:
    """Saved block outputs ``[B, T, D]`` in the model's dtype of one residual read (the norm pass)."""
    return rows * prompt_len * d_model * dtype_bytes


def standin_sae(latents: list[int], d_in: int, d_sae: int, seed: int = 0) -> Any:
    """A random :class:`~esr_analysis.sae.sliced.SlicedSAE` holding ``latents`` of a ``d_sae``-wide SAE on
    ``d_in`` (float32, ReLU): the shape of what a request ships, with incompressible values."""
    import torch

    from esr_analysis.sae.sliced import SlicedSAE

    g = torch.Generator().manual_seed(seed)
    k = len(latents)
    return SlicedSAE(latents=tuple(latents), W_enc=torch.randn(d_in, k, generator=g),
                     b_enc=torch.randn(k, generator=g), W_dec=torch.randn(k, d_in, generator=g),
                     b_dec=torch.randn(d_in, generator=g), threshold=None, apply_b_dec_to_input=True,
                     d_in=d_in, d_sae=d_sae, source="stand-in")


def planning_model(spec: Any) -> tuple[Any, str]:
    """A weightless model of ``spec`` and a note: its own tokenizer when it is cached locally, else the
    embedded model's (token counts, hence the few bytes of ids, are then approximate)."""
    from transformers import AutoTokenizer

    from esr_analysis.models.loading import load_model_config
    from esr_analysis.tracing.core import meta_model

    try:
        tok = AutoTokenizer.from_pretrained(spec.hf_id, local_files_only=True)
        note = ""
    except (OSError, ValueError):
        from esr_analysis.tracing.ndif_local.models import embedded_model_folder

        tok = AutoTokenizer.from_pretrained(str(embedded_model_folder()))
        note = (f"{spec.hf_id}'s tokenizer is not available offline: prompt lengths counted with the embedded "
                "model's tokenizer (ids are a few KiB of each request)")
    return meta_model(spec.hf_id, load_model_config(spec), tok), note


def plan_run(config: Any, overrides: list[str] | None = None, *, model: Any = None, spec: Any = None) -> RunPlan:
    """The :class:`RunPlan` of ``config`` (a preset, file, dict or config); see the module docstring.
    ``model``/``spec`` replace the weightless model of the config's model (tests pass a tiny one)."""
    from esr_analysis.experiments import selection as selection_module
    from esr_analysis.experiments.config import load_config
    from esr_analysis.experiments.metaprompt import META_VARIANTS, augment
    from esr_analysis.experiments.prompts import load_prompts
    from esr_analysis.experiments.selection import latent_chunks, max_activations
    from esr_analysis.models.registry import get_spec
    from esr_analysis.steering.generate import generate
    from esr_analysis.steering.interventions import AddLatent
    from esr_analysis.steering.residuals import REFERENCE_TEXTS, median_residual_norm, remember_median_norm
    from esr_analysis.steering.sampling import SamplingSettings
    from esr_analysis.tracing.sizing import measure_request

    cfg = load_config(config, overrides)
    spec = spec or get_spec(cfg.model)
    notes: list[str] = []
    if model is None:
        model, note = planning_model(spec)
        if note:
            notes.append(note)
    steer = spec.steer_layer if cfg.steer_layer is None else cfg.steer_layer
    read = spec.read_layer if cfg.read_layer is None else cfg.read_layer
    d_sae = int(spec.sae_width or 0) or 16 * spec.d_model
    B, N, sel = cfg.batch_size, cfg.selection.n_latents, cfg.selection
    prompts = load_prompts(cfg.prompts)
    tok = model.tokenizer
    from esr_analysis.models.chat import format_chat

    def length(p: str) -> int:
        return len(format_chat(tok, p, chat=True, llama_extra_header=cfg.llama_extra_header,
                               system_prompt=cfg.system_prompt, template_system_prompt=cfg.template_system_prompt)[1])

    longest = sorted(prompts, key=length, reverse=True)[:B]
    T = length(longest[0])
    rep = cfg.repetition_penalty if cfg.repetition_penalty is not None else spec.repetition_penalty
    dtype_bytes = 2 if str(getattr(model.config, "torch_dtype", "")).endswith(("bfloat16", "float16")) else 4
    plan = RunPlan(config=cfg.name, model=spec.hf_id, notes=notes)

    # norm pass (once per steering layer)
    remember_median_norm(model, steer, None)
    size = measure_request(model, median_residual_norm, model, steer, remote=True)
    ref_T = max(len(tok(t)["input_ids"]) for t in REFERENCE_TEXTS) + 16
    plan.phases.append(PhasePlan(f"norm pass (layer {steer})", 1, len(REFERENCE_TEXTS), size.sent_bytes,
                                 size.raw_bytes, residual_result_bytes(len(REFERENCE_TEXTS), ref_T, spec.d_model,
                                                                       dtype_bytes),
                                 "once per run (median residual norm, cached)"))
    remember_median_norm(model, steer, 1.0)  # the generations below skip the norm pass, as in a run

    # selection read
    if sel.relevance_rule != "none":
        k = len(sel.latents) if sel.latents else (N * sel.candidate_factor if sel.relevance_rule == "zero" else d_sae)
        budget = selection_module.READ_BYTES_PER_REQUEST  # read at call time (tests lower it)
        chunks = latent_chunks(range(k), spec.d_model, budget)
        first = chunks[0]  # the largest chunk (chunks fill in order)
        sae = standin_sae(list(range(k)), spec.d_model, d_sae)
        size = measure_request(model, max_activations, model, sae, longest, list(range(k)), read,
                               batch_size=B, max_read_bytes=budget, remote=True)  # stops at the first chunk
        plan.phases.append(PhasePlan(f"selection read ({k} latents, {len(chunks)} chunks)",
                                     math.ceil(len(prompts) / B) * len(chunks), B, size.sent_bytes,
                                     size.raw_bytes, read_result_bytes(B, T, len(first)),
                                     f"upper bound: every candidate reaches the relevance filter; {len(first)} "
                                     "latents per request"))

    def gen_phase(name: str, n_rows: int, new_tokens: int, steered: bool, note: str = "",
                  prompts_used: list[str] | None = None) -> None:
        sae = standin_sae(list(range(B)), spec.d_model, d_sae)
        rows_prompts = prompts_used or longest
        t_len = max(length(p) for p in rows_prompts)
        ivs = [[AddLatent(latent=j, strength=10.0, layer=steer, scope=cfg.scope)] if steered else []
               for j in range(B)]
        settings = SamplingSettings(temperature=cfg.temperature, top_p=cfg.top_p, repetition_penalty=rep,
                                    max_new_tokens=new_tokens)
        size = measure_request(model, generate, model, rows_prompts, interventions=ivs,
                               sae=sae if steered else None,
                               settings=settings, seeds=list(range(B)), batch_size=B,
                               llama_extra_header=cfg.llama_extra_header, system_prompt=cfg.system_prompt,
                               template_system_prompt=cfg.template_system_prompt, remote=True, progress=False)
        plan.phases.append(PhasePlan(name, math.ceil(n_rows / B), B, size.sent_bytes, size.raw_bytes,
                                     generate_result_bytes(B, t_len, new_tokens), note))

    s = cfg.search
    gen_phase(f"calibration ({s.n_steps} steps)", s.n_steps * N * s.samples_per_step, s.max_new_tokens, True,
              f"{N} latents x {s.samples_per_step} prompts per step")
    if s.measure_achieved:
        gen_phase("calibration (achieved score)", N, s.max_new_tokens, True)
    for exp in cfg.experiments:
        if exp == "exp1":
            gen_phase("exp1 (steered)", N * cfg.n_prompts_per_latent, cfg.max_new_tokens, True)
        elif exp == "exp8":
            gen_phase("exp8 (no steering)", N * cfg.n_prompts_per_latent, cfg.max_new_tokens, False)
        elif exp == "exp2":
            b = cfg.boost
            levels = (b.n_levels if "sigma" in b.modes else 0) + (len(b.multiples) if "multiple" in b.modes else 0)
            gen_phase(f"exp2 (boost sweep, {levels} levels)", N * cfg.n_prompts_per_latent * levels,
                      cfg.max_new_tokens, True, "upper bound: clamped sigma levels merge")
        elif exp == "exp5":
            variants = list(cfg.meta_variants)
            suffix = max(variants, key=lambda v: len(META_VARIANTS.get(v, "")), default="baseline")
            gen_phase(f"exp5 (meta-prompting, {len(variants)} variants)",
                      N * cfg.n_prompts_per_latent * (1 + len(variants)), cfg.max_new_tokens, True,
                      "baseline + each variant; measured with the longest variant suffix",
                      prompts_used=[augment(p, suffix, "a stand-in topic label") for p in longest])
        elif exp == "exp7":
            notes.append("exp7 (cross-judge) sends no model request: it re-grades stored responses")
    notes.append(f"upper bounds: {N} latents survive every filter, no generation is cached; rows per request = "
                 f"batch_size {B}; prompt length {T} tokens (the longest {B} prompts); results before compression")
    return plan
