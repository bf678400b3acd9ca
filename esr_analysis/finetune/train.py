"""LoRA fine-tuning with peft: presets, a deterministic resumable loop, logits only where labels are set.

Definitions (``docs/method.md#organism``)
-----------------------------------------
* **Presets** (:data:`PRESETS`): ``paper`` is the authors' exp 4 recipe (LoRA r 32, alpha 16, dropout 0.05 on
  every linear layer, lr 2e-4 with cosine decay after 10 linear warm-up steps, 4 epochs, effective batch 8 =
  micro-batch 2 x 4 accumulation, weight decay 0); ``cpu`` is sized for 2 CPU cores (r 16, alpha 32, lr 3e-4,
  5 warm-up steps, 3 epochs, micro-batch 4 x 2, sequences cut at 512 tokens).
* **Order**: epoch ``e`` visits the examples in the permutation ``random.Random(derive_seed(seed, "epoch", e))``;
  consecutive ``micro_batch`` examples form a micro-batch (right-padded), ``grad_accum`` micro-batches one
  optimizer step (the last step of an epoch may have fewer).
* **Loss** of a step: the sum of next-token cross-entropies over the step's trained positions (labels not
  ``-100``) divided by their number. Only those positions' hidden states go through ``lm_head``, so the
  vocabulary-sized logits exist for trained tokens only (memory).
* **Steering while training** (optional): a row with a ``steer_vector`` gets it added to the output of
  decoder layer ``steer_layer`` (a forward hook), as the steering was on when its opening was generated: at
  every position, or only at positions before ``steer_until`` (the organism's "opening" scope: the prompt and
  the off-topic opening, so the first acknowledgement token is predicted from a steered position and the
  recovery after it trains unsteered).
* **Determinism and resume**: before each optimizer step the torch RNG (LoRA dropout) is seeded with
  ``derive_seed(seed, "step", step)``; every ``checkpoint_every`` steps the LoRA weights, the optimizer and
  scheduler state and the loss history are written atomically to ``<out>/checkpoint``. A run killed at any
  moment and started again resumes from the last checkpoint and reproduces the same loss curve.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from esr_analysis.finetune.data import IGNORE_INDEX, TokenizedExample
from esr_analysis.seeds import derive_seed

__all__ = ["PRESETS", "LoraResult", "LoraSettings", "lora_config", "step_batches", "train_lora"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA and optimisation settings (see :data:`PRESETS`)."""

    name: str = "custom"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    lr: float = 3e-4
    warmup_steps: int = 5
    epochs: int = 3
    micro_batch: int = 4
    grad_accum: int = 2
    max_length: int = 512
    weight_decay: float = 0.0
    checkpoint_every: int = 5
    seed: int = 42

    def check(self) -> None:
        for field in ("r", "epochs", "micro_batch", "grad_accum", "max_length", "checkpoint_every"):
            if getattr(self, field) < 1:
                raise ValueError(f"LoraSettings.{field} must be >= 1")
        if not (self.lr > 0 and self.alpha > 0 and 0 <= self.dropout < 1 and self.warmup_steps >= 0):
            raise ValueError("need lr > 0, alpha > 0, 0 <= dropout < 1, warmup_steps >= 0")

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["effective_batch"] = self.effective_batch
        return d


PRESETS: dict[str, LoraSettings] = {
    "paper": LoraSettings(name="paper", r=32, alpha=16, dropout=0.05, lr=2e-4, warmup_steps=10, epochs=4,
                           micro_batch=2, grad_accum=4, max_length=4096, checkpoint_every=20),
    "cpu": LoraSettings(name="cpu", r=16, alpha=32, dropout=0.05, lr=3e-4, warmup_steps=5, epochs=3,
                         micro_batch=4, grad_accum=2, max_length=512, checkpoint_every=5),
}
"""``paper``: the authors' exp 4 recipe; ``cpu``: the 2-core preset (module docstring)."""


