"""Notebook setup, kept out of the core modules: the session a notebook opens from its ``SMALL`` and ``REMOTE``
parameters (:func:`notebook_session`)."""

from __future__ import annotations

from typing import Any

from esr_analysis.experiments.session import Session, open_session

SMALL_OVERRIDES: dict[str, Any] = {
    "n_prompts_per_latent": 2, "max_new_tokens": 16, "batch_size": 8,
    "selection.n_latents": 2, "selection.relevance_rule": "none", "search.n_steps": 2, "search.max_new_tokens": 8,
    "search.grid_size": 500, "boost.n_levels": 4, "boost.multiples": [0.5, 1.0, 2.0],
    "search.require_fluent_window": False,
}
"""What ``SMALL`` changes: the same embedded model, SAE and judge, but two latents, two search steps and very
short generations (a smoke run of a minute or two; its numbers mean little). Eight-token search samples are
too short to show a fluent off-topic window, so the smoke run keeps its two latents instead of dropping them
(``search.require_fluent_window`` off); the full setting keeps the rule."""


REMOTE_PRESET = "paper-llama-3.3-70b"


def notebook_session(small: bool, preset: str = "embedded-demo", overrides: dict[str, Any] | None = None,
                     progress: bool = True, remote: bool | str = False) -> Session:
    """The session a notebook uses: the preset as is, or with ``small`` the preset with :data:`SMALL_OVERRIDES`.

    With ``remote`` (a notebook's ``REMOTE`` parameter) the embedded preset is swapped for the paper's
    Llama-3.3-70B preset run on NDIF (needs ``NDIF_API_KEY``, Hub access for the tokenizer and SAE, and the
    preset's judge key). The judge is the preset's (offline for ``embedded-demo``)."""
    from esr_analysis.experiments.config import load_config

    if remote and preset == "embedded-demo":
        preset = REMOTE_PRESET
    over = dict(SMALL_OVERRIDES) if small else {}
    over.update(overrides or {})
    if remote:
        over["remote"] = remote
    return open_session(load_config(preset, over), progress=progress)
