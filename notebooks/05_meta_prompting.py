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
# # 05 · Meta-prompting (exp 5): does asking the model to watch itself raise ESR? (Fig. 4)
#
# The paper's strongest manipulation: append an instruction to the user turn — for the headline variant,
# to notice when the answer wanders off-topic and steer back — while steering exactly as in exp 1. On
# Llama-3.3-70B it raised the multi-attempt rate from 7.4 % to 31.7 % (4.3×) and the ESR rate from 3.8 % to
# 14.8 % (3.8×). Unlike the authors, who compared with pooled exp 1 files, our baseline is **matched**: the same
# latents, prompts, seeds and strengths without the suffix, so the comparison is paired
# (`docs/method.md#experiments`). The variants are in `esr_analysis.experiments.metaprompt.META_VARIANTS`.
#
# **Parameters**: `SMALL` (env `ESR_SMALL=1`: one variant, two latents, 16 tokens) and `REMOTE` (env
# `ESR_REMOTE=1`: Llama-3.3-70B on NDIF). The committed outputs are the `embedded-demo` setting (6 latents × 3
# prompts, 64 new tokens) with two variants (`self_monitor`, the paper's headline, and `ignore_latent_label`),
# made by `make notebooks`.

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

from esr_analysis.experiments.metaprompt import META_VARIANTS
from esr_analysis.experiments.notebook import notebook_session
from esr_analysis.experiments.pipeline import run_pipeline
from esr_analysis.experiments.report import report

variants = ["self_monitor"] if SMALL else ["self_monitor", "ignore_latent_label"]
for v in variants:
    print(f"{v}: {META_VARIANTS[v]!r}")
session = notebook_session(SMALL, remote=REMOTE, overrides={"experiments": ["exp5"], "meta_variants": variants},
                           progress=False)
result = run_pipeline(session.config, session=session, run_dir=tempfile.mkdtemp(prefix="esr-nb05-"))
print("model:", session.model_id.get("name"), "| SAE:", session.sae_source, "| judge:", session.config.judge)

# %% [markdown]
# ## The metrics table
# One block per condition: `baseline` (no suffix) and each variant, all steered at the latents' thresholds.

# %%
print(report(result.run_dir, n_boot=500))

# %% [markdown]
# ## Fig. 4, embedded model
# Mean first-attempt score, multi-attempt rate and ESR rate for the matched baseline (hatched) and each variant
# (solid), with 95 % intervals. A variant that *raises the first-attempt score* made the model resist the push
# from the start, one that lowers it made the answer drift further (the judge scores a variant against the
# augmented prompt, so read the transcripts before crediting or blaming the suffix); one that raises the multi-attempt rate made it restart more often (or, with the offline judge,
# made it write more of the phrases the judge cuts at, such as "I'm drifting off topic" or "let me get back to
# the question", which the instruction's own wording invites).

# %%
from esr_analysis.plotting import fig4_meta

fig = fig4_meta(result.run_dir / "exp5")

# %% [markdown]
# ## Next to the paper, and the paired ratio
# Our matched baseline and `self_monitor` beside the paper's numbers for Llama-3.3-70B, then the ratio
# variant / baseline with a paired latent-bootstrap interval (the paper's factors: 4.3× multi-attempt, 3.8× ESR).
# A ratio is undefined (NaN) when the baseline rate is 0.

# %%
import pandas as pd
from IPython.display import display

from esr_analysis.metrics import ratio, summarize
from esr_analysis.metrics.paper import side_by_side
from esr_analysis.store.read import load_run

df = load_run(result.run_dir / "exp5")
metrics = ["first_attempt_score", "multi_attempt_rate", "esr_rate"]
base = df[df.condition == "baseline"]
tables = {c: side_by_side(summarize(df[df.condition == c], metrics=metrics, n_boot=500), "exp5",
                          paper_condition=c, label="embedded") for c in ["baseline", "self_monitor"]}
display(pd.concat(tables, names=["condition"]))
rows = []
for v in variants:
    for m in ["multi_attempt_rate", "esr_rate"]:
        r = ratio(base, df[df.condition == v], m, n_boot=1000)
        rows.append({"variant": v, "metric": m, "baseline": f"{100 * r.baseline:.1f} %",
                     "variant value": f"{100 * r.treated:.1f} %", "ratio": f"{r.value:.2f}",
                     "paired latent-boot 95% CI": f"[{r.boot_low:.2f}, {r.boot_high:.2f}]",
                     "n (baseline / variant)": f"{r.n_baseline} / {r.n_treated}"})
pd.DataFrame(rows)

# %% [markdown]
# ## Transcripts: the same trial with and without the instruction
# One latent on one prompt with the same seed and strength, first without and then with each suffix. The judge
# sees the augmented prompt in the variants, as in the paper.

# %%
from esr_analysis.experiments.transcripts import pick_transcripts, transcripts_text

shown = pick_transcripts(df, n=1, condition=variants[0], kinds=["esr", "multi_attempt", "spread"]).iloc[0]
same = df[(df.latent == shown.latent) & (df.seed == shown.seed)]
order = {c: i for i, c in enumerate(["baseline", *variants])}
print(transcripts_text(same.sort_values("condition", key=lambda s: s.map(order)), max_chars=450))

# %% [markdown]
# ## Reading the result
# * Because the instruction itself talks about drifting and steering back, a model may echo restart phrases
#   without recovering anything; the offline judge counts a strong phrase at a sentence start as a restart
#   whatever follows it. Check the transcripts before reading a higher multi-attempt rate as self-correction.
# * The ratio's interval is paired over latents (a latent drawn in a bootstrap replicate brings its baseline and
#   variant trials together), which is the right comparison for matched arms.
