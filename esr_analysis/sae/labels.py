"""Latent labels: top activating contexts, automatic labels, and loaders for researchers' label files.

Definitions
-----------
* **Top contexts** of latent ``i``: the ``k`` token positions of a text set with the largest activation
  ``f_i``, each shown as a window of tokens before/after with the activating token marked ``[[like this]]``.
* **Density** of latent ``i``: the fraction of tokens of the set on which ``f_i > 0``.
* **Automatic label**: the tokens most characteristic of the latent — ranked by
  ``share_i(t) * log(share_i(t) / background(t))`` where ``share_i(t)`` is the fraction of the latent's total
  activation mass that falls on token ``t`` and ``background(t)`` the token's frequency in the set (add-one
  smoothed) — joined with ``" | "``. It is a quick hint, not an explanation.

Label files are JSONL (optionally ``.gz``): one ``{"index", "label", "density", "max_act", "contexts",
"top_tokens", "source"}`` per latent. :class:`LatentLabels` also reads Neuronpedia explanation exports
(JSONL or JSON list with ``index`` + ``description``) and CSV files (``index,label`` or ``index_in_sae,label``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esr_analysis.files import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    import torch

MARK_OPEN, MARK_CLOSE = "[[", "]]"
LABELS_FILE = "labels.jsonl.gz"


def _open_text(path: str | Path):
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")


@dataclass
class LatentLabels:
    """Labels (and, for shipped SAEs, contexts and statistics) of an SAE's latents, by latent index."""

    entries: dict[int, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, index: int) -> bool:
        return int(index) in self.entries

    def label(self, index: int) -> str:
        """The short label of latent ``index`` (``""`` if unlabelled)."""
        return str(self.entries.get(int(index), {}).get("label", ""))

    def info(self, index: int) -> dict[str, Any]:
        """Everything known about latent ``index`` (``{"index": i}`` only if nothing is)."""
        return {"index": int(index), **self.entries.get(int(index), {})}

    def describe(self, index: int, n_contexts: int = 3) -> str:
        """One human-readable paragraph about latent ``index``: label, density, top contexts."""
        e = self.info(index)
        parts = [f"latent {e['index']}: {e.get('label') or '(no label)'}"]
        if "density" in e:
            parts.append(f"density {e['density']:.2e}, max activation {e.get('max_act', float('nan')):.2f}")
        for c in e.get("contexts", [])[:n_contexts]:
            parts.append(f"  {c['act']:.2f}: {c['text']!r}")
        return "\n".join(parts)

    def search(self, text: str) -> list[int]:
        """Latents whose label contains ``text`` (case-insensitive)."""
        t = text.lower()
        return [i for i, e in sorted(self.entries.items()) if t in str(e.get("label", "")).lower()]

    def save(self, path: str | Path) -> None:
        """Write JSONL (gzip-compressed if ``path`` ends in ``.gz``), atomically."""
        path = Path(path)
        data = "".join(json.dumps({"index": i, **{k: v for k, v in e.items() if k != "index"}},
                                  ensure_ascii=False) + "\n" for i, e in sorted(self.entries.items()))
        raw = data.encode("utf-8")
        if path.suffix == ".gz":
            buf = io.BytesIO()
            with gzip.GzipFile(filename=path.name, mode="wb", fileobj=buf, mtime=0) as f:
                f.write(raw)
            raw = buf.getvalue()
        atomic_write_bytes(path, raw)

    @classmethod
    def load(cls, path: str | Path) -> LatentLabels:
        """Read a label file: our JSONL, a Neuronpedia export (JSONL/JSON) or a CSV; format by content."""
        path = Path(path)
        name = path.name.removesuffix(".gz")
        if name.endswith(".csv"):
            return load_label_csv(path)
        with _open_text(path) as f:
            head = f.read(1)
        if head == "[":
            return load_neuronpedia_explanations(path)
        out = cls(source=str(path))
        with _open_text(path) as f:
            for line in f:
                if not line.strip():
                    continue
                d = json.loads(line)
                if "label" not in d and "description" in d:
                    return load_neuronpedia_explanations(path)
                out.entries[int(d["index"])] = {k: v for k, v in d.items() if k != "index"}
        return out


def _neuronpedia_records(path: Path) -> Iterable[dict]:
    with _open_text(path) as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from json.loads(stripped)
        return
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


