# %% [markdown]
# # 03 · ESR rates (exp 1) and the no-steering baseline (exp 8)
#
# Latent selection → per-latent threshold (probabilistic bisection to a first-attempt score of 30) → each
# latent steered at its threshold on k distinct prompts (exp 1) and the same latents/prompts/seeds unsteered
# (exp 8). Metrics carry Wilson intervals and latent-clustered bootstrap intervals. `SMALL` (env `ESR_SMALL=1`)
# runs the same code with two latents and short generations.

# %%
import os
import tempfile

SMALL = os.environ.get("ESR_SMALL", "0") == "1"
REMOTE = os.environ.get("ESR_REMOTE", "0") == "1"  # Llama-3.3-70B on NDIF (needs NDIF_API_KEY)

# %%
from esr_analysis.experiments.pipeline import run_pipeline
from esr_analysis.experiments.report import report
from esr_analysis.experiments.session import notebook_session

session = notebook_session(SMALL, remote=REMOTE, overrides={"experiments": ["exp1", "exp8"]})
run_dir = os.path.join(tempfile.mkdtemp(), "esr_rates") if SMALL else "../runs/notebook-esr-rates"
result = run_pipeline(session.config, session=session, run_dir=run_dir)
print(result.thresholds)

# %%
print(report(result.run_dir))

# %%
from esr_analysis.plotting import fig2_esr

fig = fig2_esr({"Steered (exp 1)": result.run_dir / "exp1", "No steering (exp 8)": result.run_dir / "exp8"})
