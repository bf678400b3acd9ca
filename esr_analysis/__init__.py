"""esr-analysis: mechanistic analysis of Endogenous Steering Resistance (ESR) with nnsight and SAEs.

Importing the package is cheap: torch, transformers, nnsight and sae-lens load only when used.
Entry points: :func:`esr_analysis.models.load_model`, :func:`esr_analysis.generation.generate`,
:func:`esr_analysis.generation.replay`, :mod:`esr_analysis.interventions`, :mod:`esr_analysis.saes`.
"""

__version__ = "0.1.0"
