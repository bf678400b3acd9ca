"""Latent (distractor) selection, ``docs/method.md#selection``, with every filter's removals counted.

1. **Candidates**: ``n_latents * candidate_factor`` latents drawn uniformly without replacement from the
   SAE with a seeded RNG (or an explicit list).
2. **Dead latents** (``exclude_dead``): a latent whose decoder row is zero, or whose recorded firing density
   (from the SAE's label file, when present) is 0, is dropped.
3. **Concreteness** (optional, when ``concreteness_judge`` is set): placeholder/empty labels are dropped and
   an LLM rates each label 0-100 (abstract to concrete); ratings below ``min_concreteness`` (or below the
   median with ``"median"``, the paper's wording) are dropped.
4. **Relevance**, read in one batched teacher-forced pass per chunk of prompts, over the user turn rendered
   by the chat template **without** the generation prompt (as the authors' relevance pass), at the read layer,
   taking each latent's maximum over all real positions (template tokens included):

   * ``"zero"`` (authors' code): keep a latent only if its maximum is exactly 0 on every prompt;
   * ``"topk"`` (paper text): drop a latent if it is among the ``top_k`` latents (by max activation, over the
     **whole** SAE) of any prompt. Only latents that fire (max > 0) can be "top": on a prompt with fewer than
     ``top_k`` active latents the rest tie at 0 and are not removed;
   * ``"none"``: no relevance filter.
5. The first ``n_latents`` survivors in draw order are returned (possibly fewer, with a warning).
"""

from __future__ import annotations

import logging
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class SelectionReport:
    """The selected latents and, per filter, how many candidates it removed (in order of application)."""

    latents: list[int]
    n_candidates: int
    removed: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = ", ".join(f"{k}: -{v}" for k, v in self.removed.items())
        return f"{len(self.latents)} latents selected from {self.n_candidates} candidates ({parts or 'no filters'})"


def _user_turn_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The user turn without the generation prompt (raw text for a tokenizer without a chat template)."""
    from esr_analysis.models.chat import format_chat

    return format_chat(tokenizer, prompt, chat=bool(getattr(tokenizer, "chat_template", None)),
                       generation_prompt=False)[1]


READ_BYTES_PER_REQUEST = 8 << 20
"""Budget for the encoder slice one selection read ships (8 MiB: ~256 latents of a d_model-8192 model)."""


def latent_chunks(latents: Sequence[int], d_model: int, max_bytes: int = READ_BYTES_PER_REQUEST) -> list[list[int]]:
    """``latents`` split in order into chunks whose float32 encoder slice (``d_model + 1`` floats per latent)
    fits in ``max_bytes``; at least one latent per chunk."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    per_chunk = max(1, max_bytes // (4 * (d_model + 1)))
    lats = list(latents)
    return [lats[i:i + per_chunk] for i in range(0, len(lats), per_chunk)]


def max_activations(model: Any, sae: Any, prompts: Sequence[str], latents: Sequence[int], layer: int, *,
                    batch_size: int = 16, remote: bool | str = False,
                    max_read_bytes: int = READ_BYTES_PER_REQUEST) -> Any:
    """``[n_prompts, n_latents]`` tensor: each latent's maximum activation over the real positions of each
    prompt's user turn (template, no generation prompt), read at the output of block ``layer``.

    The latents are read in chunks (:func:`latent_chunks`) so no request ships more than ``max_read_bytes`` of
    encoder weights: one pass per (prompt batch, chunk); a small model's candidates fit in one chunk."""
    import torch

    from esr_analysis.sae.sliced import SlicedSAE, sae_width
    from esr_analysis.tracing.plans import LayerPlan, left_pad, step0_masks
    from esr_analysis.tracing.run import forward_with_plan

    chunks = latent_chunks(latents, sae_width(sae)[0], max_read_bytes)
    plans = [LayerPlan(layer=layer, read=SlicedSAE.from_sae(sae, c).params(dtype=torch.float32)) for c in chunks]
    rows = []
    for lo in range(0, len(prompts), batch_size):
        ids, mask = left_pad([_user_turn_ids(model.tokenizer, p) for p in prompts[lo:lo + batch_size]], model.tokenizer)
        cols = []
        for plan in plans:
            acts, _ = forward_with_plan(model, ids, mask, [plan], step0_masks(mask), stop_after_last=True,
                                        remote=remote)
            a = acts[layer].float()
            a = a.masked_fill(~mask.bool()[:, :, None], float("-inf"))
            cols.append(a.max(dim=1).values)
        rows.append(torch.cat(cols, dim=1))
    return torch.cat(rows, dim=0)


def _dead(sae: Any, latents: Sequence[int], info: Callable[[int], dict[str, Any]]) -> set[int]:
    from esr_analysis.sae.sliced import SlicedSAE

    norms = SlicedSAE.from_sae(sae, list(latents)).W_dec.float().norm(dim=1)
    dead = {lat for lat, n in zip(latents, norms.tolist(), strict=True) if n == 0.0}
    for lat in latents:
        d = info(lat).get("density")
        if d is not None and float(d) <= 0.0:
            dead.add(lat)
    return dead


