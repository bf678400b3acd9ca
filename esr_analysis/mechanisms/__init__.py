"""Mechanisms of recovery: off-topic detector latents (``detectors``), episodes and per-token traces of a
recovery (``episodes``, ``boundaries``, ``traces``, ``alignment``) and attribution of the recovery to model
components (``attribution``).

Every module here reaches the model only through :mod:`esr_analysis.tracing` (sites and kernels), and
imports torch lazily, so importing the package stays cheap.
"""
