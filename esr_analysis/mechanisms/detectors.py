"""Off-topic detector latents: streamed discovery and the three selection rules (the detector file is
:mod:`esr_analysis.mechanisms.detector_files`).

Definitions (``docs/method.md#detectors``)
-----------------------------------------
* **Answers**: the model's own unsteered answer to each discovery prompt (held-out prompts, never the
  evaluation prompts), generated with a seed derived from ``(seed, "otd-answer", prompt)``.
* **Pairs**: an *on-topic* pair is prompt ``i`` with its own answer; an *off-topic* pair is prompt ``i`` with
  answer ``d(i)`` for a seeded **derangement** ``d`` (a permutation without fixed points). Several distinct
  derangements give several off-topic pairs per prompt (:func:`derangements`).
* **Pooled activation** of latent ``j`` on a pair: the maximum of ``f_j`` at the read layer over the
  **assistant turn** of the chat-templated conversation (the answer's token positions; the user turn is not
  pooled). It is computed inside the trace (:func:`esr_analysis.tracing.kernels.pool_slice`), so a batch never
  returns more than ``[B, k]`` numbers, and only per-latent running statistics are kept
  (:class:`GroupStats`): the memory of a discovery is ``O(k)``, not ``O(pairs x positions x d_sae)``.
* **Profile** of a latent over the assistant positions of every pair: firing density (share of positions
  with ``f_j > 0``) and mean activation where active. The matched random null uses it
  (:mod:`esr_analysis.mechanisms.null`).

Rules (:data:`RULES`, each selectable and recorded):

* ``zero_on_topic`` (the authors' discovery script): pooled ``< eps`` on every on-topic pair and ``>= eps``
  on at least ``min_off_fraction`` (80 %) of off-topic pairs; sorted by (that fraction, off-topic mean).
* ``separability`` (the rule behind the authors' released detector file): AUC = 1.0 between the pooled
  activations of off- and on-topic pairs, i.e. ``min(off) > max(on)``; sorted by the margin.
* ``ranked``: the ``top_k`` latents by ``mean(off) - mean(on)`` among those where it is positive, for models
  where ``zero_on_topic`` finds nothing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from esr_analysis.seeds import derive_seed

if TYPE_CHECKING:  # pragma: no cover
    import torch

RULES: tuple[str, ...] = ("zero_on_topic", "separability", "ranked")
ZERO_EPS = 1e-8
"""Below this a pooled activation counts as zero (the authors' value)."""


def derangements(n: int, k: int, seed: int) -> list[list[int]]:
    """``k`` seeded derangements of ``range(n)`` (``d[i] != i`` for all ``i``), distinct while ``n`` allows.

    Each is drawn by rejection (shuffle until no fixed point) from ``random.Random(derive_seed(seed,
    "derangement", j, attempt))``; a repeat of an earlier one is redrawn up to 100 times, then kept.
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 prompts, got {n}")
    if k < 1:
        raise ValueError(f"n_derangements must be >= 1, got {k}")
    out: list[list[int]] = []
    for j in range(k):
        for attempt in range(100):
            rng = random.Random(derive_seed(seed, "derangement", j, attempt))
            while True:
                perm = list(range(n))
                rng.shuffle(perm)
                if all(p != i for i, p in enumerate(perm)):
                    break
            if perm not in out:
                break
        out.append(perm)
    return out


def discovery_pairs(n: int, n_derangements: int, seed: int) -> list[tuple[int, int, bool]]:
    """``(prompt index, answer index, off_topic)`` of every pair: the ``n`` on-topic pairs, then ``n`` off-topic
    pairs per derangement."""
    pairs = [(i, i, False) for i in range(n)]
    for d in derangements(n, n_derangements, seed):
        pairs.extend((i, d[i], True) for i in range(n))
    return pairs


@dataclass
class GroupStats:
    """Running per-latent statistics of pooled activations ``x`` over the pairs of one group (float64 ``[k]``):
    ``n`` pairs, ``active`` = #(x > 0), ``nonzero`` = #(x >= eps), ``sum``, ``sumsq``, ``max``, ``min``."""

    n: int
    active: torch.Tensor
    nonzero: torch.Tensor
    sum: torch.Tensor
    sumsq: torch.Tensor
    max: torch.Tensor
    min: torch.Tensor

    @classmethod
    def empty(cls, k: int) -> GroupStats:
        import torch

        z = torch.zeros(k, dtype=torch.float64)
        return cls(0, z.clone(), z.clone(), z.clone(), z.clone(), torch.full((k,), -torch.inf, dtype=torch.float64),
                   torch.full((k,), torch.inf, dtype=torch.float64))

    def update(self, x: torch.Tensor, cols: slice, eps: float = ZERO_EPS) -> None:
        """Add pairs ``x [b, c]`` (pooled activations of latent columns ``cols``); ``n`` counts only once per
        pair (on the pass that holds column 0)."""
        x = x.to(dtype=self.sum.dtype)
        if x.shape[0] == 0:
            return
        if cols.start == 0:
            self.n += int(x.shape[0])
        self.active[cols] += (x > 0).sum(0)
        self.nonzero[cols] += (x >= eps).sum(0)
        self.sum[cols] += x.sum(0)
        self.sumsq[cols] += (x * x).sum(0)
        self.max[cols] = self.max[cols].maximum(x.amax(0))
        self.min[cols] = self.min[cols].minimum(x.amin(0))

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.n, 1)


