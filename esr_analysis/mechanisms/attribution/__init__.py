"""Which components drive a recovery: attribution of the restart (or of the detector latents) to heads, MLPs,
block outputs and SAE latents with an error node, checked by activation patching.

* :mod:`.inputs`: episodes (a minimal JSON/JSONL loader), tokens up to the correction, the metrics, the
  counterfactuals, model inputs with the episode's interventions.
* :mod:`.methods`: attribution patching (3 passes), direct logit attribution, integrated gradients, activation
  patching; the SAE node.
* :mod:`.study`: one record per episode, the aggregate over episodes with bootstrap intervals.
* :mod:`.plots`: layer x head heatmap, MLP bars, the top-components table.
* :mod:`.compare`: two models (organism and base) on the same episodes.

All model access goes through :func:`esr_analysis.tracing.attribution.site_pass`.
"""
