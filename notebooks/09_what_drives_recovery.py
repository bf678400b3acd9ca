# %% [markdown]
# # 09 · What drives a recovery: attribution of the restart to heads, MLPs and SAE latents, checked by patching
#
# For each recovering episode of the organism (a steered response that drifts, says "Let me correct that" or
# "Wait, that's not right" and returns to the question) we ask which components push the model to emit the
# restart token. The metric is the **restart logit difference** at the position before the correction: the logit
# of the restart token the model emitted minus the top non-restart token. Every head, MLP, block output and SAE
# latent at the read layer (with an explicit **error node**) gets an **attribution-patching** score,
# gradient × (clean − counterfactual), from three passes; heads and MLPs also get **direct logit attribution**
# with the final norm's scale frozen. The main counterfactual is *steering off* (same text, no steering vector);
# the **causal check** patches the top sites one by one, and the top-10 heads jointly against 10 random heads.
# Definitions: `esr_analysis/mechanisms/attribution/`; results and their reading: `docs/mechanisms.md`.
#
# **Parameters.** `SMALL` (env `ESR_SMALL=1`): a tiny random model and SAE, every record computed here in
# seconds; its numbers mean nothing. Full setting: the organism and the shipped SAE; the per-episode records of
# the committed study (`RECORDS`, made by `scripts/attribution_study.py`, about a minute per episode on 2 cores)
# are read, and one episode is recomputed here to show that the records replay. `REMOTE`: every trace on NDIF.

# %%
import json
import os

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
REMOTE = False  # True: every trace on NDIF (a model from load_remote_model)
MODEL = "qwen2.5-coder-0.5b-instruct-sc70v3"  # models.organisms.DEFAULT_ORGANISM
BASE = "qwen2.5-coder-0.5b-instruct"
EPISODES = os.environ.get("ESR_EPISODES", f"data/results/{MODEL}_recoveries.jsonl")
RECORDS = f"data/results/attribution_{MODEL}.records.jsonl"
BASE_RECORDS = f"data/results/attribution_{BASE}_on_{MODEL}.records.jsonl"

# %% [markdown]
# ## Model, SAE and episodes
#
# An episode is everything needed to replay a recovery teacher-forced: the prompt, the response, the character
# where the correction starts (placed by the offline annotator), and the steering interventions as stored with
# the trial.

# %%
from pathlib import Path

from esr_analysis.mechanisms.attribution.inputs import RecoveryPoint, load_episodes

if SMALL:
    from esr_analysis.models.tiny import TINY_HIDDEN, load_tiny
    from esr_analysis.sae.random_sae import random_sae

    lm, sae, READ_LAYER, labels = load_tiny("llama", n_layers=3), random_sae(TINY_HIDDEN, 96, 3), 1, None
    text = ("The sky is blue because of light. Cats like fish a lot. Wait, that is not right. Light scatters in the "
            "air and the blue light wins over the red light by far.")
    episodes = [RecoveryPoint(prompt=p, response=text, correction_char=text.index("Wait"),
                        offtopic_char=text.index("Cats"), ontopic_char=text.index("Light scatters"),
                        interventions=[{"kind": "add_latent", "latent": 3, "strength": 4.0, "layer": 1,
                                        "unit": "sae"}], detectors=[5, 7], id=str(i))
                for i, p in enumerate(["Why is the sky blue?", "Why is the sea blue?", "What colour is the sky?"])]
    TOP_K = 6
else:
    from esr_analysis import load_model, load_sae
    from esr_analysis.paths import DATA_DIR
    from esr_analysis.sae.labels import labels_for

    ROOT = DATA_DIR.parent  # paths above are relative to the repository root (the runner executes in notebooks/)
    EPISODES, RECORDS, BASE_RECORDS = (str(ROOT / p) for p in (EPISODES, RECORDS, BASE_RECORDS))
    lm = load_model(MODEL)
    sae = load_sae("shipped:qwen2.5-coder-0.5b-instruct-l12")
    READ_LAYER, labels = 12, labels_for(sae)
    episodes = load_episodes(EPISODES)
    TOP_K = 30
print(len(episodes), "episodes")
# the example shown and replayed: among the episodes with a committed record, the one with the longest drift
# before its correction (a rule fixed without looking at the attributions)
stored_records = [] if SMALL else [json.loads(line) for line in Path(RECORDS).read_text().splitlines() if line]
recorded = {r["id"] for r in stored_records}
ep = max((e for e in episodes if SMALL or e.id in recorded), key=lambda e: e.correction_char - (e.offtopic_char or 0))
print(f"\nprompt: {ep.prompt}\nsteering: {ep.interventions}\n")
print(f"before the correction: …{ep.response[max(0, ep.correction_char - 300):ep.correction_char]!r}")
print(f"from the correction:   {ep.response[ep.correction_char:ep.correction_char + 200]!r}…")

# %% [markdown]
# ## One record per episode
#
# A record holds, per counterfactual, the clean and counterfactual metric, AtP and DLA of every site, and the
# activation-patching effects of the top sites. In the full setting we recompute the first episode here (steering
# off only) and check it against the committed record; the aggregate below reads the committed records.

# %%
from esr_analysis.mechanisms.attribution.study import aggregate, study_episode

if SMALL:
    records = [study_episode(lm, e, sae=sae, read_layer=READ_LAYER, top_k=TOP_K, remote=REMOTE,
                             counterfactuals=("steering_off", "ontopic_span", "detectors_ablated"))
               for e in episodes]
    fresh = records[0]
