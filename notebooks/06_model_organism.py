# %% [markdown]
# # 06 · A self-correcting model organism (exp 4): build or load, recoveries, base vs organism
#
# The embedded model almost never recovers from steering; the organism is the same model with a LoRA adapter
# trained on self-correction transcripts built from its own text (`docs/organism.md`). This notebook loads the
# shipped organism (or, with `SMALL` = env `ESR_SMALL=1`, runs the whole recipe on a tiny random model in
# seconds), shows steered transcripts, and draws the base-vs-organism table and figure from the shipped
# `eval.json` (made by `scripts/evaluate_organism.py`).

# %%
import json
import os
import tempfile

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
ORGANISM = "qwen2.5-coder-0.5b-instruct-sc70"

# %% [markdown]
# ## Build (SMALL: tiny model) or load (the shipped adapter)

# %%
from esr_analysis.steering import AddLatent, SamplingSettings, generate

if SMALL:
    from esr_analysis.finetune.adapter import merge_adapter
    from esr_analysis.finetune.build import BuildSettings
    from esr_analysis.finetune.data import load_acknowledgements
    from esr_analysis.finetune.organism import data_stage, train_stage
    from esr_analysis.finetune.train import LoraSettings
    from esr_analysis.models.tiny import TINY_HIDDEN, tiny_hf_model, tiny_tokenizer
    from esr_analysis.sae.random_sae import random_sae
    from esr_analysis.tracing import wrap_model

    work = tempfile.mkdtemp()
    base = wrap_model(tiny_hf_model("llama"), tiny_tokenizer())
    sae = random_sae(TINY_HIDDEN, 96, 3)
    prompts = [f"How do you clean a {x}?" for x in ("pan", "window", "floor", "bike")]
    sc, normal, recipe = data_stage(base, sae, prompts, load_acknowledgements(),
                                    BuildSettings(layer=1, latents=(3, 5), answer_max_new_tokens=12,
                                                  opening_max_new_tokens=8, fluency_checks=False), work,
                                    progress=False)
    settings = LoraSettings(name="tiny", r=4, alpha=8, epochs=2, micro_batch=2, grad_accum=1, lr=1e-2)
    train_stage(tiny_hf_model("llama"), base.tokenizer, sc, normal, 0.5, settings, work, f"{work}/adapter",
                {"name": "tiny", "base_model": "tiny"}, progress=False)
    organism = wrap_model(merge_adapter(tiny_hf_model("llama"), f"{work}/adapter"), tiny_tokenizer())
    steer = [AddLatent(latent=3, strength=0.7, layer=1, unit="relative")]
    eval_prompts = prompts[:2]
else:
    from esr_analysis import load_model, load_sae

    organism = load_model(ORGANISM)  # base + LoRA merged (merge_and_unload), then wrapped with nnsight
    base = load_model("qwen2.5-coder-0.5b-instruct")
    sae = load_sae("shipped:qwen2.5-coder-0.5b-instruct-l12")
    # the one exp 1 trial of the evaluation in which the organism recovered (latent 5409 at its threshold,
    # 35.24 SAE units, seed 407511), and a second prompt with the same steering
    steer = [AddLatent(latent=5409, strength=35.24, layer=12, unit="sae")]
    eval_prompts = ["Explain how to make a simple budget for a month.", "How do you clean a stainless steel sink?"]

# %% [markdown]
# ## Steered transcripts, same latent, prompts and seeds for both models

# %%
settings = SamplingSettings(temperature=0.6, repetition_penalty=1.1, max_new_tokens=16 if SMALL else 96)
for name, model in (("base", base), ("organism", organism)):
    for r in generate(model, eval_prompts, interventions=steer, sae=sae, settings=settings,
                      seeds=[407511] * len(eval_prompts), progress=False):
        print(f"--- {name} | {r.prompt}\n{r.text}\n")

# %% [markdown]
# ## Base vs organism (shipped `eval.json`: exp 1 steered and exp 8 unsteered, ESR and held-out prompts)

# %%
from esr_analysis.finetune.adapter import adapter_dir

path = adapter_dir(ORGANISM) / "eval.json"
report = json.loads(path.read_text()) if path.is_file() else {}
conditions = [k for k in ("base", "organism", "base_no_steer", "organism_no_steer", "organism_heldout")
              if k in report]
for k in conditions:
    m = report[k]
    print(f"{k:18s} n={m['n']:3d}  multi-attempt {m['multi_attempt_rate']:.2f} {m['multi_attempt_ci']}  "
          f"ESR {m['esr_rate']:.2f} {m['esr_ci']}  first-attempt {m['first_attempt_score']:.1f}")

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for ax, (metric, ci) in zip(axes, (("multi_attempt_rate", "multi_attempt_ci"), ("esr_rate", "esr_ci")), strict=True):
    vals = [report[k][metric] for k in conditions]
    err = [[v - report[k][ci][0] for k, v in zip(conditions, vals, strict=True)],
           [report[k][ci][1] - v for k, v in zip(conditions, vals, strict=True)]]
    ax.bar(range(len(conditions)), vals, yerr=err, capsize=3, color="tab:blue")
    ax.set_xticks(range(len(conditions)), conditions, rotation=30, ha="right")
    ax.set_title(metric.replace("_", " ") + " (Wilson 95 %)")
fig.tight_layout()

# %% [markdown]
# ## Reading the result
#
# The shipped organism (v2 recipe: off-topic openings, steering on while the self-correction examples train,
# p = 0.7) does **not** meet the targets. Steered at the strengths that move the base model off topic,
# it mostly keeps answering the question from the first token: its threshold search saw first-attempt scores
# of 0.92-0.99 for 10 of 12 latents and found no fluent off-topic window for them, so only 15 steered trials
# remain on the ESR prompts, with one recovery (the transcript above: "I apologize from misunderstanding ...
# To make a simple budget for a month, ..."). The transcripts above show the difference at that strength
# (35 SAE units, 0.85x the organism's median residual norm): the base model collapses into "from from from",
# while the organism drifts for a sentence or two and returns to the question, on both prompts. That is
# mostly resistance from the start, with occasional mid-answer returns; unsteered, the organism answers as
# well as the base model and never restarts. Numbers, the fixed-strength probe and what to try next:
# `docs/organism.md`.
