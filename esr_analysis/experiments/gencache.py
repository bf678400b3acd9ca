"""A content-keyed cache of generations, so a rerun regenerates nothing.

The key is the SHA-256 of the canonical JSON of: the model (registry name, HF id, dtype, and the HF commit
hash when known), the SAE (source string and content fingerprint), the row's interventions (as given), the
prompt, chat formatting flags, the seed, the sampling settings and the library versions
(:func:`esr_analysis.provenance.library_versions`).
Entries are one JSON file each (``<dir>/<key[:2]>/<key>.json``, written atomically), so concurrent or
interrupted runs never corrupt the cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from esr_analysis.files import atomic_write_text
from esr_analysis.store.schema import canonical_json


def _dump(obj: Any) -> Any:
    d = getattr(obj, "model_dump", None)
    return d(mode="json") if callable(d) else obj


class GenerationCache:
    """Disk cache of ``GenerationResult`` objects keyed by content (see module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(*, model_id: dict[str, Any], sae: dict[str, str] | str | None, interventions: Sequence[Any],
            prompt: str, seed: int, settings: Any, chat: dict[str, Any], versions: dict[str, str]) -> str:
        payload = {"v": 2, "model": model_id, "sae": sae, "interventions": [_dump(i) for i in interventions],
                   "prompt": prompt, "seed": int(seed), "settings": _dump(settings), "chat": chat,
                   "versions": versions}
        return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        from esr_analysis.steering.results import GenerationResult

        p = self._path(key)
        if not p.is_file():
            return None
        try:
            return GenerationResult.model_validate_json(p.read_text(encoding="utf-8"))
        except Exception:  # a corrupt entry is a miss
            return None

    def put(self, key: str, result: Any) -> None:
        atomic_write_text(self._path(key), result.model_dump_json())

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json"))
