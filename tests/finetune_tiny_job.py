"""The whole organism path on a tiny random model, as a child process the tests can SIGKILL.

``python tests/finetune_tiny_job.py WORK ADAPTER DELAY``: data build (tiny Llama + seeded random SAE, fluency
checks off) -> mix -> LoRA training (checkpoint every step, ``DELAY`` seconds of sleep after each step so a
test can kill it mid-training) -> adapter. Prints ``STEP <i> <loss>`` per step and ``LOSSES <json>`` at the end.
"""

from __future__ import annotations

import json
import sys
import time


def main(work: str, adapter: str, delay: float) -> None:
    import torch

    from esr_analysis.finetune.build import BuildSettings
    from esr_analysis.finetune.organism import data_stage, train_stage
    from esr_analysis.finetune.train import LoraSettings
    from esr_analysis.models.tiny import TINY_HIDDEN, tiny_hf_model, tiny_tokenizer
    from esr_analysis.sae.random_sae import random_sae
    from esr_analysis.tracing import wrap_model

    torch.set_num_threads(1)
    lm = wrap_model(tiny_hf_model("llama"), tiny_tokenizer())
    sae = random_sae(TINY_HIDDEN, 96, 3)
    prompts = [f"How do you clean a {thing}?" for thing in ("pan", "window", "floor", "bike", "shoe", "desk")]
    acks = ["Wait, that is off-topic.", "Sorry, let me start again.", "Hold on, back to your question."]
    build = BuildSettings(layer=1, latents=(3, 5, 8), strengths=(0.5, 0.9), answer_max_new_tokens=12,
                          opening_max_new_tokens=8, batch_size=8, fluency_checks=False)
    sc, normal, recipe = data_stage(lm, sae, prompts, acks, build, work, progress=False)
    settings = LoraSettings(name="tiny", r=4, alpha=8, epochs=3, micro_batch=2, grad_accum=1, lr=1e-2,
                            warmup_steps=1, checkpoint_every=1, max_length=128)

    def on_step(step: int, loss: float) -> None:
        print(f"STEP {step} {loss:.6f}", flush=True)
        time.sleep(delay)

    _, meta = train_stage(tiny_hf_model("llama"), lm.tokenizer, sc, normal, 0.5, settings, work, adapter,
                          {"name": "tiny-sc50", "base_model": "tiny", "data": recipe}, progress=False,
                          on_step=on_step)
    print("LOSSES " + json.dumps(meta["training_result"]["losses"]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
