# %% [markdown]
# # 05 · Meta-prompting (exp 5) with a matched baseline, Fig. 4-style figure
#
# Each variant appends an instruction to the user prompt; the baseline is re-run on the same
# (latent, prompt, seed) without it (the authors compared against pooled exp 1 data instead). Variants are in
# `esr_analysis.experiments.metaprompt.META_VARIANTS` (add your own). `SMALL` (env `ESR_SMALL=1`) runs one
# variant with two latents and short generations.

# %%
import os
import tempfile

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
REMOTE = os.environ.get("ESR_REMOTE", "0") == "1"  # Llama-3.3-70B on NDIF (needs NDIF_API_KEY)

# %%
from esr_analysis.experiments.metaprompt import META_VARIANTS
from esr_analysis.experiments.pipeline import run_pipeline
from esr_analysis.experiments.report import report
from esr_analysis.experiments.session import notebook_session

print(META_VARIANTS)
variants = ["self_monitor"] if SMALL else list(META_VARIANTS)
session = notebook_session(SMALL, remote=REMOTE, overrides={"experiments": ["exp5"], "meta_variants": variants})
run_dir = os.path.join(tempfile.mkdtemp(), "meta") if SMALL else "../runs/notebook-meta-prompting"
result = run_pipeline(session.config, session=session, run_dir=run_dir)
print(report(result.run_dir, n_boot=200))

# %%
from esr_analysis.plotting import fig4_meta

fig = fig4_meta(result.run_dir / "exp5")