@dataclass
class DiscoveryStats:
    """Everything a discovery keeps: the candidate latents (full-SAE index of each column), the two groups'
    :class:`GroupStats`, and the profile sums over assistant positions of all pairs (``positions``,
    ``fire_count [k]``, ``act_sum [k]``)."""

    latents: tuple[int, ...]
    on: GroupStats
    off: GroupStats
    positions: int = 0
    fire_count: Any = None
    act_sum: Any = None

    @classmethod
    def empty(cls, latents: Sequence[int]) -> DiscoveryStats:
        import torch

        k = len(latents)
        return cls(tuple(int(i) for i in latents), GroupStats.empty(k), GroupStats.empty(k), 0,
                   torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64))

    @property
    def density(self) -> torch.Tensor:
        """Share of assistant positions (all pairs) where the latent fires."""
        return self.fire_count / max(self.positions, 1)

    @property
    def mean_active(self) -> torch.Tensor:
        """Mean activation over the positions where the latent fires (0 if it never does)."""
        return self.act_sum / self.fire_count.clamp(min=1)

    def latent_stats(self, j: int) -> dict[str, float]:
        """Column ``j``'s statistics: the authors' eight detector-file keys plus ours."""
        on, off = self.on, self.off
        f = lambda t: float(t[j])  # noqa: E731
        nz_off, nz_on = f(off.nonzero) / max(off.n, 1), f(on.nonzero) / max(on.n, 1)
        return {
            "shuffled_mean_activation": f(off.mean), "normal_mean_activation": f(on.mean),
            "shuffled_active_frequency": f(off.active) / max(off.n, 1),
            "normal_active_frequency": f(on.active) / max(on.n, 1),
            "nonzero_shuffled_pct": 100 * nz_off, "nonzero_normal_pct": 100 * nz_on,
            "nonzero_off_topic_frequency": nz_off,
            "activation_ratio": f(off.mean) / (f(on.mean) + 1e-8),
            "off_topic_min": f(off.min), "on_topic_max": f(on.max), "mean_difference": f(off.mean) - f(on.mean),
            "density": f(self.density), "mean_active_activation": f(self.mean_active),
        }


def select_detectors(stats: DiscoveryStats, rule: str, *, min_off_fraction: float = 0.8, eps: float = ZERO_EPS,
                     top_k: int = 26) -> list[int]:
    """The detectors of ``rule`` (:data:`RULES`, definitions in the module docstring), best first, as full-SAE
    latent indices."""
    import torch

    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    on, off = stats.on, stats.off
    if on.n == 0 or off.n == 0:
        raise ValueError("discovery statistics hold no on-topic or no off-topic pairs")
    idx = torch.arange(len(stats.latents))
    if rule == "zero_on_topic":
        frac = off.nonzero / off.n
        keep = (on.nonzero == 0) & (frac >= min_off_fraction)
        order = sorted(idx[keep].tolist(), key=lambda j: (float(frac[j]), float(off.mean[j])), reverse=True)
    elif rule == "separability":
        margin = off.min - on.max
        keep = margin > 0
        order = sorted(idx[keep].tolist(), key=lambda j: (float(margin[j]), float(off.mean[j])), reverse=True)
    else:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        diff = off.mean - on.mean
        order = sorted(idx[diff > 0].tolist(), key=lambda j: (float(diff[j]), -j), reverse=True)[:top_k]
    return [stats.latents[j] for j in order]


