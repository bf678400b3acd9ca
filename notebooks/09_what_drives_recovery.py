# %% [markdown]
# # 09 · What drives a recovery: attribution of the restart to heads, MLPs and SAE latents, checked by patching
#
# For each recovering episode of the organism (a steered response that says "Wait, that's not right" and returns to
# the question) we ask which components push the model to emit the restart token. The metric is the **restart logit
# difference** at the position before the correction (the restart token minus the top non-restart token). Every
# head, MLP, block output and SAE latent at the read layer (with an explicit **error node**) gets an
# **attribution-patching** score, gradient x (clean - counterfactual), from three passes; heads and MLPs also get
# **direct logit attribution** with the final norm's scale frozen. The counterfactual here is *steering off*;
# the **causal check** patches the top sites (and the top-10 heads jointly, against 10 random heads) from it.
# Definitions: `esr_analysis/mechanisms/attribution/`. With `SMALL` (env `ESR_SMALL=1`) it runs on a tiny random
# model with a random SAE in seconds; the full setting reads the organism's episodes from `EPISODES`.

# %%
import json
import os

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
EPISODES = os.environ.get("ESR_EPISODES", "data/results/organism_episodes.jsonl")
REMOTE = False  # True: every trace on NDIF (a model from load_remote_model)

# %% [markdown]
# ## Model, SAE and episodes

# %%
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
    from esr_analysis.sae.labels import labels_for

    lm = load_model("qwen2.5-coder-0.5b-instruct-sc70v3")  # models.organisms.DEFAULT_ORGANISM
    sae = load_sae("shipped:qwen2.5-coder-0.5b-instruct-l12")
    READ_LAYER, labels = 12, labels_for(sae)
    episodes = load_episodes(EPISODES)
    TOP_K = 30
print(len(episodes), "episodes")

# %% [markdown]
# ## One record per episode (3 counterfactuals; AtP, DLA, patching of the top sites)

# %%
from esr_analysis.mechanisms.attribution.study import aggregate, study_episode

records = [study_episode(lm, ep, sae=sae, read_layer=READ_LAYER, top_k=TOP_K, remote=REMOTE,
                         counterfactuals=("steering_off", "ontopic_span", "detectors_ablated"))
           for ep in episodes]
first = records[0]["counterfactuals"][0]
print(f"restart token {records[0]['target_token']!r} vs {first['other_token']!r}: logit difference "
      f"{first['metric_clean']:.2f} steered, {first['metric_cf']:.2f} with steering off")
for c in records[0]["counterfactuals"]:
    print(c["kind"], "skipped: " + c["skipped"] if "skipped" in c else
          f"Spearman(AtP, patching) {c['atp_vs_patching_spearman']:.2f}")

# %% [markdown]
# ## Aggregate over episodes (bootstrap 95 % intervals over episodes)

# %%
from esr_analysis.mechanisms.attribution.plots import components_table, plot_summary
from esr_analysis.tracing import find_sites

summary = aggregate(records, counterfactual="steering_off", labels=labels)
print(components_table(summary))
print(json.dumps({k: summary[k] for k in ("n_episodes", "atp_vs_patching_spearman", "top10_patch_effect",
                                          "random10_patch_effect")}, indent=1))
sites = find_sites(lm)
fig = plot_summary(summary, sites.n_layers, sites.n_heads)

# %% [markdown]
# ## Other counterfactuals: does the same top set appear when the off-topic span is replaced, or the detectors ablated?

# %%
for cf in ("ontopic_span", "detectors_ablated"):
    s = aggregate(records, counterfactual=cf, labels=labels)
    print(cf, s["n_episodes"], "episodes; top 5:", [c["site"] for c in s["top_components"][:5]])
