"""finetune.train / organism / adapter on a tiny random model: presets, order, masked loss, kill -9 + resume,
merge maths, and the whole path (data -> train -> kill/resume -> merge -> steered generate)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esr_analysis.finetune.data import IGNORE_INDEX, TokenizedExample
from esr_analysis.finetune.train import PRESETS, LoraSettings, step_batches

REPO = Path(__file__).resolve().parent.parent
JOB = REPO / "tests" / "finetune_tiny_job.py"


def test_paper_preset_is_the_authors_recipe():
    p = PRESETS["paper"]
    assert (p.r, p.alpha, p.dropout, p.target_modules, p.lr, p.warmup_steps, p.epochs, p.effective_batch,
            p.weight_decay) == (32, 16, 0.05, "all-linear", 2e-4, 10, 4, 8, 0.0)
    assert PRESETS["cpu"].effective_batch == 8


def test_step_batches_cover_every_example_once_per_epoch_in_a_seeded_order():
    s = LoraSettings(epochs=3, micro_batch=4, grad_accum=2, seed=1)
    steps = step_batches(21, s)
    assert len(steps) == 3 * 3  # ceil(21/4)=6 micro-batches per epoch -> 3 steps per epoch, 3 epochs
    flat = [i for step in steps for mb in step for i in mb]
    for e in range(3):
        assert sorted(flat[21 * e:21 * (e + 1)]) == list(range(21))
    assert step_batches(21, s) == steps != step_batches(21, LoraSettings(epochs=3, micro_batch=4, grad_accum=2))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2", "gemma3"])
def test_masked_loss_equals_plain_torch_cross_entropy_on_trained_positions(arch):
    """The loss reaches the decoder stack and unembedding through the component sites (Gemma 2's logit
    soft-cap included) and equals the model's own full-logit cross-entropy on the trained positions."""
    import torch
    import torch.nn.functional as F
    from peft import get_peft_model

    from esr_analysis.finetune.train import _collate, _summed_loss, lora_config
    from esr_analysis.models.tiny import tiny_hf_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_hf_model(arch), lora_config(LoraSettings(r=4, dropout=0.0)))
    rows = [TokenizedExample([5, 9, 11, 12, 40], [IGNORE_INDEX, IGNORE_INDEX, 11, 12, 40]),
            TokenizedExample([7, 8, 9], [IGNORE_INDEX, 8, IGNORE_INDEX])]
    ids, labels, mask = _collate(rows, pad_id=0)
    with torch.no_grad():
        got = float(_summed_loss(model, ids, labels, mask))
        want = 0.0
        for r in rows:  # independent: full logits, one sequence at a time, shift by hand
            logits = model(input_ids=torch.tensor([r.input_ids])).logits[0]
            for t in range(len(r.input_ids) - 1):
                if r.labels[t + 1] != IGNORE_INDEX:
                    want += float(F.cross_entropy(logits[t:t + 1], torch.tensor([r.labels[t + 1]])))
    assert got == pytest.approx(want, rel=1e-5)


def test_steered_rows_train_with_their_vector_added_after_their_layer_and_only_those_rows():
    import torch
    import torch.nn.functional as F
    from peft import get_peft_model

    from esr_analysis.finetune.train import _collate, _steering_hook, _summed_loss, lora_config
    from esr_analysis.models.tiny import tiny_hf_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_hf_model("qwen2"), lora_config(LoraSettings(r=4, dropout=0.0)))
    inner = model.get_base_model()
    d = inner.config.hidden_size
    v = torch.randn(d) * 3.0
    plain = [TokenizedExample([5, 9, 11, 12, 40], [IGNORE_INDEX, IGNORE_INDEX, 11, 12, 40]),
             TokenizedExample([7, 8, 9, 10], [IGNORE_INDEX, 8, 9, IGNORE_INDEX])]
    steered = [TokenizedExample(plain[0].input_ids, plain[0].labels, steer_layer=0, steer_vector=v), plain[1]]

    def loss_of(rows):
        ids, labels, mask = _collate(rows, pad_id=0)
        hook = _steering_hook(model, rows)
        try:
            with torch.no_grad():
                return float(_summed_loss(model, ids, labels, mask))
        finally:
            if hook is not None:
                hook.remove()

    def independent(row, vec):  # plain torch: wrap layer 0's forward by hand, full logits, shift by hand
        layer = inner.model.layers[0]
        forward = layer.forward

        def wrapped(*a, **k):
            out = forward(*a, **k)
            return (out[0] + vec, *out[1:]) if isinstance(out, tuple) else out + vec
        layer.forward = wrapped
        try:
            with torch.no_grad():
                logits = inner(input_ids=torch.tensor([row.input_ids])).logits[0]
        finally:
            layer.forward = forward
        return sum(float(F.cross_entropy(logits[t:t + 1], torch.tensor([row.labels[t + 1]])))
                   for t in range(len(row.input_ids) - 1) if row.labels[t + 1] != IGNORE_INDEX)

    assert _steering_hook(model, plain) is None
    got = loss_of(steered)
    want = independent(plain[0], v) + independent(plain[1], torch.zeros(d))
    assert got == pytest.approx(want, rel=1e-5)
    assert abs(got - loss_of(plain)) > 1e-3  # the vector matters
    zero = [TokenizedExample(plain[0].input_ids, plain[0].labels, steer_layer=0, steer_vector=torch.zeros(d)),
            plain[1]]
    assert loss_of(zero) == pytest.approx(loss_of(plain), rel=1e-6)
    assert not inner.model.layers[0]._forward_hooks  # removed after use
    with pytest.raises(ValueError, match="share one steer_layer"):
        _steering_hook(model, [steered[0], TokenizedExample([1, 2], [IGNORE_INDEX, 2], steer_layer=1,
                                                            steer_vector=v)])
    # opening scope: the vector only at positions < steer_until (here the first trained token, index 2)
    first = plain[0].first_trained
    assert first == 2
    partial = [TokenizedExample(plain[0].input_ids, plain[0].labels, steer_layer=0, steer_vector=v,
                                steer_until=first), plain[1]]
    only_opening = torch.zeros(len(plain[0].input_ids), d)
    only_opening[:first] = v
    got_partial = loss_of(partial)
    assert got_partial == pytest.approx(independent(plain[0], only_opening) + independent(plain[1], torch.zeros(d)),
                                        rel=1e-5)
    assert abs(got_partial - got) > 1e-4 and abs(got_partial - loss_of(plain)) > 1e-4
    with pytest.raises(ValueError, match="steer_until"):
        _steering_hook(model, [TokenizedExample([1, 2], [IGNORE_INDEX, 2], steer_layer=0, steer_vector=v,
                                                steer_until=-1)])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _run(work: Path, adapter: Path, delay: float = 0.0) -> list[float]:
    out = subprocess.run([sys.executable, str(JOB), str(work), str(adapter), str(delay)], env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("LOSSES "))
    return json.loads(line.removeprefix("LOSSES "))