@dataclass
class LoraResult:
    """Per-step losses, token counts and timing of a (possibly resumed) run."""

    losses: list[float]
    n_steps: int
    n_tokens: int
    n_trained_tokens: int
    seconds: float
    resumed_from_step: int

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens_per_second"] = self.tokens_per_second
        return d


def lora_config(settings: LoraSettings) -> Any:
    """The peft ``LoraConfig`` of ``settings`` (causal LM, bias off)."""
    from peft import LoraConfig

    targets = settings.target_modules if isinstance(settings.target_modules, str) else list(settings.target_modules)
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")


def step_batches(n_examples: int, settings: LoraSettings) -> list[list[list[int]]]:
    """Every optimizer step's micro-batches as lists of example indices, in training order (module doc)."""
    steps: list[list[list[int]]] = []
    for epoch in range(settings.epochs):
        order = list(range(n_examples))
        random.Random(derive_seed(settings.seed, "epoch", epoch)).shuffle(order)
        micro = [order[i:i + settings.micro_batch] for i in range(0, n_examples, settings.micro_batch)]
        steps += [micro[i:i + settings.grad_accum] for i in range(0, len(micro), settings.grad_accum)]
    return steps


def _collate(rows: Sequence[TokenizedExample], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    T = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids)
        labels[i, :n] = torch.tensor(r.labels)
        mask[i, :n] = 1
    return ids, labels, mask


def _summed_loss(peft_model: Any, ids: Any, labels: Any, mask: Any) -> Any:
    """Sum of next-token cross-entropies over positions whose next label is set; logits only there.

    The decoder stack and the unembedding are found by :func:`~esr_analysis.tracing.sites.find_sites` (so any
    supported architecture trains); a final logit soft-cap in the config (Gemma 2) is applied as the model does.
    """
    import torch
    import torch.nn.functional as F

    from esr_analysis.tracing.sites import find_sites

    inner = peft_model.get_base_model()
    sites = find_sites(inner)
    body = inner.get_submodule(sites.body) if sites.body else inner
    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = inner.get_submodule(sites.unembed)(hidden[:, :-1][keep])
    config: Any = getattr(inner, "config", None)
    text_config: Any = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text_config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum")


def _steering_hook(peft_model: Any, rows: Sequence[TokenizedExample]) -> Any:
    """Register a forward hook that adds each row's ``steer_vector`` to the output hidden states of decoder
    layer ``steer_layer`` at positions ``< steer_until`` (every position when it is None; rows without a vector
    get zero); ``None`` when no row is steered. The caller removes the returned handle after the forward and
    backward passes."""
    import torch

    from esr_analysis.tracing.sites import find_sites

    steered = [r for r in rows if r.steer_vector is not None]
    if not steered:
        return None
    layers = {r.steer_layer for r in steered}
    index = next(iter(layers))
    if len(layers) != 1 or index is None:
        raise ValueError(f"a micro-batch's steered rows must share one steer_layer, got {sorted(map(str, layers))}")
    inner = peft_model.get_base_model()
    layer = inner.get_submodule(find_sites(inner).layers)[index]
    T = max(len(r.input_ids) for r in rows)
    zero = torch.zeros_like(torch.as_tensor(steered[0].steer_vector, dtype=torch.float32))
    addend = torch.stack([torch.as_tensor(r.steer_vector, dtype=torch.float32) if r.steer_vector is not None
                          else zero for r in rows])[:, None, :].repeat(1, T, 1)
    for i, r in enumerate(rows):
        if r.steer_until is not None:
            if r.steer_until < 0:
                raise ValueError(f"steer_until must be >= 0, got {r.steer_until}")
            addend[i, r.steer_until:] = 0.0

    def add(_module: Any, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] + addend.to(output[0].dtype), *output[1:])
        return output + addend.to(output.dtype)

    return layer.register_forward_hook(add)


