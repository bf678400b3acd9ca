"""Training SAEs on harvested residuals with sae-lens's own :class:`sae_lens.SAETrainer`, and measuring them.

Activations come from ``scripts/harvest_activations.py`` (fp16 shards ``{"acts", "tokens", "drop_first"}``).
This module only feeds them to sae-lens (an infinite, reshuffled iterator of float32 batches) and measures
the result; the optimisation itself is sae-lens's.

Definitions (used by the quality report)
----------------------------------------
* **Sink positions**: the toolkit's one attention-sink rule,
  :func:`esr_analysis.steering.residuals.ordinary_positions`: the first position of every window (the
  harvest already drops it) and any position whose residual norm exceeds 10 times the median norm of the
  set (rare; e.g. the token after a special token). Sinks are excluded from training and from FVE/L0, and
  left unreplaced in the CE measurement.
* **FVE** (fraction of variance explained) ``= 1 - Σ‖x - x̂‖² / Σ‖x - x̄‖²`` over tokens, ``x̄`` the mean.
* **L0**: mean number of latents with a non-zero activation per token.
* **Dead latent**: a latent that is zero on every token of the measured set.
* **CE loss recovered** ``= (CE_zero - CE_sae) / (CE_zero - CE_clean)``: next-token cross-entropy of the
  model when the block output is replaced by the SAE reconstruction (``CE_sae``), by zeros
  (``CE_zero``, the floor), or left alone (``CE_clean``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esr_analysis.steering.residuals import SINK_NORM_FACTOR, SINK_PREFIX

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class Activations:
    """Residuals loaded from shards: ``acts [N, D]`` (fp16, sinks kept) with their origin.

    ``window[n]`` and ``pos[n]`` locate token ``n`` in ``tokens [W, T]`` (``pos`` counts from the window start).
    """

    acts: torch.Tensor
    tokens: torch.Tensor
    window: torch.Tensor
    pos: torch.Tensor

    def __len__(self) -> int:
        return int(self.acts.shape[0])


def load_shards(directory: str | Path, max_tokens: int | None = None) -> Activations:
    """Load the harvest shards of one split (``shard_*.pt`` in name order) into memory."""
    import torch

    files = sorted(Path(directory).glob("shard_*.pt"))
    if not files:
        raise FileNotFoundError(f"no activation shards in {directory}; run scripts/harvest_activations.py")
    accs, toks, wins, poss = [], [], [], []
    n_win = n_tok = 0
    for f in files:
        d = torch.load(f, weights_only=True)
        a = d["acts"]  # [w, T', D]
        w, tp, dim = a.shape
        drop = int(d["drop_first"])
        accs.append(a.reshape(-1, dim))
        toks.append(d["tokens"])
        wins.append((torch.arange(w) + n_win).repeat_interleave(tp))
        poss.append((torch.arange(tp) + drop).repeat(w))
        n_win += w
        n_tok += w * tp
        if max_tokens is not None and n_tok >= max_tokens:
            break
    out = Activations(torch.cat(accs), torch.cat(toks), torch.cat(wins), torch.cat(poss))
    if max_tokens is not None and len(out) > max_tokens:
        out = Activations(out.acts[:max_tokens], out.tokens, out.window[:max_tokens], out.pos[:max_tokens])
    return out


def activation_batches(acts: torch.Tensor, batch_size: int, *, seed: int = 0,
                       device: str = "cpu") -> Iterator[torch.Tensor]:
    """Endless float32 batches ``[batch_size, D]`` of ``acts``, reshuffled every epoch."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = acts.shape[0]
    if n < batch_size:
        raise ValueError(f"only {n} activations for a batch of {batch_size}")
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - batch_size + 1, batch_size):
            yield acts[perm[i:i + batch_size]].to(device=device, dtype=torch.float32)


