"""Shared fixtures. Everything runs offline; nnsight deprecation warnings are errors (see pyproject)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture
def tiny_lm():
    """A wrapped random-init tiny Llama (fresh per test: nnsight mutates the tokenizer)."""
    from esr_analysis.models.tiny import tiny_hf_model, tiny_tokenizer
    from esr_analysis.tracing import wrap_model

    return wrap_model(tiny_hf_model("llama"), tiny_tokenizer())


@pytest.fixture
def tiny_sae():
    """A random ReLU sae-lens SAE matching the tiny models' width (64), 96 latents, non-trivial biases."""
    import torch
    from sae_lens import StandardSAE, StandardSAEConfig

    from esr_analysis.models.tiny import TINY_HIDDEN

    torch.manual_seed(1)
    sae = StandardSAE(StandardSAEConfig(d_in=TINY_HIDDEN, d_sae=96))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn_like(sae.W_enc) * 0.3)
        sae.W_dec.copy_(torch.randn_like(sae.W_dec))
        sae.b_enc.copy_(torch.randn_like(sae.b_enc) * 0.1)
        sae.b_dec.copy_(torch.randn_like(sae.b_dec) * 0.1)
    return sae


def pytest_configure(config):
    """Make nnsight deprecation warnings errors (imported here, after pytest's plugins, in a safe order)."""
    from esr_analysis.tracing import import_nnsight

    import_nnsight()
    config.addinivalue_line("filterwarnings", "error::nnsight.NNsightDeprecationWarning")


@pytest.fixture(scope="session")
def embedded_qwen():
    """The real embedded default model (Qwen2.5-Coder-0.5B-Instruct, fp32, CPU), loaded once per session.

    Shared by all ``slow`` tests; don't mutate its weights. The first use on a machine builds the HF copy in
    the user cache (``esr_analysis.paths.cache_dir()``), about a minute; later sessions load it in seconds.
    """
    from esr_analysis.models.loading import load_model
    from esr_analysis.models.registry import DEFAULT_MODEL

    return load_model(DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="session")
def ndif_server_python():
    """The NDIF server environment's interpreter (Python 3.12, ``ndif`` 0.1.2), for checks that need its
    packages but no running stack. Without it the test is skipped, or fails with ``ESR_REQUIRE_NDIF=1``."""
    from esr_analysis.tracing.ndif_local import venv_ready
    from esr_analysis.tracing.ndif_local.env import venv_python

    if not venv_ready():
        reason = "the NDIF server environment is not built (run `make ndif-venv`)"
        if os.environ.get("ESR_REQUIRE_NDIF", "") == "1":
            pytest.fail(f"ESR_REQUIRE_NDIF=1 but {reason}")
        pytest.skip(reason)
    return str(venv_python())


@pytest.fixture(scope="session")
def local_ndif(tmp_path_factory):
    """A real NDIF server (ndif 0.1.2) on loopback serving the tiny Llama and the embedded model, started once
    for the ``ndif`` tests and stopped after them (a stop that leaves a process or a port fails the run).

    Without a Python 3.12 or redis-server, or when the stack does not come up (Ray's node start-up windows
    are missed on a heavily loaded machine), the ``ndif`` tests are skipped with the reason, unless
    ``ESR_REQUIRE_NDIF=1``, which makes that a failure (and builds the server environment if needed).
    """
    from esr_analysis.tracing.ndif_local import LocalNdif, venv_ready, why_unavailable
    from esr_analysis.tracing.ndif_local.client import point_client_at
    from esr_analysis.tracing.ndif_local.models import served_models

    required = os.environ.get("ESR_REQUIRE_NDIF", "") == "1"
    reason = why_unavailable()
    if reason is None and not venv_ready() and not required:
        reason = "the NDIF server environment is not built (run `make ndif-venv`)"
    if reason:
        if required:
            pytest.fail(f"ESR_REQUIRE_NDIF=1 but the local NDIF cannot run: {reason}")
        pytest.skip(f"local NDIF unavailable: {reason}")
    try:
        inst = LocalNdif(tmp_path_factory.mktemp("ndif"), served_models()).start(attempts=2 if required else 1)
    except RuntimeError as exc:
        if required:
            raise
        pytest.skip(f"local NDIF did not start (set ESR_REQUIRE_NDIF=1 to make this a failure): {exc}")
    previous = point_client_at(inst.url)
    try:
        yield inst
    finally:
        point_client_at(previous)
        inst.stop()


def hash_judge(rubric_hash: str = "hash-v1", two_attempts_every: int = 3):
    """A deterministic :class:`~esr_analysis.judge.base.Judge`: score = a hash of the response mod 101; responses
    whose hash is divisible by ``two_attempts_every`` get a second attempt (10 points higher, capped at 100)."""
    import hashlib

    from esr_analysis.judge.base import Judge
    from esr_analysis.judge.types import Attempt, Grade, GradeRequest

    class _HashJudge(Judge):
        judge_id = "hash"
        uses_api = False

        async def grade_one(self, request: GradeRequest) -> Grade:
            h = int(hashlib.sha256(request.response.encode()).hexdigest()[:8], 16)
            attempts = [Attempt(text="x", score=float(h % 101))]
            if h % two_attempts_every == 0:
                attempts.append(Attempt(text="y", score=float(min(100, h % 101 + 10))))
            return Grade(attempts=attempts, judge_id=self.judge_id, rubric_hash=self.rubric_hash)

    j = _HashJudge()
    j.rubric_hash = rubric_hash
    return j


@pytest.fixture
def exp1_run(tmp_path, tiny_sae):
    """A tiny pipeline run with exp 1 (3 latents x 3 prompts) and its session."""
    from esr_analysis.experiments import load_config
    from esr_analysis.experiments.pipeline import run_pipeline
    from esr_analysis.experiments.session import open_session
    from esr_analysis.models.tiny import load_tiny

    over = {"model": "tiny-llama", "n_prompts_per_latent": 3, "max_new_tokens": 6, "batch_size": 8,
            "temperature": 0.7, "selection.n_latents": 3, "selection.relevance_rule": "none", "search.n_steps": 1,
            "search.max_new_tokens": 3, "search.upper": 20, "search.prior_mean": 5, "search.prior_std": 5,
            "search.grid_size": 100, "search.require_fluent_window": False, "output_dir": str(tmp_path / "runs"),
            "experiments": ["exp1"]}
    s = open_session(load_config("embedded-demo", over), model=load_tiny("llama"), sae=tiny_sae, judge=hash_judge(),
                     cache_dir=tmp_path / "cache", progress=False)
    res = run_pipeline(s.config, session=s, cache_dir=tmp_path / "cache")
    return s, res.run_dir
