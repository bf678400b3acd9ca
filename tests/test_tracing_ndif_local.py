"""Every remote path against a real NDIF server (ndif 0.1.2 on loopback, the ``local_ndif`` fixture): each
result equals the same call run locally on a model loaded from the very same folder."""

from __future__ import annotations

import pytest
import torch

from esr_analysis.steering.generate import generate
from esr_analysis.steering.interventions import AblateLatents, AddLatent, AddVector
from esr_analysis.steering.replay import replay
from esr_analysis.steering.results import LatentCapture
from esr_analysis.steering.sampling import SamplingSettings

pytestmark = pytest.mark.ndif

PROMPTS = ["Explain how to bake bread.", "How do you calculate the area of a circle?", "Budgets list income."]
GREEDY = SamplingSettings(max_new_tokens=6, min_new_tokens=6)


def _local_from(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from esr_analysis.tracing import wrap_model

    return wrap_model(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                      AutoTokenizer.from_pretrained(folder))


@pytest.fixture(scope="module")
def tiny_pair(local_ndif):
    """``(local, remote)``: the served tiny Llama loaded locally, and its weightless client model."""
    from esr_analysis.tracing.ndif_local.client import folder_model

    folder = local_ndif.models["tiny-llama"]
    return _local_from(folder), folder_model(folder)


def _weightless(lm) -> bool:
    from esr_analysis.tracing import hf_module

    return all(p.device.type == "meta" for p in hf_module(lm).parameters())


def test_steered_per_row_generate_with_capture_and_ablation_equals_local(tiny_pair, tiny_sae):
    local, remote = tiny_pair
    rows = [[AddLatent(latent=4, strength=3.0, layer=0)],
            [AblateLatents(latents=(2, 3), layer=1), AddLatent(latent=9, strength=-2.0, layer=1, scope="generated")],
            [AddVector(vector=tuple([0.5] * 64), layer=1, scope="prompt")]]
    kw = dict(interventions=rows, sae=tiny_sae, settings=GREEDY, capture=LatentCapture(latents=(1, 2, 7), layer=1),
              progress=False)
    want = generate(local, PROMPTS, **kw)
    got = generate(remote, PROMPTS, remote=True, **kw)
    for a, b in zip(want, got, strict=True):
        assert a.output_ids == b.output_ids
        torch.testing.assert_close(torch.tensor(b.latent_acts), torch.tensor(a.latent_acts), atol=1e-5, rtol=1e-5)
        assert a.interventions == b.interventions
    assert len({tuple(r.output_ids) for r in want}) > 1
    assert _weightless(remote)


def test_seeded_sampling_equals_local(tiny_pair):
    local, remote = tiny_pair
    s = SamplingSettings(temperature=1.0, top_p=0.9, max_new_tokens=6, min_new_tokens=6)
    want = generate(local, PROMPTS[:2], settings=s, seeds=[3, 4], progress=False)
    got = generate(remote, PROMPTS[:2], settings=s, seeds=[3, 4], remote=True, progress=False)
    assert [r.output_ids for r in want] == [r.output_ids for r in got]


def test_replay_with_steering_and_ablation_equals_local(tiny_pair, tiny_sae):
    local, remote = tiny_pair
    pairs = [(PROMPTS[0], "Mix flour and water."), (PROMPTS[1], "Use pi r squared.")]
    kw = dict(capture=LatentCapture(latents=(1, 2, 7), layer=1), sae=tiny_sae, progress=False,
              interventions=[AddLatent(latent=4, strength=2.0, layer=0), AblateLatents(latents=(5,), layer=1)])
    want = replay(local, pairs, **kw)
    got = replay(remote, pairs, remote=True, **kw)
    for a, b in zip(want, got, strict=True):
        assert a.tokens == b.tokens
        torch.testing.assert_close(torch.tensor(b.latent_acts), torch.tensor(a.latent_acts), atol=1e-5, rtol=1e-5)


def test_relative_units_run_their_norm_pass_remotely(tiny_pair, tiny_sae):
    """The median-norm pass of ``unit="relative"`` goes to the server: the client model stays weightless."""
    local, remote = tiny_pair
    iv = [AddLatent(latent=4, strength=0.8, layer=1, unit="relative")]
    want = generate(local, PROMPTS[:1], interventions=iv, sae=tiny_sae, settings=GREEDY, progress=False)
    got = generate(remote, PROMPTS[:1], interventions=iv, sae=tiny_sae, settings=GREEDY, remote=True, progress=False)
    assert _weightless(remote)
    assert want[0].output_ids == got[0].output_ids
    m_local = want[0].interventions[0].median_residual_norm
    m_remote = got[0].interventions[0].median_residual_norm
    assert m_local is not None and m_remote == pytest.approx(m_local, rel=1e-5)


def test_selection_read_and_residuals_equal_local(tiny_pair, tiny_sae):
    from esr_analysis.experiments.selection import max_activations
    from esr_analysis.steering.residuals import read_residuals

    local, remote = tiny_pair
    want = max_activations(local, tiny_sae, PROMPTS, [1, 2, 3, 40], 1)
    got = max_activations(remote, tiny_sae, PROMPTS, [1, 2, 3, 40], 1, remote=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(read_residuals(local, PROMPTS, 0), read_residuals(remote, PROMPTS, 0, remote=True), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_detector_discovery_read_equals_local(tiny_pair, tiny_sae):
    """The discovery read (max-pooled latents over every pair, running statistics kept inside the trace)."""
    from esr_analysis.mechanisms.detectors import discover

    local, remote = tiny_pair
    answers = ["Mix flour and water, then bake.", "Area is pi times r squared.", "Income minus spending."]
    kw = dict(layer=1, answers=answers, n_derangements=1, candidates=list(range(0, 96, 3)), progress=False)
    want = discover(local, tiny_sae, PROMPTS, **kw)
    got = discover(remote, tiny_sae, PROMPTS, remote=True, latents_per_pass=16, **kw)
    torch.testing.assert_close(got.stats.off.max, want.stats.off.max, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.stats.act_sum, want.stats.act_sum, atol=1e-4, rtol=1e-5)
    assert _weightless(remote)


def test_a_request_blob_over_one_mib_goes_through_and_equals_local(tiny_pair):
    """A discovery read shipping a 6144-latent encoder (1.5 MiB of incompressible float32 weights): before the
    API was started through ``esr_ndif_api.py`` every blob over 1 MiB came back as HTTP 400."""
    from esr_analysis.mechanisms.detectors import discover
    from esr_analysis.models.tiny import TINY_HIDDEN
    from esr_analysis.sae.random_sae import random_sae
    from esr_analysis.tracing.sizing import measure_request

    local, remote = tiny_pair
    sae = random_sae(TINY_HIDDEN, 6144, 0)
    answers = ["Mix flour and water, then bake.", "Area is pi times r squared.", "Income minus spending."]
    kw = dict(layer=1, answers=answers, n_derangements=1, batch_size=6, progress=False)
    size = measure_request(remote, discover, remote, sae, PROMPTS, remote=True, **kw)
    assert size.sent_bytes > 2**20  # the case under test: the (only) request is over 1 MiB
    want = discover(local, sae, PROMPTS, **kw)
    got = discover(remote, sae, PROMPTS, remote=True, **kw)
    torch.testing.assert_close(got.stats.off.max, want.stats.off.max, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.stats.on.sum, want.stats.on.sum, atol=1e-4, rtol=1e-5)
    assert float(want.stats.off.max.max()) > 0


def test_attribution_patching_backward_on_the_server_equals_local(tiny_pair, tiny_sae):
    """Attribution patching (gradients through every head, MLP, block and the SAE node) run on the server, which
    has no autograd by default: the scores equal the local ones."""
    from esr_analysis.mechanisms.attribution.inputs import (
        RecoveryPoint,
        counterfactual,
        prepare,
        restart_metric,
    )
    from esr_analysis.mechanisms.attribution.methods import SaeNode, attribution_patching

    local, remote = tiny_pair
    text = ("The sky is blue because of light. Cats like fish a lot. Wait, that is not right. Light scatters in "
            "the air.")
    ep = RecoveryPoint.from_dict({"prompt": "Why is the sky blue?", "response": text,
                                  "correction_char": text.index("Wait"), "id": "e0",
                                  "interventions": [{"kind": "add_latent", "latent": 3, "strength": 4.0, "layer": 1,
                                                     "unit": "sae"}]})
    results = []
    for lm, where in ((local, False), (remote, True)):
        prep = prepare(lm, ep)
        cf_ids, cf_ivs, _ = counterfactual(prep, "steering_off", sae_layer=1)
        att, _ = attribution_patching(lm, prep, cf_ids, cf_ivs, metric=restart_metric(prep, lm.tokenizer),
                                      sae=tiny_sae, node=SaeNode.of(tiny_sae, 1), remote=where)
        results.append(att)
    want, got = results
    assert want.atp.keys() == got.atp.keys() and len(want.atp) > 10
    for k, v in want.atp.items():
        assert got.atp[k] == pytest.approx(v, abs=1e-4), k
    assert got.metric_clean == pytest.approx(want.metric_clean, abs=1e-5)
    assert got.dla["total"] == pytest.approx(want.dla["total"], abs=1e-4)
    assert _weightless(remote)


def test_session_sends_several_traces_as_one_request(tiny_pair):
    from esr_analysis.tracing import import_nnsight, kernels

    nnsight = import_nnsight()
    local, remote = tiny_pair
    ids = torch.tensor([[5, 6, 7, 8]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    plan = {"layer": 0, "adds": {"all": torch.full((1, 64), 0.25)}, "ablations": [], "read": None}
    masks = {"all": torch.ones(1, 4, 1)}

    def run(lm, **session_kw):
        with lm.session(**session_kw):
            with lm.trace(inputs):
                plain = nnsight.save(lm.output.logits)
            with lm.trace(inputs):
                kernels.apply_plan(lm.model.layers[0], plan, masks)
                steered = nnsight.save(lm.output.logits)
        return plain, steered

    want = run(local)
    got = run(remote, remote=True)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(want[0], want[1])


def test_large_saved_tensor_comes_back_through_the_object_store(tiny_pair, local_ndif):
    """A 16 MB incompressible result is past the inline (redis) limit, so it travels through the S3 store."""
    from esr_analysis.tracing import import_nnsight

    nnsight = import_nnsight()
    _, remote = tiny_pair
    before = (local_ndif.logs / "store.log").read_text().count("PUT /")
    with remote.trace("Hello there", remote=True):
        g = torch.Generator().manual_seed(7)
        big = nnsight.save(torch.randn(4_000_000, generator=g) + 0 * remote.model.layers[0].output.sum())
    want = torch.randn(4_000_000, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(big, want)
    assert (local_ndif.logs / "store.log").read_text().count("PUT /") > before


def test_failing_trace_gives_a_clear_error_and_leaves_the_server_serving(tiny_pair, local_ndif):
    from esr_analysis.tracing import import_nnsight

    nnsight = import_nnsight()
    _, remote = tiny_pair
    n_before = len(set(local_ndif.alive()) - set(local_ndif.runner_pids()))
    with pytest.raises(Exception, match=r"(?s)shapes cannot be multiplied|size mismatch|mat1 and mat2"), \
            remote.trace("Hello", remote=True):
        nnsight.save(remote.model.layers[0].output @ torch.ones(3, 3))
    with remote.trace("Hello", remote=True):
        ok = nnsight.save(remote.output.logits.shape)
    assert tuple(ok)[-1] == 512
    assert len(set(local_ndif.alive()) - set(local_ndif.runner_pids())) == n_before


@pytest.mark.slow
def test_embedded_model_steered_generate_and_residuals_equal_local(local_ndif, embedded_qwen):
    """The embedded default model (Qwen2.5-Coder-0.5B-Instruct) served by NDIF, against the local run."""
    from esr_analysis.steering.residuals import read_residuals
    from esr_analysis.tracing.ndif_local.client import folder_model

    remote = folder_model(local_ndif.models["qwen2.5-coder-0.5b-instruct"])
    g = torch.Generator().manual_seed(0)
    vec = tuple((torch.randn(896, generator=g) * 0.5).tolist())
    rows = [[AddVector(vector=vec, strength=4.0, layer=12)], []]
    want = generate(embedded_qwen, PROMPTS[:2], interventions=rows, settings=GREEDY, progress=False)
    got = generate(remote, PROMPTS[:2], interventions=rows, settings=GREEDY, remote=True, progress=False)
    assert [r.output_ids for r in want] == [r.output_ids for r in got]
    for a, b in zip(read_residuals(embedded_qwen, PROMPTS[:1], 12),
                    read_residuals(remote, PROMPTS[:1], 12, remote=True), strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    assert _weightless(remote)


# -- the sandboxed (untrusted) path: the traced block runs in a fresh runner process, not in the model actor --

def _warm_runners(inst, n: int, timeout: float = 300.0) -> list[int]:
    """The runner PIDs once ``n`` are up (each served model keeps one warm)."""
    import time

    t0 = time.monotonic()
    while len(pids := inst.runner_pids()) < n:
        assert time.monotonic() - t0 < timeout, f"only {pids} sandbox runners after {timeout} s"
        time.sleep(1.0)
    return pids


def _untrusted(call):
    """``call()`` sent as untrusted requests, with the warm runners it consumed (each request takes one)."""
    import time

    from esr_analysis.tracing.ndif_local.client import untrusted_requests

    inst = _untrusted.instance
    warm = set(_warm_runners(inst, len(inst.models)))
    with untrusted_requests():
        out = call()
    t0 = time.monotonic()
    while not warm - set(inst.runner_pids()) and time.monotonic() - t0 < 30:
        time.sleep(0.5)
    return out, warm - set(inst.runner_pids())


@pytest.fixture
def sandboxed(local_ndif):
    _untrusted.instance = local_ndif
    return _untrusted


def test_untrusted_generate_runs_in_a_sandbox_runner_and_equals_local(tiny_pair, tiny_sae, sandboxed, local_ndif):
    local, remote = tiny_pair
    rows = [[AddLatent(latent=4, strength=3.0, layer=0)],
            [AblateLatents(latents=(2, 3), layer=1), AddLatent(latent=9, strength=-2.0, layer=1, scope="generated")],
            [AddVector(vector=tuple([0.5] * 64), layer=1, scope="prompt")]]
    kw = dict(interventions=rows, sae=tiny_sae, settings=GREEDY, capture=LatentCapture(latents=(1, 2, 7), layer=1),
              progress=False)
    want = generate(local, PROMPTS, **kw)
    warm = set(_warm_runners(local_ndif, len(local_ndif.models)))
    trusted = generate(remote, PROMPTS, remote=True, **kw)
    assert warm <= set(local_ndif.runner_pids()), "a trusted request must run in the model actor"
    got, used = sandboxed(lambda: generate(remote, PROMPTS, remote=True, **kw))
    assert len(used) == 1, f"an untrusted request must take one sandbox runner (used {used})"
    for a, b, c in zip(want, got, trusted, strict=True):
        assert a.output_ids == b.output_ids == c.output_ids
        torch.testing.assert_close(torch.tensor(b.latent_acts), torch.tensor(a.latent_acts), atol=1e-5, rtol=1e-5)


def test_untrusted_replay_and_discovery_read_equal_local(tiny_pair, tiny_sae, sandboxed):
    from esr_analysis.mechanisms.detectors import discover

    local, remote = tiny_pair
    pairs = [(PROMPTS[0], "Mix flour and water."), (PROMPTS[1], "Use pi r squared.")]
    kw = dict(capture=LatentCapture(latents=(1, 2, 7), layer=1), sae=tiny_sae, progress=False,
              interventions=[AddLatent(latent=4, strength=2.0, layer=0), AblateLatents(latents=(5,), layer=1)])
    want = replay(local, pairs, **kw)
    got, used = sandboxed(lambda: replay(remote, pairs, remote=True, **kw))
    assert used
    for a, b in zip(want, got, strict=True):
        assert a.tokens == b.tokens
        torch.testing.assert_close(torch.tensor(b.latent_acts), torch.tensor(a.latent_acts), atol=1e-5, rtol=1e-5)
    answers = ["Mix flour and water, then bake.", "Area is pi times r squared.", "Income minus spending."]
    dk = dict(layer=1, answers=answers, n_derangements=1, candidates=list(range(0, 96, 3)), progress=False)
    want_d = discover(local, tiny_sae, PROMPTS, **dk)
    got_d, used = sandboxed(lambda: discover(remote, tiny_sae, PROMPTS, remote=True, latents_per_pass=16, **dk))
    assert used
    torch.testing.assert_close(got_d.stats.off.max, want_d.stats.off.max, atol=1e-5, rtol=1e-5)


def test_untrusted_attribution_without_gradients_equals_local_and_gradients_fail_clearly(tiny_pair, tiny_sae,
                                                                                        sandboxed):
    """In the sandbox no weight is readable (the runner's model is weightless) and no gradient comes back
    (ndif 0.1.2): direct logit attribution (module calls only) and activation patching equal the local run;
    attribution patching fails with the toolkit's explanation."""
    from esr_analysis.mechanisms.attribution.inputs import (
        RecoveryPoint,
        counterfactual,
        model_inputs,
        prepare,
        restart_metric,
    )
    from esr_analysis.mechanisms.attribution.methods import SaeNode, activation_patching, attribution_patching
    from esr_analysis.tracing.attribution import SANDBOX_GRADIENTS, site_pass

    local, remote = tiny_pair
    text = "The sky is blue. Cats like fish. Wait, that is not right. Light scatters in the air."
    ep = RecoveryPoint.from_dict({"prompt": "Why is the sky blue?", "response": text,
                                  "correction_char": text.index("Wait"), "id": "e0",
                                  "interventions": [{"kind": "add_latent", "latent": 3, "strength": 4.0, "layer": 1,
                                                     "unit": "sae"}]})
    node = SaeNode.of(tiny_sae, 1)
    prep = prepare(local, ep)
    cf_ids, cf_ivs, _ = counterfactual(prep, "steering_off", sae_layer=1)
    metric = restart_metric(prep, local.tokenizer)
    want, state = attribution_patching(local, prep, cf_ids, cf_ivs, metric=metric, sae=tiny_sae, node=node)

    reads = {layer: ("head", "mlp_out") for layer in range(2)}
    ids, mask, plans, masks = model_inputs(local, prep.ids, prep.start, ep.parsed_interventions(), tiny_sae)
    kw = dict(reads=reads, metric=state["metric"], dla=True)
    dla_local = site_pass(local, ids, mask, plans, masks, **kw)["dla"]
    got, used = sandboxed(lambda: site_pass(remote, ids, mask, plans, masks, remote=True, **kw)["dla"])
    assert used
    for k in dla_local:
        torch.testing.assert_close(got[k], dla_local[k], atol=1e-4, rtol=1e-4)
    assert float(dla_local["total"][0]) == pytest.approx(want.metric_clean, abs=1e-4)

    sets = [["L0.H0", "L1.H1"], ["L1.mlp"], ["latent:3"]]
    effects = activation_patching(local, prep, state, sets, sae=tiny_sae, node=node)
    got_fx, used = sandboxed(lambda: activation_patching(remote, prep, state, sets, sae=tiny_sae, node=node,
                                                         remote=True))
    assert used
    assert got_fx == pytest.approx(effects, abs=1e-4)

    with pytest.raises(RuntimeError, match="cannot return them"):
        sandboxed(lambda: attribution_patching(remote, prep, cf_ids, cf_ivs, metric=metric, sae=tiny_sae, node=node,
                                               remote=True))
    assert "OutOfOrderError" in SANDBOX_GRADIENTS


def test_untrusted_failing_trace_gives_the_users_error(tiny_pair, sandboxed, local_ndif):
    from esr_analysis.tracing import import_nnsight

    nnsight = import_nnsight()
    _, remote = tiny_pair

    def bad():
        with remote.trace("Hello", remote=True):
            nnsight.save(remote.model.layers[0].output @ torch.ones(3, 3))

    with pytest.raises(Exception, match=r"(?s)shapes cannot be multiplied|size mismatch|mat1 and mat2"):
        sandboxed(bad)
    _warm_runners(local_ndif, len(local_ndif.models))  # the pool refills: the server keeps serving