def load_neuronpedia_explanations(path: str | Path) -> LatentLabels:
    """Neuronpedia explanation export: JSONL (or a JSON list), each with ``index`` and ``description``.

    Several explanations of one latent are joined with ``" / "`` in file order; other fields
    (``modelId``, ``layer``, ``explanationModelName``, ...) are kept under ``"neuronpedia"``.
    """
    out = LatentLabels(source=str(path))
    for d in _neuronpedia_records(Path(path)):
        idx = d.get("index", d.get("feature", d.get("latent")))
        desc = d.get("description", d.get("explanation", d.get("label")))
        if idx is None or desc is None:
            raise ValueError(f"{path}: record without index/description: {sorted(d)}")
        e = out.entries.setdefault(int(idx), {"label": "", "source": "neuronpedia", "neuronpedia": []})
        desc = str(desc).strip()
        e["label"] = desc if not e["label"] else f"{e['label']} / {desc}"
        e["neuronpedia"].append({k: v for k, v in d.items() if k not in ("index", "description")})
    return out


def load_label_csv(path: str | Path) -> LatentLabels:
    """CSV with a header: ``index,label`` or the ESR authors' ``index_in_sae,label`` (extra columns kept)."""
    out = LatentLabels(source=str(path))
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        key = "index" if "index" in cols else "index_in_sae" if "index_in_sae" in cols else None
        if key is None or "label" not in cols:
            raise ValueError(f"{path}: expected columns index,label or index_in_sae,label; got {cols}")
        for row in reader:
            extra = {k: v for k, v in row.items() if k not in (key, "label") and k is not None}
            out.entries[int(row[key])] = {"label": (row["label"] or "").strip(), "source": "csv", **extra}
    return out


# ----------------------------------------------------------------------------------------------- building


def top_activations(sae, acts: torch.Tensor, k: int = 8, chunk: int = 2048) -> dict[str, torch.Tensor]:
    """Per latent: top-``k`` activations and their token indices in ``acts [N, D]``, firing counts, mass.

    Returns ``{"values" [d_sae, k], "indices" [d_sae, k], "fires" [d_sae], "mass" [d_sae]}``.
    """
    import torch

    d_sae = int(sae.cfg.d_sae)
    vals = torch.full((d_sae, k), -1.0)
    idx = torch.full((d_sae, k), -1, dtype=torch.long)
    fires = torch.zeros(d_sae, dtype=torch.long)
    mass = torch.zeros(d_sae)
    with torch.no_grad():
        for i in range(0, acts.shape[0], chunk):
            f = sae.encode(acts[i:i + chunk].float()).float().T  # [d_sae, n]
            fires += (f > 0).sum(1)
            mass += f.sum(1)
            kk = min(k, f.shape[1])
            v, j = f.topk(kk, dim=1)
            allv = torch.cat([vals, v], 1)
            alli = torch.cat([idx, j + i], 1)
            top = allv.topk(k, dim=1)
            vals, idx = top.values, alli.gather(1, top.indices)
    return {"values": vals, "indices": idx, "fires": fires, "mass": mass}


def token_scores(sae, acts: torch.Tensor, token_ids: torch.Tensor, vocab_size: int, top_n: int = 5,
                 chunk: int = 2048) -> list[list[tuple[int, float]]]:
    """Per latent, the ``top_n`` most characteristic tokens ``(token_id, score)`` (see module docstring)."""
    import torch

    d_sae = int(sae.cfg.d_sae)
    used, inv = torch.unique(token_ids, return_inverse=True)
    m = torch.zeros(d_sae, used.numel())
    with torch.no_grad():
        for i in range(0, acts.shape[0], chunk):
            f = sae.encode(acts[i:i + chunk].float()).float()  # [n, d_sae]
            m.index_add_(1, inv[i:i + chunk], f.T)
    bg = torch.bincount(inv, minlength=used.numel()).float() + 1.0
    bg = bg / bg.sum()
    share = m / m.sum(1, keepdim=True).clamp_min(1e-12)
    score = share * torch.log((share / bg).clamp_min(1e-12))
    score[share == 0] = -math.inf
    v, j = score.topk(min(top_n, used.numel()), dim=1)
    return [[(int(used[jj]), float(vv)) for vv, jj in zip(v[r], j[r], strict=True) if vv > 0]
            for r in range(d_sae)]


def context_text(tokenizer, window_tokens: Sequence[int], pos: int, before: int = 10, after: int = 4) -> str:
    """Decoded tokens around ``pos`` with the token at ``pos`` wrapped in ``[[ ]]``."""
    lo, hi = max(0, pos - before), min(len(window_tokens), pos + after + 1)
    pre = tokenizer.decode(list(window_tokens[lo:pos]))
    tok = tokenizer.decode([int(window_tokens[pos])])
    post = tokenizer.decode(list(window_tokens[pos + 1:hi]))
    return f"{pre}{MARK_OPEN}{tok}{MARK_CLOSE}{post}"