else:
    records = stored_records
    fresh = study_episode(lm, ep, sae=sae, read_layer=READ_LAYER, top_k=TOP_K, remote=REMOTE,
                          counterfactuals=("steering_off",))
    stored = next(r for r in records if r["id"] == ep.id)["counterfactuals"][0]
    now = fresh["counterfactuals"][0]
    print(f"replayed episode {ep.id}: metric {now['metric_clean']:.3f} (stored {stored['metric_clean']:.3f}), "
          f"counterfactual {now['metric_cf']:.3f} (stored {stored['metric_cf']:.3f}); "
          f"top-5 sites now {now['top_sites'][:5]}, stored {stored['top_sites'][:5]}")
first = fresh["counterfactuals"][0]
print(f"restart token {fresh['target_token']!r} vs {first['other_token']!r}: logit difference "
      f"{first['metric_clean']:.2f} steered, {first['metric_cf']:.2f} with steering off")
for c in fresh["counterfactuals"]:
    print(c["kind"], "skipped: " + c["skipped"] if "skipped" in c else
          f"Spearman(AtP, patching) {c['atp_vs_patching_spearman']:.2f}")

# %% [markdown]
# ## Aggregate over episodes (bootstrap 95 % intervals over episodes)
#
# The heatmap and the bars show the mean AtP of each head and MLP towards the restart (positive: the site's
# steered value raises the restart logit relative to the steering-off run). The right panel is the causal check.

# %%
from esr_analysis.mechanisms.attribution.plots import components_table, plot_summary
from esr_analysis.tracing import find_sites

summary = aggregate(records, counterfactual="steering_off", labels=labels)
print(components_table(summary))
print(json.dumps({k: summary[k] for k in ("n_episodes", "metric_clean", "metric_cf", "atp_vs_patching_spearman",
                                          "top10_patch_effect", "random10_patch_effect")}, indent=1))
sites = find_sites(lm)
fig = plot_summary(summary, sites.n_layers, sites.n_heads)

# %% [markdown]
# ## Other counterfactuals: the off-topic span replaced by on-topic text, the detectors ablated
#
# If the restart were caused by the steering vector, turning it off would lower the metric; if it is caused by
# the drifted text, replacing that text should lower it. Episodes whose response has too little on-topic text to
# fill the span are skipped and counted.

# %%
for cf in ("ontopic_span", "detectors_ablated"):
    s = aggregate(records, counterfactual=cf, labels=labels)
    if not s["n_episodes"]:
        print(cf, f"0 episodes ({len(s['skipped'])} skipped)")
        continue
    print(f"{cf}: {s['n_episodes']} episodes ({len(s['skipped'])} skipped); metric clean {s['metric_clean']} → "
          f"counterfactual {s['metric_cf']}; top 5: {[c['site'] for c in s['top_components'][:5]]}")

# %% [markdown]
# ## Does the organism's mechanism exist in the base model?
#
# The base model is run teacher-forced on the *same* episodes (the organism's text) with the same metric and
# counterfactual. Per episode we compare the two AtP maps over heads, MLPs and the error node: the overlap of
# their top-20 sites and their rank agreement (Spearman). The control pairs the organism on one episode with the
# base on another (a seeded derangement): what every episode shares shows up there too, so only matched − control
# speaks for a shared, episode-specific mechanism. The clean metric says whether the base model, on the same
# text, would emit the restart at all.

# %%
from esr_analysis.mechanisms.attribution.compare import compare_records

if SMALL:
    base_lm = load_tiny("llama", n_layers=3, seed=1)
    base_records = [study_episode(base_lm, e, sae=sae, read_layer=READ_LAYER, top_k=TOP_K,
                                  counterfactuals=("steering_off",)) for e in episodes]
else:
    base_records = [json.loads(line) for line in Path(BASE_RECORDS).read_text().splitlines() if line.strip()]
cmp = compare_records(records, base_records, k=5 if SMALL else 20, names=("organism", "base"))
print(f"{cmp['n_episodes']} episodes, {cmp['n_sites']} sites, chance top-{cmp['k']} overlap "
      f"{cmp['chance_overlap']:.3f}")
for key in ("top_k_overlap", "rank_agreement"):
    print(f"{key:15s}", {m: [round(x, 3) for x in v] for m, v in cmp[key].items()})
for name in ("organism", "base"):
    print(f"{name:9s}", {m: [round(x, 2) for x in v] for m, v in cmp["per_model"][name].items()})

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
for ax, key, title in ((axes[0], "top_k_overlap", f"top-{cmp['k']} overlap"),
                       (axes[1], "rank_agreement", "rank agreement (Spearman)")):
    for i, m in enumerate(("matched", "control")):
        mean, lo, hi = cmp[key][m]
        ax.bar(i, mean, yerr=[[mean - lo], [hi - mean]], capsize=4, color="tab:blue" if i == 0 else "tab:gray")
    if key == "top_k_overlap":
        ax.axhline(cmp["chance_overlap"], color="k", ls=":", lw=1, label="chance")
        ax.legend(frameon=False)
    ax.set_xticks([0, 1], ["same episode", "other episode"])
    ax.set(title=f"organism vs base: {title}")
for i, name in enumerate(("organism", "base")):
    mean, lo, hi = cmp["per_model"][name]["metric_clean"]
    axes[2].bar(i, mean, yerr=[[mean - lo], [hi - mean]], capsize=4, color=("tab:green", "tab:purple")[i])
axes[2].axhline(0, color="k", lw=0.8)
axes[2].set_xticks([0, 1], ["organism", "base"])
axes[2].set(title="restart logit difference\non the organism's text")
fig.tight_layout()
