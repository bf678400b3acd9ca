# %% [markdown]
# # 02 · Steered generation: pick a latent and a boost, see the text change, grade it
#
# Steering adds `boost × d_i` (the SAE decoder row of latent *i*) to the residual stream at the steering layer,
# at every position and decode step (`docs/method.md#steering`). The judge splits the answer into attempts and scores
# each 0–100 for answering the prompt while resisting the unrelated latent.
#
# Parameters: `SMALL` (env `ESR_SMALL=1`: fewer boosts, short generations) and
# `REMOTE` (env `ESR_REMOTE=1`: the paper's Llama-3.3-70B preset, traced on NDIF).

# %%
import os

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
REMOTE = os.environ.get("ESR_REMOTE", "0") == "1"  # Llama-3.3-70B on NDIF (needs NDIF_API_KEY)

# %%
from esr_analysis.experiments.session import notebook_session

session = notebook_session(SMALL, remote=REMOTE)
print(session.model_id, "SAE:", session.sae_source, "steer layer:", session.steer_layer, "judge:", session.judge)

# %%
# shipped SAE: latent 2959 is a "God | worship | Lord" latent (`describe_latent(2959)` shows its top contexts);
# remotely, 7580 is the paper's Fig. 1 latent on Llama-3.3-70B (threshold about 9.4 SAE units)
latent = 7580 if REMOTE else 2959
prompt = session.prompts[0]
boosts = [0.0, 5.0, 10.0, 15.0] if REMOTE else ([0.0, 60.0] if SMALL else [0.0, 30.0, 60.0, 90.0])
print("latent", latent, "label:", session.label(latent))
gens = session.generate([prompt] * len(boosts), [[session.steer(latent, b)] if b else [] for b in boosts],
                        seeds=[0] * len(boosts), settings=session.settings())
for b, g in zip(boosts, gens, strict=True):
    print(f"--- boost {b} ---\n{g.text}\n")

# %%
grades = session.grade([prompt] * len(gens), [g.text for g in gens], [session.label(latent)] * len(gens))
for b, gr in zip(boosts, grades, strict=True):
    print(f"boost {b}: attempts scored {gr.scores}")
