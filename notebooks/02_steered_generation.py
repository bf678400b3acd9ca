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
# # 02 · Steered generation: what a boost does to the text, and what the judge makes of it
#
# Steering adds `boost × d_i` (row *i* of the SAE decoder, in raw SAE units) to the residual stream at the
# steering layer, at every prompt position and every decode step (`docs/method.md#steering`). This notebook
# takes one labelled latent of the shipped SAE, generates answers to two evaluation prompts at a ladder of
# boosts with the same sampling seed, and grades every answer. It answers two questions a reader should settle
# before looking at any rate: *at what strength does the text leave the topic*, and *does the judge's score
# follow what a human reader sees*.
#
# **Parameters** (next cell): `SMALL` (env `ESR_SMALL=1`: two boosts, one prompt, 16 tokens; a smoke run whose
# numbers mean little) and `REMOTE` (env `ESR_REMOTE=1`: the paper's Llama-3.3-70B preset traced on NDIF, which
# needs `NDIF_API_KEY`, Hub access and the preset's judge key). The committed outputs are the full setting on
# the embedded model (Qwen2.5-Coder-0.5B-Instruct, our 8,192-latent SAE at block 12), made by `make notebooks`.

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
# > For numbers comparable to the paper, run with `judge="claude"` (needs `ANTHROPIC_API_KEY`).

# %%
from esr_analysis.experiments.notebook import notebook_session

session = notebook_session(SMALL, remote=REMOTE, progress=False)
print("model:", session.model_id.get("name"), "| SAE:", session.sae_source, "| steer layer:", session.steer_layer,
      "| judge:", session.config.judge, "| temperature:", session.config.temperature,
      "| new tokens:", session.config.max_new_tokens)

# %% [markdown]
# ## The latent and the boost ladder
# Latent 115 of the shipped SAE is labelled with money words (`describe_latent(115)` in notebook 01 shows its
# top contexts); remotely, 7580 is the paper's Fig. 1 latent on Llama-3.3-70B. Boosts are in SAE units. On the
# shipped SAE a decoder row has norm about 0.5 and the block-12 residual a median norm of about 20, so 40 units
# add roughly one median residual norm; each row below also prints the strength *relative* to that norm, which
# compares across SAEs and models (`docs/method.md#units`).

# %%
latent = 7580 if REMOTE else 115
if REMOTE:
    boosts = [0.0, 5.0, 10.0, 15.0]
else:
    boosts = [0.0, 40.0] if SMALL else [0.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0]
prompts = session.prompts[:1] if SMALL else session.prompts[:2]
print(f"latent {latent}: {session.label(latent)!r}")
rows = [(p, b) for p in prompts for b in boosts]
gens = session.generate([p for p, _ in rows], [[session.steer(latent, b)] if b else [] for _, b in rows],
                        seeds=[0] * len(rows), settings=session.settings())
grades = session.grade([p for p, _ in rows], [g.text for g in gens], [session.label(latent)] * len(rows))

# %% [markdown]
# ## Score against strength
# One point per (prompt, boost): the judge's first-attempt score against the strength relative to the median
# residual norm. A hollow marker is a *degraded* response (a word repeated five or more times in a row, the
# paper's definition). Read it as: where the curve falls is where the judge stops seeing an answer to the
# prompt; whether the text there is *off-topic but fluent* (what ESR needs) or simply *broken* is only visible
# in the transcripts further down.

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from esr_analysis.metrics import is_degraded


def relative(g):
    adds = [iv.strength_relative for iv in g.interventions if iv.strength_relative is not None]
    return adds[0] if adds else 0.0


table = pd.DataFrame([{"prompt": p[:48], "boost (SAE units)": b, "x median residual norm": round(relative(g), 2),
                       "attempts": len(gr.scores), "first score": gr.scores[0] if gr.scores else None,
                       "degraded": is_degraded(g.text), "characters": len(g.text)}
                      for (p, b), g, gr in zip(rows, gens, grades, strict=True)])
fig, ax = plt.subplots(figsize=(7, 3.6))
for i, (p, part) in enumerate(table.groupby("prompt", sort=False)):
    colour = f"C{i}"
    ax.plot(part["x median residual norm"], part["first score"], "-", color=colour, alpha=0.6, label=p + "…")
    for _, r in part.iterrows():
        ax.plot(r["x median residual norm"], r["first score"], "o", color=colour,
                markerfacecolor="white" if r["degraded"] else colour, markersize=7)
ax.axhline(30, color="grey", ls="--", lw=1)
ax.text(ax.get_xlim()[1], 31, "calibration target 30", ha="right", va="bottom", fontsize=8, color="grey")
ax.set_xlabel("steering strength (x median residual norm at the steering layer)")
ax.set_ylabel("first-attempt score (offline judge)")
ax.set_ylim(-3, 103)
ax.set_title(f"latent {latent} ({session.label(latent)}): hollow = degraded")
ax.legend(fontsize=7, loc="lower left")
plt.tight_layout()
plt.show()
display(table)

# %% [markdown]
# ## Transcripts
# Every response of the first prompt, boost by boost, with the judge's attempts and scores. The seed is the same
# at every boost, so differences come from the steering alone. Look for the boost where the answer turns to the
# latent's topic while still being readable text — that window, if it exists, is where a recovery could happen.

# %%
from esr_analysis.experiments.transcripts import format_transcript

for (p, b), g, gr in zip(rows, gens, grades, strict=True):
    if p != prompts[0]:
        continue
    print(format_transcript({"condition": "steered" if b else "no steering", "latent": latent,
                             "latent_label": session.label(latent), "boost": b or None, "seed": g.seed,
                             "prompt": p, "response": g.text, "grade": gr.model_dump(),
                             "interventions": [iv.model_dump() for iv in g.interventions]}, max_chars=500))

# %% [markdown]
# ## What this shows, and what it does not
# * The strength at which the score crosses 30 is what the pipeline's calibration (notebook 03) searches for,
#   per latent. Compare it with the strength at which responses become degraded in the table above: if the
#   score reaches 30 only where the text is already broken, the "threshold" measures breakage, not drift, and no
#   response calibrated there can recover. Issue 10 found exactly this for the old embedded presets
#   (thresholds at 0.75–2.1× the median residual norm); the calibration now scores only fluent samples and drops
#   latents with no fluent off-topic window (`search.fluency_gate`, notebook 03).
# * One seed and two prompts per boost: the curve is an illustration, not an estimate. Notebooks 03–05 give
#   rates with intervals over latents, prompts and seeds.
