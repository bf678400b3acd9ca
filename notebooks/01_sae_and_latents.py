# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: esr-analysis
#     language: python
#     name: esr-analysis
# ---

# %% [markdown]
# # 01 — The shipped SAE of the embedded model, and its latents
#
# The embedded default model (Qwen2.5-Coder-0.5B-Instruct, offline) comes with a ReLU SAE trained with
# sae-lens on its block-12 residual stream (`data/saes/qwen2.5-coder-0.5b-instruct-l12-8k/`). This notebook
# shows its reconstruction quality, how often its latents fire, what a few latents respond to, and that
# adding a latent's decoder direction while generating pushes the text towards the latent's label.
#
# **Parameters** (next cell): `SMALL` (env `ESR_SMALL=1`) runs a reduced version in about a minute. There is no
# `REMOTE` here: the notebook is about our own SAE of the embedded model. The committed outputs are the full
# setting, made by `make notebooks`.

# %% tags=["parameters"]
import os

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
SAE_SOURCE = "shipped:qwen2.5-coder-0.5b-instruct-l12"
LAYER = 12

# %%
import json

import matplotlib.pyplot as plt
import numpy as np

from esr_analysis.sae.labels import labels_for
from esr_analysis.sae.loading import load_sae, parse_source

sae = load_sae(SAE_SOURCE)
labels = labels_for(sae)
sae_dir = parse_source(SAE_SOURCE)[1]
print(sae.esr_source, sae.cfg.architecture(), "d_in", sae.cfg.d_in, "d_sae", sae.cfg.d_sae)

# %% [markdown]
# ## Reconstruction quality
# The report measured at training time on held-out text (definitions in `esr_analysis.sae.training`):

# %%
print((sae_dir / "quality_report.md").read_text())

# %% [markdown]
# The same measures on a few fresh texts (plain and chat-formatted), with the model loaded:

# %%
from esr_analysis.models.loading import load_model
from esr_analysis.sae.harvest import residuals_for_texts
from esr_analysis.sae.training import reconstruction_stats

lm = load_model("qwen2.5-coder-0.5b-instruct", device="cpu")
texts = ["The ocean covers most of the Earth, and its waves shape every coastline.",
         "def mean(xs):\n    return sum(xs) / len(xs)\n"]
if not SMALL:
    texts += ["To bake bread, mix flour, water, salt and yeast, knead the dough and let it rise.",
              "The committee met on Tuesday to discuss the budget for next year."]
h = residuals_for_texts(lm, texts, LAYER)
stats = reconstruction_stats(sae, h)
print({k: round(stats[k], 3) for k in ("fve", "mean_l0")}, "over", stats["n_tokens"], "tokens")

# %% [markdown]
# ## Latent density
# Fraction of held-out tokens on which each latent is active (log scale; inactive latents at the left edge).

# %%
dens = np.array([labels.info(i).get("density", 0.0) for i in range(sae.cfg.d_sae)])
floor = 1e-6
plt.figure(figsize=(6, 3))
plt.hist(np.log10(np.maximum(dens, floor)), bins=60)
plt.xlabel("log10 density (held-out tokens)")
plt.ylabel("latents")
plt.title(f"{(dens == 0).mean():.1%} of latents inactive on held-out text")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What a few latents respond to
# `describe_latent(i)` answers "what is latent i?": its automatic label, density and top contexts
# (the activating token is marked `[[like this]]`).

# %%
from esr_analysis.sae.labels import describe_latent

summary = json.loads((sae_dir / "labels_summary.json").read_text())
print({k: v for k, v in summary.items() if k != "most_common_labels"})
# Latents picked by reading the shipped labels (`labels.search("money")`, ...): money, religion, love, colour.
EXAMPLE_LATENTS = [115, 2959, 1992, 2780]
STEER = EXAMPLE_LATENTS[:2]
for i in EXAMPLE_LATENTS[: 2 if SMALL else len(EXAMPLE_LATENTS)]:
    print(describe_latent(i, sae))
    print()

# %% [markdown]
# ## Steering with two labelled latents
# Add `strength × median residual norm` along a latent's decoder direction at layer 12 (all positions,
# `unit="relative"`), greedy decoding. The text should move towards each latent's label as the strength grows.

# %%
from esr_analysis.steering.generate import generate
from esr_analysis.steering.interventions import AddLatent
from esr_analysis.steering.sampling import SamplingSettings

prompt = "Write a short paragraph about your weekend."
strengths = [0.6, 1.2] if SMALL else [0.4, 0.8, 1.2, 1.6]
rows, names = [[]], ["baseline"]
for lat in STEER:
    for s in strengths:
        rows.append([AddLatent(latent=lat, strength=s, layer=LAYER, unit="relative")])
        names.append(f"latent {lat} ({labels.label(lat)}) x{s}")
settings = SamplingSettings(max_new_tokens=24 if SMALL else 48, repetition_penalty=1.1)
results = generate(lm, [prompt] * len(rows), interventions=rows, sae=sae, settings=settings, progress=False)
for name, r in zip(names, results, strict=True):
    print(f"--- {name}\n{r.text.strip()}\n")

# %% [markdown]
# ## Reading the result
# * The held-out FVE and CE loss recovered say how much of the model's block-12 computation the SAE keeps;
#   compare the fresh-text numbers above with them (chat-formatted text can be harder for an SAE trained on
#   plain text).
# * In the steered samples, note the smallest strength at which the text turns towards the latent's label and
#   the one at which it breaks (loops, fragments). The ESR experiments (notebooks 02-05) depend on the window
#   between the two: a recovery can only be seen where the steered text is still fluent.