@dataclass
class TrainSettings:
    """Hyper-parameters of one SAE training run (sae-lens Standard/L1 or JumpReLU SAE)."""

    d_sae: int = 8192
    architecture: str = "standard"  # "standard" (ReLU + L1) or "jumprelu"
    l1_coefficient: float = 5.0
    l0_coefficient: float = 1.0  # jumprelu only
    total_samples: int = 1_000_000
    batch_size: int = 4096
    lr: float = 4e-4
    lr_end_fraction: float = 0.1
    lr_warm_up_steps: int = 10
    l1_warm_up_fraction: float = 0.05
    seed: int = 0
    n_batches_for_norm_estimate: int = 20
    max_seconds: float | None = None  # stop early (after the current step) once training ran this long
    lr_scheduler: str = "cosineannealing"  # "constant" suits a time-limited run
    hook_name: str = ""
    model_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_sae(acts: torch.Tensor, settings: TrainSettings, *, device: str = "cpu"):
    """Train an SAE on ``acts [N, D]`` with :class:`sae_lens.SAETrainer`; returns the *inference* SAE.

    Training normalises inputs to expected norm ``sqrt(D)`` (``expected_average_only_in``); sae-lens folds
    that factor into the weights at the end, so the returned SAE encodes raw residuals
    (``cfg.normalize_activations == "none"``).
    """
    import tempfile

    import torch
    from sae_lens import SAE, SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    torch.manual_seed(settings.seed)
    d_in = int(acts.shape[1])
    steps = max(1, settings.total_samples // settings.batch_size)
    common = dict(d_in=d_in, d_sae=settings.d_sae, normalize_activations="expected_average_only_in",
                  device=device)
    if settings.architecture == "standard":
        from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig

        sae = StandardTrainingSAE(StandardTrainingSAEConfig(
            **common, l1_coefficient=settings.l1_coefficient,
            l1_warm_up_steps=int(settings.l1_warm_up_fraction * steps)))
    elif settings.architecture == "jumprelu":
        from sae_lens import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig

        sae = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(
            **common, l0_coefficient=settings.l0_coefficient,
            l0_warm_up_steps=int(settings.l1_warm_up_fraction * steps)))
    else:
        raise ValueError(f"architecture must be 'standard' or 'jumprelu' (sliceable), not {settings.architecture!r}")
    sae.cfg.metadata.hook_name = settings.hook_name
    sae.cfg.metadata.model_name = settings.model_name
    cfg = SAETrainerConfig(
        total_training_samples=steps * settings.batch_size, train_batch_size_samples=settings.batch_size,
        lr=settings.lr, lr_end=settings.lr * settings.lr_end_fraction, lr_scheduler_name=settings.lr_scheduler,
        lr_warm_up_steps=settings.lr_warm_up_steps, device=device,
        n_batches_for_norm_estimate=settings.n_batches_for_norm_estimate,
        dead_feature_window=max(50, steps // 4), feature_sampling_window=max(50, steps // 4),
        logger=LoggingConfig(log_to_wandb=False))
    batches = activation_batches(acts, settings.batch_size, seed=settings.seed, device=device)
    holder: dict[str, Any] = {}

    def provider() -> Iterator[torch.Tensor]:
        import time

        t0 = time.monotonic()
        for b in batches:
            tr = holder.get("trainer")
            if settings.max_seconds is not None and tr is not None and time.monotonic() - t0 > settings.max_seconds:
                # end fit()'s loop after this step (its condition is n_training_samples < total)
                tr.cfg.total_training_samples = tr.n_training_samples + settings.batch_size
            yield b

    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=provider())
    holder["trainer"] = trainer
    trained = trainer.fit()
    settings.samples_trained = int(trainer.n_training_samples)  # type: ignore[attr-defined]
    if trained.cfg.normalize_activations != "none":  # pragma: no cover - sae-lens folds it in fit()
        raise RuntimeError("sae-lens did not fold the activation scaling into the weights")
    with tempfile.TemporaryDirectory() as tmp:
        trained.save_inference_model(tmp)
        out = SAE.load_from_disk(tmp, device=device)
    out.cfg.metadata.hook_name = settings.hook_name
    out.cfg.metadata.model_name = settings.model_name
    return out


def reconstruction_stats(sae, acts: torch.Tensor, *, chunk: int = 4096) -> dict[str, Any]:
    """FVE, mean L0, dead-latent fraction and per-latent firing counts of ``sae`` on ``acts [N, D]``.

    Returns ``{"fve", "mean_l0", "dead_fraction", "n_tokens"}`` and (key ``"fire_counts"``) a tensor.
    """
    import torch

    x_all = acts.float()
    mean = x_all.mean(0)
    sse = sst = 0.0
    l0 = 0.0
    fires = torch.zeros(int(sae.cfg.d_sae), dtype=torch.long)
    with torch.no_grad():
        for i in range(0, x_all.shape[0], chunk):
            x = x_all[i:i + chunk]
            f = sae.encode(x)
            xh = sae.decode(f)
            sse += float(((x - xh) ** 2).sum())
            sst += float(((x - mean) ** 2).sum())
            active = f > 0
            l0 += float(active.sum())
            fires += active.sum(0).cpu()
    n = x_all.shape[0]
    return {"fve": 1 - sse / sst, "mean_l0": l0 / n, "dead_fraction": float((fires == 0).float().mean()),
            "n_tokens": n, "fire_counts": fires}


def ce_loss_recovered(lm, sae, layer: int, tokens: torch.Tensor, *, drop_first: int = SINK_PREFIX,
                      batch_size: int = 4, sink_factor: float = SINK_NORM_FACTOR) -> dict[str, float]:
    """CE loss recovered by ``sae`` at block ``layer`` on token windows ``tokens [W, T]`` (see module doc).

    The first ``drop_first`` positions and sink positions keep their original residual in all three runs.
    The loss averages next-token cross-entropy over positions ``drop_first .. T-2``.
    """
    import torch
    import torch.nn.functional as F

    from esr_analysis.steering.residuals import ordinary_positions, residual_batch
    from esr_analysis.tracing.run import forward_with_residual_replaced

    totals = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    n = 0
    n_sink = 0
    for i in range(0, tokens.shape[0], batch_size):
        ids = tokens[i:i + batch_size].long()
        mask = torch.ones_like(ids)
        h = residual_batch(lm, ids, mask, layer)
        keep = ordinary_positions(h, mask, prefix=drop_first, factor=sink_factor)
        n_sink += int((~keep[:, drop_first:]).sum())
        with torch.no_grad():
            recon = sae.decode(sae.encode(h))
        variants = {"clean": None, "sae": torch.where(keep[..., None], recon, h),
                    "zero": torch.where(keep[..., None], torch.zeros_like(h), h)}
        targets = ids[:, drop_first + 1:]
        for name, new in variants.items():
            logits = forward_with_residual_replaced(lm, ids, mask, layer, new)
            lp = F.cross_entropy(logits[:, drop_first:-1].float().reshape(-1, logits.shape[-1]),
                                 targets.reshape(-1), reduction="sum")
            totals[name] += float(lp)
            del logits
        n += targets.numel()
    ce = {k: v / n for k, v in totals.items()}
    denom = ce["zero"] - ce["clean"]
    rec = (ce["zero"] - ce["sae"]) / denom if denom > 0 else math.nan
    return {"ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero": ce["zero"], "ce_loss_recovered": rec,
            "n_predictions": n, "n_sink_positions_unreplaced": n_sink}
