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
# # 08 · Anatomy of a recovery: boundaries, per-token traces and aligned statistics (exp 6 and exp 9)
#
# A *recovery* is a trial the judge splits into at least two attempts, the last scoring higher than the first.
# Where inside it does the model turn? This notebook takes the recoveries of a stored run, marks three
# character offsets in each (off-topic start ≤ correction start ≤ on-topic start; offline annotator on the
# judge's attempt split, or Claude), maps them to tokens, and replays every episode teacher-forced with the
# steering **on** (the paper's exp 6) and **off** (its exp 9), reading per token the steered latent, the
# off-topic detectors, "backtracking" latents (by label and by correlation with the correction) and any latents
# you name. Then: one episode's trace (Fig. 6 style), and all episodes aligned at the correction token with
# missing positions masked (NaN, never zeros), region means and paired tests against a baseline of plain
# on-topic answers (`esr_analysis.mechanisms`, `scripts/anatomy_study.py`).
#
# **Parameters** (next cell): `SMALL` (env `ESR_SMALL=1`: a tiny random model and a *scripted* run of six
# recoveries, a smoke run whose numbers mean nothing) and `REMOTE` (env `ESR_REMOTE=1`: trace on NDIF). The full
# setting reads the organism's exp 1 run made by `scripts/evaluate_organism.py` (`RUN` below).

# %% tags=["parameters"]
import os

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
REMOTE = os.environ.get("ESR_REMOTE", "0") == "1"  # trace on NDIF (needs NDIF_API_KEY)
MODEL = "qwen2.5-coder-0.5b-instruct-sc70v3"  # models.organisms.DEFAULT_ORGANISM
from esr_analysis.paths import DATA_DIR

RUN = str(DATA_DIR.parent / f"runs/organism-eval-v3/{MODEL}/organism/exp1")  # made by `make organism-eval`
DETECTORS = os.environ.get("ESR_DETECTORS", str(DATA_DIR / "detectors" / f"{MODEL}.json"))  # list or file
USER_LATENTS: list[int] = []
WINDOW = 12 if SMALL else 60

# %% [markdown]
# ## Load the model, the SAE and the episodes

# %%
import tempfile

import torch

from esr_analysis.mechanisms.episodes import episodes_from_runs
from esr_analysis.mechanisms.study import read_latent_list

torch.set_num_threads(2)
if SMALL:
    from esr_analysis.mechanisms.demo import write_demo_run
    from esr_analysis.models.tiny import TINY_HIDDEN, load_tiny
    from esr_analysis.sae.random_sae import random_sae

    model = load_tiny("llama")
    sae = random_sae(TINY_HIDDEN, 96, 1)
    LAYER = 1
    RUN = str(write_demo_run(tempfile.mkdtemp() + "/demo", model.tokenizer, model_name="tiny-llama", latent=4,
                             layer=LAYER, strength=2.5, sae_source="random:96:1"))
    labels = {9: "self-correction, apologies", 11: "cooking"}
    detectors = [1, 2, 3]
else:
    from esr_analysis.models.loading import load_model, load_remote_model
    from esr_analysis.models.registry import get_spec
    from esr_analysis.sae.labels import labels_for
    from esr_analysis.sae.loading import load_sae

    spec = get_spec(MODEL)
    model = load_remote_model(MODEL) if REMOTE else load_model(MODEL)
    sae = load_sae(spec.sae_source)
    LAYER = spec.read_layer
    labels = labels_for(spec.sae_source)
    detectors = read_latent_list(DETECTORS)
recoveries, baseline = episodes_from_runs([RUN])
print(f"{len(recoveries)} recoveries, {len(baseline)} baseline episodes from {os.path.basename(RUN)}")

# %% [markdown]
# A recovery as the judge saw it (attempts and scores):

# %%
from esr_analysis.experiments.transcripts import pick_transcripts, transcripts_text
from esr_analysis.store.read import load_run

print(transcripts_text(pick_transcripts(load_run(RUN), n=1, kinds=["esr"]), max_chars=500))

# %% [markdown]
# ## Annotate, find backtracking latents, trace (steering on and off), align and test

# %%
from esr_analysis.mechanisms.study import run_anatomy

res = run_anatomy(model, sae, recoveries, baseline, layer=LAYER, detectors=detectors, user_latents=USER_LATENTS,
                  labels=labels, n_label=8, n_corr=4 if SMALL else 8, window=WINDOW, remote=REMOTE)
s = res.summary
print(f"{s['n_episodes']} episodes with valid boundaries ({s['n_unclear']} unclear), {s['n_baseline']} baseline")
for name, lats in s["groups"].items():
    print(f"  {name:20s} {lats}")
e, b = res.recoveries[0], res.boundaries[0]
print(f"\noff-topic : {e.response[b.off_topic:b.correction]!r}\ncorrection: {e.response[b.correction:b.on_topic]!r}"
      f"\non-topic  : {e.response[b.on_topic:]!r}")

# %% [markdown]
# ## One episode, token by token (Fig. 6 style; regions from its own boundaries)

# %%
from esr_analysis.mechanisms.plots import plot_trace

groups = list(s["groups"])
for key in ("steering_on", "steering_off"):
    plot_trace(res.traces[key][0], groups, alpha=0.5)

# %% [markdown]
# ## All episodes aligned at the correction token (Figs. A.15–A.16 style: mean ± SEM, n per offset)

# %%
from esr_analysis.mechanisms.plots import plot_aligned

for key in ("steering_off", "steering_on"):
    plot_aligned(res.aligned[key], title=f"{MODEL if not SMALL else 'tiny-llama'} · {key.replace('_', ' ')}")

# %% [markdown]
# ## Region means and paired tests (Wilcoxon signed-rank on arrays paired by episode or by latent)

# %%
for key in ("steering_off", "steering_on"):
    print(f"== {key}")
    for g in groups:
        m, t = s["region_means"][key][g], s["tests"][key][g]
        fmt = lambda v: "  n/a " if v is None else f"{v:6.3f}"  # noqa: E731
        p = t["before_gt_after"]["p"]
        print(f"  {g:20s} before {fmt(m['before'])} during {fmt(m['during'])} after {fmt(m['after'])} "
              f"baseline {fmt(m['baseline'])} | before>after p={'n/a' if p is None else f'{p:.3g}'} "
              f"(n={t['before_gt_after']['n']})")
