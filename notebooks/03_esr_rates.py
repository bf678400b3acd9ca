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
# # 03 · ESR rates at the threshold (exp 1) and the no-steering baseline (exp 8)
#
# The paper's main result (its Fig. 2): steer each distractor latent at its own *threshold* — the strength at
# which the judge's first-attempt score falls to 30 — and count how often the model starts over (multi-attempt)
# and how often the last attempt then scores higher than the first (an ESR episode). Exp 8 runs the same
# latents, prompts and seeds without steering, so any multi-attempt trial there is a false alarm of the
# model-plus-judge system. The pipeline is `select latents → calibrate thresholds (probabilistic bisection) →
# exp 1 + exp 8` (`docs/method.md#experiments`); metrics carry Wilson (rates) or Student-t (means) intervals and
# a latent-clustered bootstrap interval, since each latent contributes several trials.
#
# **Parameters**: `SMALL` (env `ESR_SMALL=1`: two latents, two prompts each, 16 tokens; a smoke run) and `REMOTE`
# (env `ESR_REMOTE=1`: the paper's Llama-3.3-70B preset on NDIF). The committed outputs are the full
# `embedded-demo` setting (6 latents × 3 prompts, 64 new tokens, temperature 0.6) made by `make notebooks`.

# %% tags=["parameters"]
import os

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
REMOTE = os.environ.get("ESR_REMOTE", "0") == "1"  # Llama-3.3-70B on NDIF (needs NDIF_API_KEY)

# %% [markdown]
# > **Read this before any number below: what the offline judge can and cannot measure.**
# > Every score in this notebook comes from the *offline* judge (`judge="offline"`), not from the paper's judge
# > (Claude Haiku 4.5); `docs/judging.md` describes it. The committed outputs were graded by `offline-judge-v5`
# > (restart v6), the default since 2026-12-05.
# >
# > * **Attempts.** A new attempt starts only at a *strong* restart phrase that begins a sentence ("wait, that's
# >   not right", "let me try again", "sorry, I got off track", "back to your question", ...; restart v6). The
# >   same words in ordinary use ("Wait until it boils", "I apologize for the short notice", "Actually, ...")
# >   cut only where the text before them is off-topic and the text after them on-topic.
# > * **Scores.** Each attempt scores `100 × P(on-topic)` from a logistic calibration on MiniLM features: the
# >   similarity to the prompt (also with the prompt's own words removed, since drift often restates the prompt
# >   and then leaves it), the share of words far from the prompt, the similarity to the steered latent's label
# >   (negative weight) and repetition. Degenerate text (the paper's ≥ 5 identical words in a row, heavy n-gram
# >   repetition, runs of symbols or code fences, highly compressible text, repeatedly doubled words such as
# >   "be be processed"; `esr_analysis.metrics.fluency`) is capped at 5.
# >
# > So it measures **topical relevance**, not whether the answer is correct or useful. Its measured quality
# > (attempt-count accuracy, false splits on ordinary restart-like words, on/off-topic AUC, the mean score of
# > degenerate text) on a held-out split written and labelled before it was evaluated is in `docs/judging.md`;
# > its known limits: acknowledgements outside its phrase list ("Okay, that was not helpful") cut only on a
# > clear topic shift, so some restarts are missed, and it cannot tell a correct answer from a wrong one on the
# > same topic. **Multi-attempt and ESR counts here count the restart phrases the judge recognises**, not recoveries
# > a reader has confirmed: check the transcripts.
# >
# > The threshold search scores only fluent samples and drops a latent whose search never found fluent
# > off-topic text (`search.fluency_gate`, `search.require_fluent_window`; `docs/method.md#calibration`).
# > For numbers comparable to the paper, run with `judge="claude"` (needs `ANTHROPIC_API_KEY`).

# %%
import tempfile

from esr_analysis.experiments.notebook import notebook_session
from esr_analysis.experiments.pipeline import run_pipeline
from esr_analysis.experiments.report import report

session = notebook_session(SMALL, remote=REMOTE, overrides={"experiments": ["exp1", "exp8"]}, progress=False)
# A fresh run directory each time: generations, grades and thresholds are cached by content, so a re-run
# regenerates nothing, and a changed judge can never mix with trials graded by the old one.
result = run_pipeline(session.config, session=session, run_dir=tempfile.mkdtemp(prefix="esr-nb03-"))
print("model:", session.model_id.get("name"), "| SAE:", session.sae_source, "| judge:", session.config.judge)

# %% [markdown]
# ## The latents and their thresholds
# Each latent's threshold in SAE units and relative to the median residual norm at the steering layer (the added
# vector's norm divided by that median). A relative strength near or above 1 means the steering vector is as
# long as the residual stream itself: expect broken text rather than fluent drift.

