"""Results store: pydantic run/trial records, resumable append-only run directories, loaders.

* :mod:`.schema`: :class:`RunConfig`, :class:`Trial`, :class:`RunManifest` (plain data; no judge/nnsight import).
* :mod:`.run`: :func:`open_run` / :class:`RunWriter` (atomic manifest, one fsync'd line per trial, resume).
* :mod:`.read`: :func:`read_trials`, :func:`load_run` (DataFrame), corrupt/foreign lines reported by file:line.
* :mod:`.authors`: :func:`read_authors_results` / :func:`load_authors_results` for the authors' result JSON.
"""

from __future__ import annotations

from .authors import load_authors_results, read_authors_results
from .read import (
    MANIFEST_NAME,
    TRIALS_NAME,
    LoadProblem,
    LoadReport,
    RunFormatError,
    load_run,
    read_manifest,
    read_trials,
    trials_to_frame,
)
from .run import (
    DuplicateTrialError,
    RunConflictError,
    RunLockedError,
    RunWriter,
    open_run,
    write_manifest,
)
from .schema import (
    KEY_FIELDS,
    Layers,
    RunConfig,
    RunManifest,
    Trial,
    intervention_key,
    trial_from_generation,
    trial_key,
)

__all__ = [
    "KEY_FIELDS",
    "MANIFEST_NAME",
    "TRIALS_NAME",
    "DuplicateTrialError",
    "Layers",
    "LoadProblem",
    "LoadReport",
    "RunConfig",
    "RunConflictError",
    "RunFormatError",
    "RunLockedError",
    "RunManifest",
    "RunWriter",
    "Trial",
    "intervention_key",
    "load_authors_results",
    "load_run",
    "open_run",
    "read_authors_results",
    "read_manifest",
    "read_trials",
    "trial_from_generation",
    "trial_key",
    "trials_to_frame",
    "write_manifest",
]