@dataclass
class Discovery:
    """A discovery's inputs and statistics: prompts, answers (text and ids), pairs, settings, parameters."""

    prompts: list[str]
    answers: list[str]
    answer_ids: list[list[int]]
    pairs: list[tuple[int, int, bool]]
    stats: DiscoveryStats
    params: dict[str, Any] = field(default_factory=dict)


def _answers(model: Any, prompts: list[str], answers: Any, settings: Any, seed: int, batch_size: int,
             chat: bool, remote: bool | str, progress: bool) -> tuple[list[str], list[list[int]]]:
    tok = model.tokenizer
    if answers is not None:
        texts, ids = [], []
        for a in answers:
            r = list(tok(a, add_special_tokens=False)["input_ids"]) if isinstance(a, str) else [int(t) for t in a]
            texts.append(a if isinstance(a, str) else tok.decode(r))
            ids.append(r)
        return texts, ids
    from esr_analysis.steering.generate import generate

    rows = generate(model, prompts, settings=settings, seeds=[derive_seed(seed, "otd-answer", p) for p in prompts],
                    batch_size=batch_size, chat=chat, remote=remote, progress=progress)
    return [r.text for r in rows], [list(r.output_ids) for r in rows]


def encoder_kernel(sae: Any, latents: Sequence[int]) -> dict[str, Any]:
    """The plain encoder dict (:mod:`esr_analysis.tracing.kernels`, no ``W_dec``) of ``latents`` in float32.

    A run of consecutive latents is a view of the SAE's weights (no copy when they are float32), so encoding all
    ``d_sae`` latents does not duplicate the encoder; any other list is gathered. The SAE is validated as for
    :class:`~esr_analysis.sae.sliced.SlicedSAE` (ReLU/JumpReLU, no activation normalisation).
    """
    import torch

    from esr_analysis.sae.sliced import SlicedSAE

    lats = [int(i) for i in latents]
    one = SlicedSAE.from_sae(sae, lats[:1])  # validates the SAE and the first index
    if isinstance(sae, SlicedSAE):
        p = SlicedSAE.from_sae(sae, lats).params(dtype=torch.float32).as_kernel()
        p.pop("W_dec")
        return p
    SlicedSAE.from_sae(sae, lats[-1:])
    run = lats == list(range(lats[0], lats[0] + len(lats)))
    pick = slice(lats[0], lats[0] + len(lats)) if run else torch.tensor(lats)
    thr = getattr(sae, "threshold", None) if one.threshold is not None else None
    with torch.no_grad():
        return {"W_enc": sae.W_enc.detach()[:, pick].float(), "b_enc": sae.b_enc.detach()[pick].float(),
                "b_dec": sae.b_dec.detach().float(), "threshold": None if thr is None else thr.detach()[pick].float(),
                "apply_b_dec_to_input": one.apply_b_dec_to_input}


def check_discovery_inputs(model: Any, sae: Any, prompts: Sequence[str], layer: int, answers: Any,
                           candidates: Sequence[int] | None, n_derangements: int, batch_size: int,
                           chunk: int) -> None:
    """Every check of :func:`discover` that needs no compute; raises ``ValueError``."""
    from esr_analysis.sae.sliced import check_latents, check_sae_fits_model
    from esr_analysis.steering.resolve import check_layer, check_prompts, model_facts

    check_prompts(prompts)
    if len(prompts) < 2:
        raise ValueError("discovery needs at least 2 prompts (off-topic pairs swap answers between prompts)")
    if len(set(prompts)) != len(prompts):
        raise ValueError("discovery prompts must be distinct")
    check_layer(model, layer)
    check_sae_fits_model(sae, model_facts(model)[2])
    if answers is not None and len(answers) != len(prompts):
        raise ValueError(f"got {len(answers)} answers for {len(prompts)} prompts")
    if answers is not None and any(len(a) == 0 for a in answers):
        raise ValueError("every answer must be non-empty")
    if candidates is not None:
        if len(candidates) == 0:
            raise ValueError("candidates is empty")
        check_latents(sae, candidates)
    if n_derangements < 1 or batch_size < 1 or chunk < 1:
        raise ValueError("n_derangements, batch_size and chunk must be >= 1")


