# %% [markdown]
# # 04 · Boost sweep (exp 2) and a Fig. 3-style figure
#
# Levels in σ units of the run's threshold distribution (μ ± 3σ, clamped at 0, as the authors define them) and
# multiples of each latent's own threshold; the same prompts and seeds at every level. `SMALL` (env
# `ESR_SMALL=1`) runs it with two latents and short generations.

# %%
import os
import tempfile

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
REMOTE = os.environ.get("ESR_REMOTE", "0") == "1"  # Llama-3.3-70B on NDIF (needs NDIF_API_KEY)

# %%
from esr_analysis.experiments.pipeline import run_pipeline
from esr_analysis.experiments.report import report
from esr_analysis.experiments.session import notebook_session

session = notebook_session(SMALL, remote=REMOTE, overrides={"experiments": ["exp2"]})
run_dir = os.path.join(tempfile.mkdtemp(), "boost") if SMALL else "../runs/notebook-boost-sweep"
result = run_pipeline(session.config, session=session, run_dir=run_dir)
print(report(result.run_dir, n_boot=200))

# %%
from esr_analysis.plotting import fig3_boost

fig = fig3_boost(result.run_dir / "exp2", mode="sigma")

# %%
fig = fig3_boost(result.run_dir / "exp2", mode="multiple")