def _lr_lambda(settings: LoraSettings, total: int):
    def f(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / (settings.warmup_steps + 1)
        progress = (step - settings.warmup_steps) / max(1, total - settings.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def _save_checkpoint(out_dir: Path, peft_model: Any, optimizer: Any, scheduler: Any, step: int,
                     losses: list[float], counts: tuple[int, int, float]) -> None:
    import torch
    from peft import get_peft_model_state_dict

    from esr_analysis.files import atomic_directory

    with atomic_directory(out_dir / "checkpoint") as tmp:
        torch.save({"lora": get_peft_model_state_dict(peft_model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "losses": losses,
                    "n_tokens": counts[0], "n_trained": counts[1], "seconds": counts[2]}, tmp / "state.pt")
        (tmp / "step.json").write_text(json.dumps({"step": step}))


def _load_checkpoint(out_dir: Path) -> dict[str, Any] | None:
    import torch

    path = out_dir / "checkpoint" / "state.pt"
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, weights_only=False)
    return state


def train_lora(hf_model: Any, tokenizer: Any, examples: Sequence[TokenizedExample], settings: LoraSettings,
               out_dir: str | Path, *, progress: bool = True, stop_after: int | None = None,
               on_step: Callable[[int, float], None] | None = None) -> tuple[Any, LoraResult]:
    """Train a LoRA adapter on ``examples`` (module docstring); returns ``(peft_model, result)``.

    ``out_dir`` holds the checkpoint; if one is there the run resumes from it (same settings and examples
    expected: a mismatch in the number of steps raises ``ValueError``). ``stop_after`` stops after that many
    optimizer steps (tests and sizing); ``on_step(step, loss)`` is called after each step is checkpointed (if due).
    The base model's weights are frozen; only LoRA weights train.
    """
    import torch
    from peft import get_peft_model, set_peft_model_state_dict
    from tqdm.auto import tqdm

    settings.check()
    if not examples:
        raise ValueError("no training examples")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(derive_seed(settings.seed, "init"))
    hf_model.requires_grad_(False)
    model = get_peft_model(hf_model, lora_config(settings))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps = step_batches(len(examples), settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(settings, len(steps)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: list[float] = []
    n_tokens = n_trained = 0
    seconds = 0.0
    start = 0
    state = _load_checkpoint(out)
    if state is not None:
        if state["step"] > len(steps):
            raise ValueError(f"checkpoint in {out} is at step {state['step']} but this run has {len(steps)} steps")
        set_peft_model_state_dict(model, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, losses = int(state["step"]), list(state["losses"])
        n_tokens, n_trained, seconds = int(state["n_tokens"]), int(state["n_trained"]), float(state["seconds"])
        log.info("resuming from step %d of %d (%s)", start, len(steps), out / "checkpoint")
    end = len(steps) if stop_after is None else min(len(steps), stop_after)
    bar = tqdm(total=len(steps), initial=start, desc=f"lora {settings.name}", unit="step", disable=not progress)
    for step in range(start, end):
        t0 = time.monotonic()
        torch.manual_seed(derive_seed(settings.seed, "step", step))
        micro = [[examples[i] for i in mb] for mb in steps[step]]
        n_step_trained = sum(max(0, sum(1 for t in r.labels[1:] if t != IGNORE_INDEX)) for mb in micro for r in mb)
        total = 0.0
        optimizer.zero_grad(set_to_none=True)
        for rows in micro:
            ids, labels, mask = _collate(rows, pad_id)
            hook = _steering_hook(model, rows)
            try:
                loss = _summed_loss(model, ids, labels, mask) / max(1, n_step_trained)
                loss.backward()
            finally:
                if hook is not None:
                    hook.remove()
            total += float(loss.detach())
            n_tokens += int(mask.sum())
        optimizer.step()
        scheduler.step()
        losses.append(total)
        n_trained += n_step_trained
        seconds += time.monotonic() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}", tok_s=f"{n_tokens / max(seconds, 1e-9):.0f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == end:
            _save_checkpoint(out, model, optimizer, scheduler, step + 1, losses, (n_tokens, n_trained, seconds))
        if on_step is not None:
            on_step(step, total)
    bar.close()
    model.eval()
    result = LoraResult(losses=losses, n_steps=len(losses), n_tokens=n_tokens, n_trained_tokens=n_trained,
                         seconds=seconds, resumed_from_step=start)
    return model, result

