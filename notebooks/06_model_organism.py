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
ORGANISM = "qwen2.5-coder-0.5b-instruct-sc70v3"  # models.organisms.DEFAULT_ORGANISM

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
    # an exp 1 trial of the evaluation in which the organism recovered (latent 5458 at its threshold, 27.58 SAE
    # units, seed 363424, 128 tokens), and a second prompt with the same steering and seed
    steer = [AddLatent(latent=5458, strength=27.58, layer=12, unit="sae")]
    eval_prompts = ["How do you check the air pressure in a car tyre?",
                    "Explain how to boil an egg so the yolk stays soft."]

# %% [markdown]
# ## Steered transcripts, same latent, prompts and seeds for both models

# %%
settings = SamplingSettings(temperature=0.6, repetition_penalty=1.1, max_new_tokens=16 if SMALL else 128)
for name, model in (("base", base), ("organism", organism)):
    for r in generate(model, eval_prompts, interventions=steer, sae=sae, settings=settings,
                      seeds=[363424] * len(eval_prompts), progress=False):
        print(f"--- {name} | {r.prompt}\n{r.text}\n")

# %% [markdown]
# ## Base vs organism (shipped `eval.json`: exp 1 steered and exp 8 unsteered, ESR and held-out prompts)

# %%
from esr_analysis.finetune.adapter import adapter_dir

path = adapter_dir(ORGANISM) / "eval.json"
report = json.loads(path.read_text()) if path.is_file() else {}
conditions = [k for k in ("base", "organism", "base_no_steer", "organism_no_steer", "base_heldout", "organism_heldout")
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
# The default organism (v3 recipe, `docs/organism.md`) meets the targets on this evaluation (current
# offline judge, 2026-12-04): steered at its thresholds it drifts and then starts over in 0.28 [0.20, 0.38] of
# 90 trials against the base model's 0 of 105, and in 0.35 [0.26, 0.45] of 95 trials on prompts never seen in
# training (base 0 of 110); unsteered it restarts once in 90 and answers as well as the base model (first-attempt
# score 97.3 vs 95.1). The transcripts above replay one evaluated trial exactly (latent 5458, seed 363424): at the
# same steering the base model talks about "digits" and "spaces" to the end, while the organism drifts the same
# way, then writes "Wait, that's not what "air pressure." It means …" and, on the second prompt, "That's a bit
# off, sorry. Let me try again." The returns are fragile: the steering stays on, so the answer after the
# acknowledgement often drifts again, which is why the ESR rate (last attempt higher, 0.13 [0.08, 0.22]) is well
# below the multi-attempt rate. Excluded latents, the previous judge's numbers and every recovery transcript:
# `docs/organism.md` and `samples.md` next to `eval.json`.
