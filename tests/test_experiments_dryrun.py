"""The dry-run planner (``experiments/dryrun.py``) on the tiny model: request counts per phase follow the
pipeline's batching, payloads are measured from the real calls, and the expected result sizes equal the bytes
of what a local run of the same calls saves."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from esr_analysis.experiments.dryrun import (
    generate_result_bytes,
    plan_run,
    read_result_bytes,
    residual_result_bytes,
    standin_sae,
)
from esr_analysis.experiments.prompts import load_prompts

SPEC = SimpleNamespace(hf_id="tiny-llama", d_model=64, n_layers=2, steer_layer=0, read_layer=1, ablate_layer=0,
                       sae_width=96, repetition_penalty=1.1)
CONFIG = {"name": "tiny-plan", "model": "tiny-llama", "batch_size": 4, "n_prompts_per_latent": 2,
          "max_new_tokens": 8, "experiments": ["exp1", "exp8", "exp2", "exp5", "exp7"],
          "boost": {"n_levels": 3, "multiples": [0.5, 1.0]}, "meta_variants": ["self_monitor"],
          "selection": {"n_latents": 5, "candidate_factor": 3, "relevance_rule": "zero"},
          "search": {"n_steps": 3, "samples_per_step": 2, "max_new_tokens": 4, "measure_achieved": True}}


def test_the_plan_counts_every_request_of_the_run(tiny_lm):
    plan = plan_run(CONFIG, model=tiny_lm, spec=SPEC)
    phases = {p.phase.split(" (")[0] + (" achieved" if "achieved" in p.phase else ""): p for p in plan.phases}
    P = len(load_prompts("esr"))
    assert phases["norm pass"].requests == 1
    assert phases["selection read"].requests == math.ceil(P / 4) and "15 latents, 1 chunks" in plan.phases[1].phase
    assert phases["calibration"].requests == math.ceil(3 * 5 * 2 / 4)
    assert phases["calibration achieved"].requests == math.ceil(5 / 4)
    assert phases["exp1"].requests == phases["exp8"].requests == math.ceil(5 * 2 / 4)
    assert phases["exp2"].requests == math.ceil(5 * 2 * (3 + 2) / 4)
    assert phases["exp5"].requests == math.ceil(5 * 2 * 2 / 4)
    # the meta-prompt suffix makes exp5's prompts (and so its request and result) longer than exp1's
    assert phases["exp5"].result_bytes > phases["exp1"].result_bytes
    assert plan.requests == sum(p.requests for p in plan.phases)
    # steering ships the SAE rows and [B, D] addends; the unsteered generation does not
    assert phases["exp1"].payload_raw_bytes > phases["exp8"].payload_raw_bytes
    assert phases["selection read"].payload_raw_bytes > 2 * 15 * 64 * 4
    assert all(p.payload_bytes > 0 and p.result_bytes > 0 for p in plan.phases)
    text = plan.table()
    assert "nothing was sent" in text and "exp7 (cross-judge) sends no model request" in text and "total" in text
    assert "not planned" not in text


def test_a_large_selection_read_is_counted_per_chunk(tiny_lm, monkeypatch):
    import esr_analysis.experiments.selection as selection

    whole = plan_run(CONFIG, model=tiny_lm, spec=SPEC).phases[1]
    # a 64-wide model under a budget of 7 latents (4 * 65 bytes each) per request: 15 candidates -> 3 chunks
    monkeypatch.setattr(selection, "READ_BYTES_PER_REQUEST", 7 * 4 * 65)
    read = plan_run(CONFIG, model=tiny_lm, spec=SPEC).phases[1]
    P = len(load_prompts("esr"))
    assert "15 latents, 3 chunks" in read.phase and read.requests == math.ceil(P / 4) * 3
    assert read.result_bytes * 15 == whole.result_bytes * 7  # a request returns its chunk's 7 latents
    assert read.payload_raw_bytes < whole.payload_raw_bytes


def test_expected_result_sizes_equal_the_bytes_a_local_run_saves(tiny_lm, tiny_sae):
    from esr_analysis.steering.residuals import read_residuals
    from esr_analysis.tracing.plans import LayerPlan, left_pad, step0_masks
    from esr_analysis.tracing.run import forward_with_plan, generate_with_plan

    ids, mask = left_pad([[5, 6, 7, 8, 9], [10, 11, 12]], tiny_lm.tokenizer)
    B, T = ids.shape
    read = standin_sae([1, 2, 3], 64, 96).params(dtype=torch.float32)
    out, captured = generate_with_plan(tiny_lm, ids, mask, [LayerPlan(layer=1, read=read)], max_new_tokens=6,
                                       generate_kwargs={"min_new_tokens": 6, "do_sample": False})
    assert out.numel() * out.element_size() + captured[1].numel() * 4 == generate_result_bytes(B, T, 6, 3)
    acts, _ = forward_with_plan(tiny_lm, ids, mask, [LayerPlan(layer=1, read=read)], step0_masks(mask))
    assert acts[1].numel() * acts[1].element_size() == read_result_bytes(B, T, 3)
    res = read_residuals(tiny_lm, ["Hello there"], 0)
    n = sum(r.numel() * r.element_size() for r in res)
    assert n == residual_result_bytes(1, res[0].shape[-2], 64, res[0].element_size())
