"""Loading SAEs from one source string: shipped SAEs, local directories, sae-lens pretrained releases.

Source forms accepted by :func:`load_sae`:

* ``"shipped:<name>"`` or a bare ``"<name>"``: an SAE shipped in ``data/saes/<name>/`` (sae-lens format).
  A name may also be a unique prefix followed by ``-`` (``shipped:qwen2.5-coder-0.5b-instruct-l12`` finds
  ``qwen2.5-coder-0.5b-instruct-l12-8k``).
* a path to a local directory holding ``cfg.json`` + ``sae_weights.safetensors`` (``SAE.save_model``).
* ``"<release>/<sae_id>"`` (split at the first ``/``) or a ``(release, sae_id)`` tuple naming an entry of
  sae-lens's pretrained registry, e.g. ``"gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical"``,
  ``"gemma-scope-2-270m-pt-res/layer_12_width_16k_l0_small"``, ``"goodfire-llama-3.1-8b-instruct/layer_19"``,
  ``"goodfire-llama-3.3-70b-instruct/layer_50"``. These need the Hugging Face Hub unless already cached;
  without it :class:`SAEHubUnavailableError` is raised at once (one probe, no retries).

The returned SAE carries the source string as ``sae.esr_source`` (recorded by generation).
:func:`sae_fingerprint` identifies its *contents*: caches and run manifests key on it, so a re-trained SAE
saved under the same name never reuses results of the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Any

from esr_analysis.paths import DATA_DIR, hub_offline

SHIPPED_DIR = DATA_DIR / "saes"
SHIPPED_PREFIX = "shipped:"


class SAEHubUnavailableError(RuntimeError):
    """A pretrained SAE release needs the Hugging Face Hub, which is not reachable (or disabled)."""


def shipped_sae_names() -> list[str]:
    """Names of the SAEs shipped in ``data/saes/``."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "cfg.json").is_file())