def _checkpoint_step(work: Path) -> int:
    try:
        return json.loads((work / "lora" / "checkpoint" / "step.json").read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_whole_path_on_a_tiny_model_with_kill_and_resume(tmp_path):
    import torch

    # uninterrupted reference run
    ref = _run(tmp_path / "ref", tmp_path / "ref-adapter")
    assert len(ref) == 9 and all(x == x for x in ref)

    # the same run killed with SIGKILL mid-training, then started again
    work, adapter = tmp_path / "killed", tmp_path / "killed-adapter"
    proc = subprocess.Popen([sys.executable, str(JOB), str(work), str(adapter), "1.0"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while _checkpoint_step(work) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    at_kill = _checkpoint_step(work)
    assert 3 <= at_kill < 9 and not adapter.exists()
    resumed = _run(work, adapter)
    assert resumed == pytest.approx(ref, rel=1e-5, abs=1e-6)  # the same loss curve
    meta = json.loads((adapter / "organism.json").read_text())
    assert meta["training_result"]["resumed_from_step"] == at_kill
    assert meta["mix"]["n_self_correction"] == 3 and meta["mix"]["n_normal"] == 3

    # merge: weights equal W + (alpha/r) B A computed by hand, and steered generation runs on the merged model
    from safetensors.torch import load_file

    from esr_analysis.finetune.adapter import merge_adapter
    from esr_analysis.models.tiny import TINY_HIDDEN, tiny_hf_model, tiny_tokenizer
    from esr_analysis.sae.random_sae import random_sae
    from esr_analysis.steering import AddLatent, SamplingSettings, generate
    from esr_analysis.tracing import wrap_model

    base = tiny_hf_model("llama")
    w0 = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    merged = merge_adapter(tiny_hf_model("llama"), adapter)
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    a = next(v for k, v in lora.items() if "layers.0.self_attn.q_proj.lora_A" in k).float()
    b = next(v for k, v in lora.items() if "layers.0.self_attn.q_proj.lora_B" in k).float()
    want = w0 + (8.0 / 4) * b @ a
    assert torch.allclose(merged.model.layers[0].self_attn.q_proj.weight, want, atol=1e-5)
    assert not torch.allclose(want, w0)

    sae = random_sae(TINY_HIDDEN, 96, 3)
    settings = SamplingSettings(max_new_tokens=6)
    steer = [AddLatent(latent=3, strength=0.9, layer=1, unit="relative")]
    tuned = generate(wrap_model(merged, tiny_tokenizer()), ["How do you clean a pan?"], interventions=steer,
                     sae=sae, settings=settings, seeds=0, progress=False)
    plain = generate(wrap_model(base, tiny_tokenizer()), ["How do you clean a pan?"], interventions=steer,
                     sae=sae, settings=settings, seeds=0, progress=False)
    assert len(tuned[0].output_ids) >= 1
    assert tuned[0].output_ids != plain[0].output_ids  # the adapter changed the model


def test_corrupt_adapter_is_refused(tmp_path):
    import torch
    from peft import get_peft_model

    from esr_analysis.finetune.adapter import merge_adapter, save_adapter
    from esr_analysis.finetune.train import lora_config
    from esr_analysis.models.tiny import tiny_hf_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_hf_model("llama"), lora_config(LoraSettings(r=2)))
    d = save_adapter(model, tmp_path / "a", {"name": "a", "base_model": "tiny"})
    meta = json.loads((d / "organism.json").read_text())
    assert meta["dtype"] == "float16" and len(meta["content_sha256"]) == 64
    with open(d / "adapter_model.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match="corrupt"):
        merge_adapter(tiny_hf_model("llama"), d)
