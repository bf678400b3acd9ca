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
# # 07 · Off-topic detector latents (exp 3) against a matched random null (exp 10)
#
# The paper's mechanistic claim (its Fig. 5): some SAE latents fire when the text being written does not fit the
# question ("off-topic detectors"), and clamping them to zero while steering **lowers** recovery — on
# Llama-3.3-70B the multi-attempt rate fell from 7.4 % to 5.5 % and the ESR rate from 3.8 % to 2.8 %, while
# ablating random latents did not (7.9 %, its Fig. A.14). Here, step by step (`docs/method.md#detectors`):
#
# 1. **exp 1**: steer each distractor latent at its threshold (the pipeline of notebook 03);
# 2. **discovery** on held-out prompts (never the evaluation prompts): the model's own answers; on-topic pairs
#    (prompt + its own answer) against off-topic pairs (prompt + another prompt's answer, several seeded
#    derangements); each latent max-pooled over the assistant turn **inside the trace**, keeping only per-latent
#    running statistics; three rules (zero on-topic and active on ≥ 80 % off-topic; AUC = 1.0; ranked top-k);
# 3. **exp 3**: replay a fixed seeded subset of exp 1 trials (same prompt, latent, strength and seed) with the
#    detectors clamped to zero at the steering layer (SAE error term kept);
# 4. **exp 10**: the same replay with random latent sets **matched** to the detectors on firing density and mean
#    activation (dead latents and the detectors excluded) — the authors' code drew 3 unmatched sets;
# 5. the detector effect against that null: its percentile among the random sets and a paired latent-clustered
#    bootstrap interval of the change against the baseline.
#
# **Parameters**: `SMALL` (env `ESR_SMALL=1`: two latents × two prompts, 16 tokens, 4 discovery prompts, 2 random
# sets; a smoke run whose numbers mean nothing) and `REMOTE` (env `ESR_REMOTE=1`: the paper's Llama-3.3-70B preset
# on NDIF; the discovery read and the replays are then traces sent with `remote=True`, the SAE sliced so only the
# touched latents travel). The full local setting is the organism's evaluation run (`make organism-eval`: 18
# latents × 5 prompts at 128 tokens, `docs/organism.md`) with its 26 ranked detectors
# (`data/detectors/<model>-ranked26.json`); the replays resume from that run's store, so after
# `esr detectors ablate/null` (the commands in `data/results/detectors_<model>-ranked26.json`) this notebook
# only reads them, and on a fresh run directory it computes them (about 40 min on 2 cores).

# %% tags=["parameters"]
import os

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
REMOTE = os.environ.get("ESR_REMOTE", "0") == "1"  # Llama-3.3-70B on NDIF (needs NDIF_API_KEY)
MODEL = "qwen2.5-coder-0.5b-instruct-sc70v3"  # the local full setting's model: models.organisms.DEFAULT_ORGANISM
N_TRIALS = 3 if SMALL else 16  # exp 1 trials replayed per ablated set (a fixed seeded subset)
N_SETS = 2 if SMALL else 20    # matched random sets

# %% [markdown]
# > **The model and the judge.** The embedded base model almost never restarts, so its multi-attempt rate is near
# > zero and an ablation cannot lower it: the full local setting therefore uses the self-correcting organism
# > (`MODEL`, `docs/organism.md`). Scores come from the *offline* judge: attempts are cut at explicit restart
# > phrases and scored by how well each answers the prompt (`docs/judging.md`); use `judge="claude"` for the
# > paper's grader.

# %%
import json
import tempfile
from pathlib import Path

from esr_analysis.experiments.notebook import notebook_session
from esr_analysis.experiments.pipeline import run_pipeline
from esr_analysis.mechanisms import detector_study as study
from esr_analysis.paths import DATA_DIR

if SMALL or REMOTE:
    session = notebook_session(SMALL, remote=REMOTE, progress=False, overrides={"experiments": ["exp1"]})
    run_dir = tempfile.mkdtemp(prefix="esr-nb07-")
    result = run_pipeline(session.config, session=session, run_dir=run_dir)
    latents = result.latents
else:  # the organism's evaluation run (made by `make organism-eval`)
    run_dir = str(DATA_DIR.parent / f"runs/organism-eval-v3/{MODEL}/organism")
    session = study.session_for_run(run_dir, progress=False)
    trials = (Path(run_dir) / "exp1" / "trials.jsonl").read_text().splitlines()
    latents = sorted({json.loads(t)["latent"] for t in trials if t.strip()} - {None})
print("model:", session.model_id.get("name"), "| SAE:", session.sae_source, "| read layer", session.read_layer,
      "| steer layer", session.steer_layer, "| exp 1 latents:", list(latents))

# %% [markdown]
# ## Discovery
# Every rule's selection is recorded. On the small setting the study uses `zero_on_topic` (the authors'
# discovery script) and falls back to `ranked`; on the organism the authors' rule finds a single latent (3776),
# which is almost silent in its recoveries (`docs/mechanisms.md`), so the full setting ablates the `ranked`
# top 26 (the paper's set size), read here from the committed detector file (22 discovery prompts, 128-token
# answers, 3 derangements; its `command` says how it was made). Columns: the share of off-topic / on-topic
# pairs where the latent is active, the mean pooled activation in each group, and the AUC-1.0 margin (smallest
# off-topic minus largest on-topic pooled activation; positive = perfectly separable).

