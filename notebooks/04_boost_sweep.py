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
# # 04 · The boost sweep (exp 2): how the rates change with steering strength (Fig. 3)
#
# ESR needs a window: strong enough to push the answer off-topic, weak enough for the model to notice and come
# back. Exp 2 steers every latent at a ladder of strengths on the same prompts and seeds and redraws the paper's
# Fig. 3. Two ladders (`docs/method.md#experiments`):
#
# * **σ levels** (the authors' definition): evenly spaced over μ ± 3σ of the run's thresholds, clamped at 0 — the
#   *same absolute* strengths for every latent, plotted in σ units from the mean threshold;
# * **multiples** of each latent's own threshold (0.5×, 1×, 1.5×, 2×): the same *relative* push for every latent.
#
# **Parameters**: `SMALL` (env `ESR_SMALL=1`: two latents, four σ levels, three multiples, 16 tokens) and `REMOTE`
# (env `ESR_REMOTE=1`: Llama-3.3-70B on NDIF). The committed outputs are the `embedded-demo` setting (6 latents ×
# 3 prompts, 64 new tokens) with 5 σ levels and 4 multiples, made by `make notebooks`.

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

overrides = {"experiments": ["exp2"]}
if not SMALL:
    overrides.update({"boost.n_levels": 5, "boost.multiples": [0.5, 1.0, 1.5, 2.0]})
session = notebook_session(SMALL, remote=REMOTE, overrides=overrides, progress=False)
result = run_pipeline(session.config, session=session, run_dir=tempfile.mkdtemp(prefix="esr-nb04-"))
print("model:", session.model_id.get("name"), "| SAE:", session.sae_source, "| judge:", session.config.judge)
print("thresholds (SAE units):", result.thresholds)

# %% [markdown]
# ## The metrics table, level by level
# Conditions `sigma:<z>` are the σ levels (z = (level − μ)/σ; clamped levels merge into one level at strength 0)
# and `multiple:<m>` the multiples of each latent's threshold. Each row has its `n` and both 95 % intervals.

# %%
print(report(result.run_dir, n_boot=500))

# %% [markdown]
# ## Fig. 3, σ levels
# Multi-attempt rate, improvement rate (among multi-attempt trials) and ESR rate against the boost level in σ
# units from the mean threshold, with 95 % Wilson bands; nothing is smoothed (the authors smoothed their error
# bars). The paper's Llama-3.3-70B peaks: multi-attempt 2.7 % and ESR 1.0 % at −0.3σ, improvement rate 83 % at
# −1σ, with 500 trials per level.

# %%
from esr_analysis.plotting import fig3_boost

fig = fig3_boost(result.run_dir / "exp2", mode="sigma")

# %% [markdown]
# ## The same against multiples of each latent's threshold
# At 1× every latent sits at its own threshold (exp 1's condition). If rates rise only at 1.5–2×, where the text
# is also most often degraded (next figure), they count the judge's reaction to broken text.

# %%
fig = fig3_boost(result.run_dir / "exp2", mode="multiple")

# %% [markdown]
# ## First-attempt score and degraded share against the multiple
# The calibration assumes the first-attempt score falls smoothly through 30 at 1×; the degraded share shows
# whether it falls because the answer drifts or because the text breaks. Bars are 95 % Wilson / Student-t
# intervals.

# %%
import matplotlib.pyplot as plt
import pandas as pd

from esr_analysis.metrics import summarize
from esr_analysis.store.read import load_run

df = load_run(result.run_dir / "exp2")
mult = df[df["condition"].str.startswith("multiple:")]
tab = summarize(mult, by="condition", metrics=["first_attempt_score", "degraded_rate"], n_boot=200)
tab["m"] = tab["condition"].str.split(":").str[1].astype(float)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for ax, metric, scale, ylabel in [(axes[0], "first_attempt_score", 1, "first-attempt score"),
                                  (axes[1], "degraded_rate", 100, "degraded responses (%)")]:
    t = tab[tab.metric == metric].sort_values("m")
    ax.errorbar(t.m, scale * t.value, yerr=[scale * (t.value - t.ci_low), scale * (t.ci_high - t.value)],
                fmt="o-", capsize=3)
    ax.set_xlabel("multiple of each latent's threshold")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-3, 103)
axes[0].axhline(30, color="grey", ls="--", lw=1)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Next to the paper: the peaks
# Our highest value over the σ levels (and where it lies) beside the paper's Llama-3.3-70B peak. With a few
# trials per level the location of our peak is mostly noise; compare the scale.

# %%
from esr_analysis.metrics.paper import paper_table

sig = summarize(df[df["condition"].str.startswith("sigma:")], by="condition",
                metrics=["multi_attempt_rate", "improvement_rate", "esr_rate"], n_boot=200)
peaks = []
for p in paper_table("exp2").itertuples():
    t = sig[(sig.metric == p.metric) & (sig.n > 0)]
    best = t.loc[t.value.idxmax()] if len(t) and t.value.notna().any() else None
    peaks.append({"metric": p.metric,
                  "embedded peak": "-" if best is None else f"{100 * best.value:.1f} % (n {int(best.n)})",
                  "at": "-" if best is None else best.condition.replace("sigma:", "") + " σ",
                  "paper peak (Llama-3.3-70B)": f"{100 * p.value:.1f} %", "paper n": p.n or "-", "paper at": p.note})
pd.DataFrame(peaks)

# %% [markdown]
# ## Transcripts along the ladder
# One latent on one prompt, same seed, at every multiple of its threshold: the text as the push grows.

# %%
from esr_analysis.experiments.transcripts import transcripts_text

first = mult.sort_values("trial_id").iloc[0]
ladder = mult[(mult.latent == first.latent) & (mult.prompt == first.prompt)].copy()
ladder["m"] = ladder["condition"].str.split(":").str[1].astype(float)
print(transcripts_text(ladder.sort_values("m"), max_chars=400))

# %% [markdown]
# ## Reading the result
# * On the embedded model the interesting quantity is the *shape*: whether multi-attempt or ESR rates rise
#   anywhere below the strength where text degrades. Rates that appear only together with degraded output are
#   judge artefacts (see the note at the top).
# * The σ ladder uses the same absolute strengths for all latents, so at a given level some latents are far
#   above their own threshold and others below it; the multiple ladder removes that spread.