def build_labels(sae, tokenizer, acts, *, k: int = 8, n_contexts: int = 5, source: str = "heldout",
                 fallback=None) -> LatentLabels:
    """Labels for every latent from an :class:`esr_analysis.sae.training.Activations` set.

    Latents that never fire on ``acts`` get contexts from ``fallback`` (another Activations set, e.g. a
    sample of training text; marked ``"source": "train"``) when given, else the label ``"(inactive)"``.
    """
    out = LatentLabels(source=source)
    _fill(out, sae, tokenizer, acts, k=k, n_contexts=n_contexts, source=source, only=None)
    if fallback is not None:
        missing = [i for i, e in out.entries.items() if e["density"] == 0]
        if missing:
            _fill(out, sae, tokenizer, fallback, k=k, n_contexts=n_contexts, source="train", only=set(missing))
    return out


def _fill(out: LatentLabels, sae, tokenizer, acts, *, k: int, n_contexts: int, source: str,
          only: set[int] | None) -> None:
    tokens_flat = acts.tokens[acts.window, acts.pos]
    top = top_activations(sae, acts.acts, k=k)
    chars = token_scores(sae, acts.acts, tokens_flat, vocab_size=len(tokenizer))
    n = len(acts)
    for i in range(int(sae.cfg.d_sae)):
        if only is not None and i not in only:
            continue
        fires = int(top["fires"][i])
        contexts: list[dict[str, Any]] = []
        for v, j in zip(top["values"][i].tolist(), top["indices"][i].tolist(), strict=True):
            if v <= 0 or j < 0 or len(contexts) >= n_contexts:
                continue
            w, p = int(acts.window[j]), int(acts.pos[j])
            contexts.append({"act": round(v, 3), "text": context_text(tokenizer, acts.tokens[w].tolist(), p)})
        toks = [(tokenizer.decode([t]), s) for t, s in chars[i]][:5]
        if fires == 0:
            label = "(inactive)"
        else:
            label = " | ".join(repr(t.strip() or t)[1:-1] for t, _ in toks[:3]) or "(no characteristic token)"
        out.entries[i] = {"label": label, "density": fires / n, "max_act": round(float(top["values"][i, 0].clamp_min(0)), 3),
                          "top_tokens": [[t, round(s, 4)] for t, s in toks], "contexts": contexts, "source": source}


def most_common_label_tokens(labels: LatentLabels, n: int = 20) -> list[tuple[str, int]]:
    """The ``n`` most frequent first label tokens (a quick check that labels are diverse)."""
    return Counter(e.get("label", "").split(" | ")[0] for e in labels.entries.values()).most_common(n)


# ------------------------------------------------------------------------------------------- convenience

_CACHE: dict[str, LatentLabels] = {}


def labels_for(sae_or_source: Any = None) -> LatentLabels:
    """Labels of a shipped SAE (by name, ``shipped:<name>``, an SAE loaded by ``load_sae``) or a label file.

    ``None`` means the default model's shipped SAE. Results are cached per resolved path.
    """
    from esr_analysis.sae.loading import shipped_sae_dir

    if sae_or_source is None:
        from esr_analysis.models.registry import DEFAULT_MODEL, get_spec

        sae_or_source = get_spec(DEFAULT_MODEL).sae_source
    src = getattr(sae_or_source, "esr_source", sae_or_source)
    p = Path(str(src))
    path: Path | None
    if p.is_file():
        path = p
    else:
        d = p if p.is_dir() else shipped_sae_dir(str(src))
        cands = [d / LABELS_FILE, d / "labels.jsonl"]
        path = next((c for c in cands if c.exists()), None)
        if path is None:
            raise FileNotFoundError(f"no labels for {src} (looked for {', '.join(map(str, cands))})")
    key = str(path.resolve())
    if key not in _CACHE:
        _CACHE[key] = LatentLabels.load(path)
    return _CACHE[key]


def latent_info(index: int, sae: Any = None) -> dict[str, Any]:
    """Everything known about latent ``index`` of ``sae`` (default: the default model's shipped SAE)."""
    return labels_for(sae).info(index)


def describe_latent(index: int, sae: Any = None, n_contexts: int = 3) -> str:
    """"What is latent 1234?" — label, density and top contexts as text (see :func:`latent_info`)."""
    return labels_for(sae).describe(index, n_contexts=n_contexts)