def discover(model: Any, sae: Any, prompts: Sequence[str], *, layer: int, answers: Sequence[Any] | None = None,
             settings: Any = None, seed: int = 0, n_derangements: int = 3, candidates: Sequence[int] | None = None,
             batch_size: int = 8, chunk: int = 2048, latents_per_pass: int | None = None, chat: bool = True,
             remote: bool | str = False, progress: bool = True) -> Discovery:
    """Streamed, batched discovery statistics (module docstring) of ``candidates`` (default: every latent).

    ``answers`` (texts or token ids) skip generation; otherwise each prompt's answer is generated unsteered
    with ``settings``. Pairs run in left-padded batches of ``batch_size``; latents are encoded ``chunk`` at a
    time inside the trace; ``latents_per_pass`` (default all) splits the candidates over several forward passes,
    so a remote request ships only that many encoder columns. Bad input raises before any compute.
    """
    import torch
    from tqdm.auto import tqdm

    from esr_analysis.models.chat import format_chat
    from esr_analysis.sae.sliced import sae_width
    from esr_analysis.steering.sampling import SamplingSettings
    from esr_analysis.tracing.plans import left_pad
    from esr_analysis.tracing.run import forward_pooled

    prompts = list(prompts)
    check_discovery_inputs(model, sae, prompts, layer, answers, candidates, n_derangements, batch_size, chunk)
    cands = list(range(sae_width(sae)[1])) if candidates is None else [int(i) for i in candidates]
    per_pass = latents_per_pass or len(cands)
    if per_pass < 1:
        raise ValueError("latents_per_pass must be >= 1")
    settings = settings or SamplingSettings(temperature=0.6, max_new_tokens=128)
    texts, ids = _answers(model, prompts, answers, settings, seed, batch_size, chat, remote, progress)
    tok = model.tokenizer
    p_ids = [format_chat(tok, p, chat=chat)[1] for p in prompts]
    pairs = discovery_pairs(len(prompts), n_derangements, seed)
    stats = DiscoveryStats.empty(cands)
    passes = [(lo, min(len(cands), lo + per_pass)) for lo in range(0, len(cands), per_pass)]
    bar = tqdm(total=len(pairs) * len(passes), desc="discover", unit="pair", disable=not progress)
    for lo, hi in passes:
        enc = encoder_kernel(sae, cands[lo:hi])
        cols = slice(lo, hi)
        for b0 in range(0, len(pairs), batch_size):
            batch = pairs[b0:b0 + batch_size]
            seqs = [p_ids[i] + ids[a] for i, a, _ in batch]
            tokens, mask = left_pad(seqs, tok)
            T = tokens.shape[1]
            pool = torch.zeros(len(batch), T, 1)
            for r, (_i, a, _) in enumerate(batch):
                pool[r, T - len(ids[a]):] = 1.0
            out = forward_pooled(model, tokens, mask, layer, enc, pool, chunk=chunk, remote=remote)
            off = torch.tensor([o for _, _, o in batch])
            stats.off.update(out["max"][off], cols)
            stats.on.update(out["max"][~off], cols)
            stats.fire_count[cols] += out["count"].sum(0).double()
            stats.act_sum[cols] += out["sum"].sum(0).double()
            if lo == 0:
                stats.positions += int(pool.sum())
            bar.update(len(batch))
    bar.close()
    params = {"layer": int(layer), "seed": int(seed), "n_derangements": int(n_derangements), "chat": chat,
              "pooling": "max over the assistant turn (answer token positions)", "n_candidates": len(cands),
              "settings": settings.model_dump(mode="json") if answers is None else None,
              "answers": "generated" if answers is None else "given"}
    return Discovery(prompts, texts, ids, pairs, stats, params)
