"""Prompt sets: one prompt per line, blank lines and ``#`` comments ignored.

Shipped sets (written for this project, not the authors' file):

* ``esr`` (``data/prompts/esr_prompts.txt``): everyday procedural prompts ("Explain how to ...",
  "How do you ...?") for the ESR experiments;
* ``otd_discovery`` (``data/prompts/otd_discovery_prompts.txt``): a disjoint held-out set of the same
  kind, reserved for off-topic-detector discovery.

:func:`load_prompts` reads either by name or any file path (e.g. the authors' ``prompts.txt``).
"""

from __future__ import annotations

from pathlib import Path

from esr_analysis.paths import DATA_DIR

PROMPT_SETS: dict[str, Path] = {
    "esr": DATA_DIR / "prompts" / "esr_prompts.txt",
    "otd_discovery": DATA_DIR / "prompts" / "otd_discovery_prompts.txt",
}


def resolve_prompt_path(source: str | Path) -> Path:
    """The file behind ``source``: a shipped set name (:data:`PROMPT_SETS`) or a path."""
    if isinstance(source, str) and source in PROMPT_SETS:
        return PROMPT_SETS[source]
    return Path(source).expanduser()


def load_prompts(source: str | Path = "esr") -> list[str]:
    """Read a one-prompt-per-line file (or a shipped set by name); strip whitespace, skip blank lines and
    lines starting with ``#``; keep order and duplicates out (first occurrence wins).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file without prompts.
    """
    path = resolve_prompt_path(source)
    if not path.is_file():
        names = ", ".join(PROMPT_SETS)
        raise FileNotFoundError(f"prompt file not found: {path} (give a path, or one of the shipped sets: {names})")
    seen: set[str] = set()
    out: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#") or text in seen:
            continue
        seen.add(text)
        out.append(text)
    if not out:
        raise ValueError(f"prompt file {path} holds no prompts (one prompt per line expected)")
    return out

