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
# Two things make this study honest, and both are in the code rather than in the reader's care: the correction
# boundaries are placed from the text alone (never from the activations being measured), and the latents found
# *by correlation with the correction* are chosen on one half of the episodes and measured on the other, since
# measuring them on the episodes that picked them would find what they were picked for. Everything here is
# correlational: the causal checks are notebook 07 (ablating the detectors) and notebook 09 (patching components).
#
# **Parameters** (next cell): `SMALL` (env `ESR_SMALL=1`: a tiny random model and a *scripted* run of six
# recoveries, a smoke run whose numbers mean nothing) and `REMOTE` (env `ESR_REMOTE=1`: trace on NDIF). The full
# setting reads the organism's three exp 1 runs (the evaluation on the ESR and the held-out prompts, and the
# episode harvest, `docs/mechanisms.md#episodes`) and repeats `scripts/anatomy_study.py` with its defaults, so
# its numbers can be checked against the committed `data/results/anatomy_<model>.json` at the end.

# %% tags=["parameters"]
import os

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
REMOTE = os.environ.get("ESR_REMOTE", "0") == "1"  # trace on NDIF (needs NDIF_API_KEY)
MODEL = "qwen2.5-coder-0.5b-instruct-sc70v3"  # models.organisms.DEFAULT_ORGANISM
from esr_analysis.paths import DATA_DIR

ROOT = DATA_DIR.parent
RUNS = [str(ROOT / r) for r in (f"runs/organism-eval-v3/{MODEL}/organism/exp1",  # `make organism-eval`
                                 f"runs/organism-eval-v3/{MODEL}/organism_heldout/exp1",
                                 f"runs/organism-episodes/{MODEL}/exp1")]  # scripts/organism_episodes.py
DETECTORS = os.environ.get("ESR_DETECTORS", str(DATA_DIR / "detectors" / f"{MODEL}-ranked26.json"))
USER_LATENTS: list[int] = []
WINDOW = 12 if SMALL else 150
N_LABEL, N_CORR = (8, 4) if SMALL else (16, 16)
CORR_HOLDOUT = 0.5  # share of episodes that test the correlation-found latents (never used to find them)

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
    RUNS = [str(write_demo_run(tempfile.mkdtemp() + "/demo", model.tokenizer, model_name="tiny-llama", latent=4,
                               layer=LAYER, strength=2.5, sae_source="random:96:1"))]
    labels = {9: "self-correction, apologies", 11: "cooking"}
    detectors = [1, 2, 3]
else:
    from esr_analysis.models.loading import load_model, load_remote_model
    from esr_analysis.models.registry import get_spec
    from esr_analysis.sae.labels import labels_for
    from esr_analysis.sae.loading import load_sae

    missing = [r for r in RUNS if not os.path.isdir(r)]
    if missing:
        raise FileNotFoundError(f"missing runs {missing}: make them with the commands in docs/mechanisms.md#episodes")
    spec = get_spec(MODEL)
    model = load_remote_model(MODEL) if REMOTE else load_model(MODEL)
    sae = load_sae(spec.sae_source)
    LAYER = spec.read_layer
    labels = labels_for(spec.sae_source)
    detectors = read_latent_list(DETECTORS)
recoveries, baseline = episodes_from_runs(RUNS)
print(f"{len(recoveries)} recoveries, {len(baseline)} baseline episodes from {len(RUNS)} run(s); "
      f"{len(detectors)} detectors")

# %% [markdown]
# A recovery as the judge saw it (attempts and scores):

# %%
from esr_analysis.experiments.transcripts import pick_transcripts, transcripts_text
from esr_analysis.store.read import load_run

print(transcripts_text(pick_transcripts(load_run(RUNS[0]), n=1, kinds=["esr"]), max_chars=500))

# %% [markdown]
# The transcript is the first ESR episode of the evaluation run, picked by rule rather than for looks. Many of
# the organism's recoveries are this rough: it notices the drift ("WAIT! THAT WAS OFF-topic") more reliably than
# it returns to a good answer, which is why its ESR rate (last attempt higher) is about half its multi-attempt
# rate (`docs/organism.md`).
#
# ## Annotate, find backtracking latents, trace (steering on and off), align and test

# %%
from esr_analysis.mechanisms.study import run_anatomy

res = run_anatomy(model, sae, recoveries, baseline, layer=LAYER, detectors=detectors, user_latents=USER_LATENTS,
                  labels=labels, n_label=N_LABEL, n_corr=N_CORR, window=WINDOW, remote=REMOTE,
                  corr_holdout=CORR_HOLDOUT)
s = res.summary
sel = s["backtracking_corr_selection"]
print(f"{s['n_episodes']} episodes with valid boundaries ({s['n_unclear']} unclear), {s['n_baseline']} baseline; "
      f"correlation latents chosen on {sel['n_select']} episodes, measured on the other {sel['n_test']}")
for name, lats in s["groups"].items():
    print(f"  {name:20s} {lats}")
e, b = res.recoveries[0], res.boundaries[0]
print(f"\noff-topic : {e.response[b.off_topic:b.correction]!r}\ncorrection: {e.response[b.correction:b.on_topic]!r}"
      f"\non-topic  : {e.response[b.on_topic:]!r}")

# %% [markdown]
# The offline annotator places the boundaries from the judge's attempt split and restart phrases only. In the
# first episode the answer already opens with a restart phrase and the annotator takes the *second* one as the
# correction: the boundaries are a text-level reading, and a few are debatable (4 of 54 were unclear and are
# left out).
#
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

# %% [markdown]
# **What this shows** (full setting; the numbers are in the table above and in
# `data/results/anatomy_<model>.json`, p-values uncorrected):
#
# * The 26 ranked **off-topic detectors** are more active in the drifted stretch than in plain on-topic answers
#   and fall as the correction starts (steering off: before 0.080, during 0.061, baseline answers 0.054). They
#   were found on held-out discovery prompts, so this is an out-of-sample sign that they track drift. With the
#   steering on the pattern holds more weakly.
# * The three latents labelled "wrong / incorrect" are higher before the correction than after it in both
#   replays (p ≈ 0.002–0.005): a "something is wrong" signal that precedes the restart.
# * The latents found by correlation peak at the correction on the 25 episodes that did not choose them
#   (0.93 during vs 0.32 before): the effect replicates out of sample, though it names what fires on
#   acknowledgement tokens rather than a cause.
# * None of this is causal. Notebook 09 patches components, and ablating the detectors moves the restart logit
#   difference only as much as the most effective matched random sets (`docs/mechanisms.md`).
#
# ## The same numbers as the committed study
#
# The full setting above is `scripts/anatomy_study.py` with its defaults on the same runs, so its summary should
# equal the committed `data/results/anatomy_<model>.json` (which `docs/mechanisms.md` quotes) up to float noise.

# %%
import json
import math

if SMALL:
    print("SMALL: a smoke run on a scripted tiny run; there is no committed result to compare with")
else:
    committed = json.loads((DATA_DIR / "results" / f"anatomy_{MODEL}.json").read_text())
    for key in ("n_episodes", "n_baseline", "n_unclear"):
        print(f"{key:11s} notebook {s[key]:4d}   committed {committed[key]:4d}")
    gaps = [abs(s["region_means"][c][g][r] - committed["region_means"][c][g][r])
            for c in ("steering_off", "steering_on") for g in groups if g in committed["region_means"][c]
            for r in ("before", "during", "after", "baseline")
            if s["region_means"][c][g][r] is not None and committed["region_means"][c][g][r] is not None]
    print(f"largest difference over {len(gaps)} region means: {max(gaps) if gaps else math.nan:.2e}")