def claude_concreteness_rater(model: str) -> Callable[[list[str]], list[float]]:
    """A rater that asks an Anthropic model to rate labels 0-100 (abstract to concrete) in batches of 50,
    with the instructions of ``docs/method.md#selection`` (paraphrased). A batch that fails to parse scores 0."""

    def rate(labels: list[str]) -> list[float]:
        import json
        import re

        import anthropic

        client = anthropic.Anthropic()
        out: list[float] = []
        for lo in range(0, len(labels), 50):
            batch = labels[lo:lo + 50]
            msg = ("Rate how concrete each feature label below is, from 0 (very abstract or general) to 100 (very "
                   "concrete, specific to a domain). Labels about conversational style or the assistant's own "
                   "behaviour are abstract. Answer only with a JSON list of objects "
                   '{"label": ..., "justification": ..., "rating": ...}, one per label, in order.\n\n'
                   + "\n".join(f"- {lab}" for lab in batch))
            try:
                resp = client.messages.create(model=model, max_tokens=10000,
                                              messages=[{"role": "user", "content": msg}])
                text = "".join(getattr(b, "text", "") for b in resp.content)
                m = re.search(r"\[.*\]", text, re.S)
                items = json.loads(m.group(0)) if m else []
                ratings = [float(it.get("rating", 0)) for it in items]
                if len(ratings) != len(batch):
                    raise ValueError("wrong number of ratings")
            except Exception as exc:  # noqa: BLE001 - the authors' behaviour: a failed batch rates 0
                log.warning("concreteness batch failed (%s); its labels rate 0", exc)
                ratings = [0.0] * len(batch)
            out.extend(ratings)
        return out

    return rate


def select_latents(model: Any, sae: Any, prompts: Sequence[str], *, n_latents: int, layer: int,
                   candidate_factor: int = 3, latents: Sequence[int] | None = None, relevance_rule: str = "zero",
                   top_k: int = 100, exclude_dead: bool = True, label: Callable[[int], str] | None = None,
                   latent_info: Callable[[int], dict[str, Any]] | None = None,
                   concreteness_rater: Callable[[list[str]], list[float]] | None = None,
                   min_concreteness: float | str = 65.0, seed: int = 0, batch_size: int = 16,
                   remote: bool | str = False) -> SelectionReport:
    """Select distractor latents (see the module docstring). Returns the latents and removal counts."""
    from esr_analysis.sae.sliced import sae_width

    if relevance_rule not in ("zero", "topk", "none"):
        raise ValueError(f"relevance_rule must be 'zero', 'topk' or 'none', got {relevance_rule!r}")
    _, d_sae = sae_width(sae)
    info = latent_info or (lambda i: {"index": int(i)})
    if latents is not None:
        cands = [int(i) for i in latents]
        bad = [i for i in cands if not 0 <= i < d_sae]
        if bad:
            raise ValueError(f"latents {bad} are outside the SAE (0..{d_sae - 1})")
    else:
        n = min(d_sae, n_latents * candidate_factor)
        cands = random.Random(seed).sample(range(d_sae), n)
    report = SelectionReport(latents=[], n_candidates=len(cands))
    alive = list(cands)

    if exclude_dead:
        dead = _dead(sae, alive, info)
        alive = [i for i in alive if i not in dead]
        report.removed["dead"] = len(dead)

    if concreteness_rater is not None:
        lab = label or (lambda i: "")
        names = {i: lab(i).strip() for i in alive}
        placeholder = {i for i, s in names.items() if not s or s.startswith(("feature_", "latent "))}
        alive = [i for i in alive if i not in placeholder]
        report.removed["placeholder_label"] = len(placeholder)
        ratings = concreteness_rater([names[i] for i in alive]) if alive else []
        cut = statistics.median(ratings) if (min_concreteness == "median" and ratings) else float(min_concreteness)
        keep = [i for i, r in zip(alive, ratings, strict=True) if r >= cut]
        report.removed["concreteness"] = len(alive) - len(keep)
        report.notes.append(f"concreteness cut-off {cut:.1f}")
        alive = keep

    if relevance_rule != "none" and alive:
        if relevance_rule == "zero":
            mx = max_activations(model, sae, prompts, alive, layer, batch_size=batch_size, remote=remote)
            active = (mx > 0).any(dim=0).tolist()
            keep = [i for i, a in zip(alive, active, strict=True) if not a]
        else:
            mx = max_activations(model, sae, prompts, list(range(d_sae)), layer, batch_size=batch_size,
                                 remote=remote)
            k = min(top_k, d_sae)
            vals, idx = mx.topk(k, dim=1)
            top = set(idx[vals > 0].tolist())
            keep = [i for i in alive if i not in top]
        report.removed[f"relevance_{relevance_rule}"] = len(alive) - len(keep)
        alive = keep

    report.latents = alive[:n_latents]
    if len(report.latents) < n_latents:
        msg = f"only {len(report.latents)} of {n_latents} requested latents survived the filters"
        report.notes.append(msg)
        log.warning(msg)
    return report