# %%
import pandas as pd

from esr_analysis.store.read import load_run

exp1 = load_run(result.run_dir / "exp1")
exp8 = load_run(result.run_dir / "exp8")


def relative_strength(interventions):
    vals = [iv.get("strength_relative") for iv in interventions or [] if iv.get("strength_relative") is not None]
    return vals[0] if vals else float("nan")


exp1["relative"] = exp1["interventions"].map(relative_strength)
pd.DataFrame([{"latent": lat, "label": exp1.loc[exp1.latent == lat, "latent_label"].iloc[0],
               "threshold (SAE units)": thr,
               "x median residual norm": round(exp1.loc[exp1.latent == lat, "relative"].median(), 2)}
              for lat, thr in result.thresholds.items()])

# %% [markdown]
# ## The metrics table
# `value` is the estimate, `n` its denominator (valid trials; multi-attempt trials for the improvement rate),
# then the 95 % interval treating trials as independent (Wilson / Student-t) and the 95 % latent-clustered
# bootstrap interval. `degraded_rate` is the share of responses with a word repeated 5+ times in a row (the
# paper's definition); the line under each table counts *degenerate* responses, the broader fluency rule under
# which the judge caps an attempt at 5.

# %%
print(report(result.run_dir))

# %% [markdown]
# ## Next to the paper
# Our exp 1 estimates beside the paper's Llama-3.3-70B numbers (n = 4,877 trials) and the bound it gives for the
# four smaller models; the paper's intervals are Wilson intervals reconstructed from its rounded rates and n
# (it published Wald intervals). The embedded model is a 0.5B coder model scored by the offline judge: the
# comparison shows the scale of each number, not a replication.

# %%
from esr_analysis.metrics import summarize
from esr_analysis.metrics.paper import side_by_side

metrics = ["first_attempt_score", "multi_attempt_rate", "esr_rate"]
ours1 = summarize(exp1, metrics=metrics, n_boot=1000)
ours8 = summarize(exp8, metrics=metrics, n_boot=1000)
pd.concat([side_by_side(ours1, "exp1", label="embedded"), side_by_side(ours8, "exp8", label="embedded")],
          keys=["exp 1 (steered)", "exp 8 (no steering)"])

# %% [markdown]
# ## Fig. 2, embedded model
# Left: the distribution of the score change `s_k − s_1` over multi-attempt trials (right of the red line = the
# last attempt scored higher; "NN % improved" is the improvement rate). Right: the multi-attempt rate and the
# ESR rate with Wilson bars and the latent-bootstrap whisker. With a handful of trials the histograms hold a few
# points at most; an empty panel means no multi-attempt trial.

# %%
from esr_analysis.plotting import fig2_esr

fig = fig2_esr({"Steered (exp 1)": exp1, "No steering (exp 8)": exp8})

# %% [markdown]
# ## Transcripts at the threshold
# Steered trials chosen without looking at their content: ESR episodes first, then other multi-attempt trials,
# then single-attempt trials at the lowest, middle and highest first-attempt score. Check whether the text at
# the threshold is fluent off-topic drift or degenerate, and whether the score matches what you read.

# %%
from esr_analysis.experiments.transcripts import pick_transcripts, transcripts_text

print(transcripts_text(pick_transcripts(exp1, n=2 if SMALL else 5), max_chars=500))

# %% [markdown]
# ## Transcripts without steering
# Any multi-attempt trial of exp 8 is a false split: the model was not steered, so the "restart" is ordinary
# wording that the judge cut. The paper found none in 13,118 unsteered trials. A low score here is the judge's
# reading too: an unsteered answer that stays on the prompt's subject but wanders into odd details (parchment
# paper for boiling an egg) has many words far from the prompt and can score well below 90.

# %%
print(transcripts_text(pick_transcripts(exp8, n=1 if SMALL else 3, kinds=["multi_attempt", "esr", "spread"]),
                       max_chars=400))

# %% [markdown]
# ## Reading the result
# * The ESR rate is an estimate over few latents: read its latent-bootstrap interval, not the point value.
# * A non-zero multi-attempt rate in exp 8 is a judge artefact (see the note at the top), and it sets the floor
#   below which exp 1's rates say nothing about recovery.
# * If the degraded share is high at the threshold, the calibration target of 30 was reached by breaking the
#   text: such a run measures the judge, not ESR. The fluency gate of the search guards against this (a step
#   with only degenerate output scores 0, and latents without a fluent off-topic window are dropped, as the
#   first output cell reports), but responses at the threshold can still be degenerate.