def shipped_sae_dir(name: str) -> Path:
    """Directory of shipped SAE ``name`` (exact name, or a unique ``name-`` prefix); ``ValueError`` if none."""
    name = name.removeprefix(SHIPPED_PREFIX)
    names = shipped_sae_names()
    if name in names:
        return SHIPPED_DIR / name
    cands = [n for n in names if n.startswith(name + "-")]
    if len(cands) == 1:
        return SHIPPED_DIR / cands[0]
    raise ValueError(f"no shipped SAE named {name!r}" + (f" (ambiguous: {cands})" if cands else "")
                     + f"; shipped: {names or 'none'}")


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub answers one HEAD request within ``timeout`` (``False`` when
    :func:`esr_analysis.paths.hub_offline`)."""
    if hub_offline():
        return False
    import requests

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        requests.head(endpoint, timeout=timeout, allow_redirects=False)
    except requests.RequestException:
        return False
    return True


def _hf_cached(repo_id: str) -> bool:
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    return Path(hub, "models--" + repo_id.replace("/", "--"), "snapshots").is_dir()


def pretrained_releases() -> dict[str, Any]:
    """sae-lens's registry of pretrained releases (``release -> PretrainedSAELookup``)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def parse_source(source: str | tuple[str, str] | os.PathLike[str]) -> tuple[str, Any]:
    """Classify a source: ``("shipped", dir)``, ``("local", dir)`` or ``("hub", (release, sae_id))``."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError("a pretrained SAE source tuple is (release, sae_id)")
        return "hub", (str(source[0]), str(source[1]))
    s = os.fspath(source)
    if s.startswith(SHIPPED_PREFIX):
        return "shipped", shipped_sae_dir(s)
    p = Path(s).expanduser()
    if p.is_dir():
        if not (p / "cfg.json").is_file():
            raise ValueError(f"{p} is not an SAE directory (no cfg.json; expected sae-lens save_model output)")
        return "local", p
    try:
        return "shipped", shipped_sae_dir(s)
    except ValueError:
        pass
    if "/" in s:
        release, sae_id = s.split("/", 1)
        if release in pretrained_releases():
            return "hub", (release, sae_id)
    raise ValueError(f"unknown SAE source {s!r}: give 'shipped:<name>' (shipped: {shipped_sae_names()}), a local "
                     "SAE directory, or '<sae-lens release>/<sae id>'")


def load_sae(source: str | tuple[str, str] | os.PathLike[str], *, device: str = "cpu",
             dtype: str | None = "float32") -> Any:
    """Load an SAE (see module docstring for ``source``) as an sae-lens ``SAE`` with ``esr_source`` set.

    ``dtype`` defaults to float32 (shipped weights are fp16 on disk); ``None`` keeps the stored dtype.
    """
    kind, what = parse_source(source)
    from sae_lens import SAE

    if kind in ("shipped", "local"):
        sae = SAE.load_from_disk(what, device=device, dtype=dtype)
        label = f"{SHIPPED_PREFIX}{what.name}" if kind == "shipped" else str(what)
    else:
        release, sae_id = what
        entry = pretrained_releases()[release]
        if sae_id not in entry.saes_map:
            raise ValueError(f"release {release!r} has no SAE {sae_id!r}; some ids: {list(entry.saes_map)[:8]}")
        if not _hf_cached(entry.repo_id) and not hub_reachable():
            raise SAEHubUnavailableError(
                f"SAE {release}/{sae_id} must be downloaded from the Hugging Face Hub (repo {entry.repo_id}), "
                "which is not reachable here (HF_HUB_OFFLINE is set or there is no network). Use a machine with "
                "Hub access, or pass a local SAE directory / a shipped SAE "
                f"({', '.join(shipped_sae_names()) or 'none shipped'}).")
        sae = SAE.from_pretrained(release, sae_id, device=device, dtype=dtype or "float32")
        label = f"{release}/{sae_id}"
    sae.esr_source = label
    return sae


def sae_fingerprint(sae: Any) -> str:
    """SHA-256 (first 16 hex digits) over the SAE's parameters: names, shapes, dtypes and raw bytes.

    Computed once and kept on ``sae.esr_fingerprint`` (hashing is ~0.1 s for the shipped SAE, seconds for a
    1B-parameter one). Two SAEs with the same fingerprint compute the same function at the same dtype.
    """
    cached = getattr(sae, "esr_fingerprint", None)
    if cached:
        return cached
    import torch

    h = hashlib.sha256()
    for name, t in sorted(sae.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    fp = h.hexdigest()[:16]
    with contextlib.suppress(AttributeError):  # objects refusing attributes are hashed every time
        sae.esr_fingerprint = fp
    return fp


def sae_identity(sae: Any) -> dict[str, str] | None:
    """``{"source": <load string>, "sha256": <fingerprint>}`` of ``sae`` (``None`` without an SAE)."""
    if sae is None:
        return None
    return {"source": sae_source_of(sae) or "in-memory", "sha256": sae_fingerprint(sae)}


def sae_source_of(sae: Any) -> str | None:
    """The string ``sae`` was loaded from (``esr_source``, or a sliced SAE's ``source``); ``None`` if unknown."""
    source = getattr(sae, "esr_source", None) or getattr(sae, "source", None)
    return str(source) if source else None


_LAYER_RE = re.compile(r"(?:layers|blocks|layer)[._](\d+)")


def sae_hook_layer(sae: Any) -> int | None:
    """The block index the SAE was trained on, parsed from ``cfg.metadata.hook_name`` (``None`` if unknown).

    Understands ``model.layers.<L>`` (HF / nnsight) and ``blocks.<L>.hook_resid_post`` (TransformerLens).
    """
    hook = getattr(getattr(getattr(sae, "cfg", None), "metadata", None), "hook_name", None)
    m = _LAYER_RE.search(str(hook or ""))
    return int(m.group(1)) if m else None


def check_sae_for_model(sae: Any, d_model: int, n_layers: int, *, layer: int | None = None,
                        strict_layer: bool = False) -> int | None:
    """Check an SAE against a model: width must match and its hook layer must exist in the model.

    If ``layer`` (where it will be used) differs from the SAE's hook layer, warn — or raise with
    ``strict_layer`` (reading/ablating latents off their layer is usually a mistake, steering with a decoder
    direction at another layer is what the paper does for Llama-3.3-70B). Returns the hook layer.
    """
    from esr_analysis.sae.sliced import check_sae_fits_model

    check_sae_fits_model(sae, d_model)
    hook = sae_hook_layer(sae)
    if hook is not None and not 0 <= hook < n_layers:
        raise ValueError(f"the SAE was trained at layer {hook}, but the model has only {n_layers} layers")
    if hook is not None and layer is not None and layer != hook:
        msg = f"using an SAE trained at layer {hook} at layer {layer}"
        if strict_layer:
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=2)
    return hook