# %%
import pandas as pd

if SMALL or REMOTE:
    det_file = os.path.join(run_dir, "detectors.json")
    record = study.discover_to_file(session.model, session.sae, det_file,
                                    model_name=str(session.model_id.get("name")), layer=session.read_layer,
                                    n_prompts=4 if SMALL else 20, max_new_tokens=16 if SMALL else 96,
                                    n_derangements=2 if SMALL else 3, rule="zero_on_topic",
                                    fallback_rule="ranked", top_k=5 if SMALL else 26, batch_size=8,
                                    remote=session.config.remote, progress=False,
                                    latents_per_pass=8192 if REMOTE else None)
else:
    det_file = str(DATA_DIR / "detectors" / f"{MODEL}-ranked26.json")
    record = json.loads(Path(det_file).read_text())
print({rule: v["n"] for rule, v in record["rules"].items()}, "| used:", record["rule"],
      "| pairs:", record["discovery"]["n_off_topic_pairs"], "off-topic,", record["discovery"]["n_on_topic_pairs"],
      "on-topic")
stats = record["detector_stats"]
pd.DataFrame([{"latent": i, "label": record["labels"].get(str(i), ""),
               "active off %": stats[str(i)]["nonzero_shuffled_pct"], "active on %": stats[str(i)]["nonzero_normal_pct"],
               "mean off": stats[str(i)]["shuffled_mean_activation"], "mean on": stats[str(i)]["normal_mean_activation"],
               "margin": stats[str(i)]["off_topic_min"] - stats[str(i)]["on_topic_max"]}
              for i in record["off_topic_detectors"][:10]]).round(3)

# %% [markdown]
# ## Exp 3 and exp 10: paired replays
# The same seeded subset of exp 1 trials is replayed once with the detectors ablated and once per matched random
# set. The sampler's report gives, per set, the largest `log10` gap to the detectors in density and mean
# activation (the caliper is 0.25, a factor of 1.8) and how often the caliper had to widen.

# %%
study.ablate_step(session, run_dir, det_file, n_trials=N_TRIALS, subset_seed=0)
sampler = study.null_step(session, run_dir, det_file, n_sets=N_SETS, seed=0, n_trials=N_TRIALS, subset_seed=0)
pd.DataFrame([{"set": k, "latents": s, "max log10 gap (density, mean)": [round(g, 3) for g in info["max_log10_gap"]],
               "widened": info["widened"]} for k, (s, info) in enumerate(zip(sampler["random_sets"], sampler["sets"],
                                                                               strict=True))])

# %% [markdown]
# ## The detector effect against the null (Fig. 5 style)
# Bars: the steered baseline (the replayed exp 1 trials) and the detector ablation, with Wilson intervals;
# dots: one per random set. `detector_percentile` is where the detector ablation's multi-attempt rate falls among
# the random sets (low = detectors lower recovery more than random latents); `difference_ci` is the paired
# latent-clustered bootstrap interval of ablation − baseline.

# %%
from esr_analysis.plotting import fig5_detectors

summary = study.summarize_step(run_dir, det_file, n_boot=200 if SMALL else 2000)
print({k: summary[k] for k in ("n_detectors", "n_paired", "detector_percentile", "difference", "difference_ci",
                               "esr_difference_ci")})
pd.DataFrame({k: summary[k] for k in ("baseline", "detector_ablation")}).T[
    ["n", "multi_attempt_rate", "multi_attempt_ci", "esr_rate", "esr_ci", "first_attempt_score"]]

# %%
fig = fig5_detectors(summary, title="detector ablation vs matched random ablation")

# %% [markdown]
# ## Transcripts under detector ablation
# A few replayed trials, chosen without looking at their content (ESR episodes first, then multi-attempt, then a
# spread of first-attempt scores).

# %%
from esr_analysis.experiments.transcripts import pick_transcripts, transcripts_text
from esr_analysis.store.read import load_run

print(transcripts_text(pick_transcripts(load_run(os.path.join(run_dir, "exp3")), n=2 if SMALL else 4), max_chars=500))

# %% [markdown]
# ## Reading the result
# * On the organism (full setting): the 26 ranked detectors ablated lower the multi-attempt rate of the 16
#   replayed trials from 4 to 2 (25 % → 12.5 %), as low as the lowest 3 of 20 matched random sets (percentile 7.5;
#   the random sets' median is 25 %), but the paired latent-clustered interval of the change, [−43, +13]
#   points, includes 0, and the ESR rate does not move (1 of 16 both ways). The direction is the paper's
#   (7.4 % → 5.5 % on Llama-3.3-70B); the size of this study cannot resolve it (`docs/mechanisms.md`).
# * With 16 replayed trials per set, every rate moves in steps of about 6 points: read the intervals and the
#   percentile, not the point values. The paper's effect needs thousands of trials to resolve.
# * A percentile near 50 % says the detectors behave like matched random latents; only a low percentile together
#   with a difference interval below zero supports the paper's claim.
# * The detectors are found at the read layer and ablated at the steering layer (the paper's setting); for the
#   embedded model both are block 12.
