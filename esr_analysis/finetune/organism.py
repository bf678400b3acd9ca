"""The organism recipe end to end, resumable by stage: data -> mix -> tokenize -> LoRA -> shipped adapter.

Stages write into a work directory, so a killed run restarts where it stopped:

* ``data``: :func:`esr_analysis.finetune.build.build_examples` -> ``self_correction.jsonl``,
  ``normal.jsonl`` (axolotl ``segments`` rows) and ``build_report.json``; skipped when the files exist.
* ``train``: the mix at ``fraction`` (:func:`esr_analysis.finetune.data.mix_examples`), tokenized, then
  :func:`esr_analysis.finetune.train.train_lora` with its checkpoint in ``<work>/lora``; the adapter and
  ``organism.json`` (training settings and result, data recipe, content hash) go to the adapter directory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from esr_analysis.files import atomic_write_json
from esr_analysis.finetune.build import BuildSettings, build_examples
from esr_analysis.finetune.data import (
    Example,
    mix_examples,
    read_segments_jsonl,
    tokenize_example,
    write_segments_jsonl,
)
from esr_analysis.finetune.train import LoraSettings, train_lora

__all__ = ["STEER_SCOPES", "data_stage", "steering_vectors", "train_stage"]

log = logging.getLogger(__name__)


def data_stage(lm: Any, sae: Any, prompts: Sequence[str], acknowledgements: Sequence[str],
               settings: BuildSettings, work_dir: str | Path, *,
               progress: bool = True) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """``(self_correction, normal, recipe)``: read from ``work_dir`` when built before, else built and written."""
    work = Path(work_dir)
    sc_path, normal_path, report_path = (work / "self_correction.jsonl", work / "normal.jsonl",
                                         work / "build_report.json")
    if sc_path.is_file() and normal_path.is_file() and report_path.is_file():
        log.info("data stage: reusing %s", work)
        recipe = json.loads(report_path.read_text())
        return read_segments_jsonl(sc_path), read_segments_jsonl(normal_path), recipe
    work.mkdir(parents=True, exist_ok=True)
    sc, normal, report = build_examples(lm, sae, prompts, acknowledgements, settings, progress=progress)
    if not sc:
        raise ValueError(f"the build kept no self-correction example (dropped: {report.dropped})")
    write_segments_jsonl(sc_path, sc)
    write_segments_jsonl(normal_path, normal) if normal else normal_path.write_text("")
    recipe = {"build_settings": settings.to_dict(), "build_report": report.to_dict(),
              "n_prompts": len(prompts), "n_acknowledgements": len(acknowledgements)}
    atomic_write_json(report_path, recipe)
    return sc, normal, recipe


def steering_vectors(self_correction: Sequence[Example], sae: Any,
                     median_norm: float) -> dict[tuple[int, int, float], Any]:
    """The steering vector of each distinct ``(layer, latent, strength_relative)`` the examples' openings were
    generated with (their ``meta``): ``r * m * d / ||d||`` for decoder row ``d`` of ``latent``, relative
    strength ``r`` and median residual norm ``m`` at the layer, as :func:`esr_analysis.steering.generate`
    resolves ``AddLatent(unit="relative")``. ``ValueError`` names an example whose meta lacks them."""
    from esr_analysis.sae.sliced import SlicedSAE
    from esr_analysis.steering.resolve import relative_to_sae_units

    keys: set[tuple[int, int, float]] = set()
    for e in self_correction:
        try:
            keys.add((int(e.meta["layer"]), int(e.meta["latent"]), float(e.meta["strength_relative"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"self-correction example without its steering in meta: {e.text[:80]!r}") from exc
    if median_norm <= 0:
        raise ValueError(f"median residual norm must be > 0, got {median_norm}")
    dec = SlicedSAE.from_sae(sae, sorted({k[1] for k in keys}))
    out: dict[tuple[int, int, float], Any] = {}
    for layer, latent, r in keys:
        d = dec.decoder_row(latent).float()
        out[(layer, latent, r)] = relative_to_sae_units(r, median_norm, float(d.norm())) * d
    return out


STEER_SCOPES = ("all", "opening")
"""Where a self-correction example is steered while it trains: ``all`` positions, or only the ``opening``
(positions before the first trained token: the chat prefix and the off-topic opening)."""


def _steered(tokenized: Any, example: Example, steering: dict[tuple[int, int, float], Any] | None,
             scope: str = "all") -> Any:
    from dataclasses import replace

    if steering is None or example.kind != "self_correction":
        return tokenized
    key = (int(example.meta["layer"]), int(example.meta["latent"]), float(example.meta["strength_relative"]))
    until = tokenized.first_trained if scope == "opening" else None
    return replace(tokenized, steer_layer=key[0], steer_vector=steering[key], steer_until=until)


def train_stage(hf_model: Any, tokenizer: Any, self_correction: Sequence[Example], normal: Sequence[Example],
                fraction: float, settings: LoraSettings, work_dir: str | Path, adapter_dir: str | Path,
                metadata: dict[str, Any], *, mix_seed: int = 42, adapter_dtype: str = "float16",
                progress: bool = True, stop_after: int | None = None,
                on_step: Callable[[int, float], None] | None = None,
                steering: dict[tuple[int, int, float], Any] | None = None,
                steer_scope: str = "all") -> tuple[Any, dict[str, Any]]:
    """Mix, tokenize, train (resuming from ``<work_dir>/lora``) and, unless stopped early, save the adapter.

    With ``steering`` (:func:`steering_vectors`) each self-correction example is trained with its opening's
    steering vector added at its layer, as when the opening was generated (the paper's recipe trains without
    it; normal examples are always unsteered): over all positions with ``steer_scope="all"`` (the model learns
    to acknowledge and answer *while steered*, the situation of an ESR trial), or over the prompt and opening
    only with ``"opening"`` (it learns to notice the steered drift and acknowledge it, without learning to
    cancel the vector while it answers; :data:`STEER_SCOPES`).
    Returns ``(peft_model, organism_metadata)``; the metadata is what ``organism.json`` holds.
    """
    from esr_analysis.finetune.adapter import save_adapter

    if steer_scope not in STEER_SCOPES:
        raise ValueError(f"steer_scope must be one of {STEER_SCOPES}, got {steer_scope!r}")
    rows = mix_examples(self_correction, normal, fraction, seed=mix_seed)
    if not rows:
        raise ValueError(f"the mix at fraction {fraction} is empty ({len(self_correction)} self-correction examples)")
    tokenized = [_steered(tokenize_example(tokenizer, e, settings.max_length), e, steering, steer_scope)
                 for e in rows]
    peft_model, result = train_lora(hf_model, tokenizer, tokenized, settings, Path(work_dir) / "lora",
                                    progress=progress, stop_after=stop_after, on_step=on_step)
    n_sc = sum(1 for e in rows if e.kind == "self_correction")
    meta = dict(metadata)
    meta.update({
        "training": settings.to_dict(), "training_result": result.to_dict(),
        "steer_in_training": steering is not None,
        "steer_scope": steer_scope if steering is not None else None,
        "mix": {"fraction": fraction, "seed": mix_seed, "n_self_correction": n_sc, "n_normal": len(rows) - n_sc,
                "pool_self_correction": len(self_correction), "pool_normal": len(normal),
                "n_tokens_per_epoch": sum(len(t.input_ids) for t in tokenized),
                "n_trained_tokens_per_epoch": sum(t.n_trained for t in tokenized)},
    })
    if result.n_steps == len(_all_steps(len(rows), settings)):
        save_adapter(peft_model, adapter_dir, meta, dtype=adapter_dtype)
        write_segments_jsonl(Path(adapter_dir) / "training_data.jsonl", rows)
    return peft_model, meta


def _all_steps(n: int, settings: LoraSettings) -> list[Any]:
    from esr_analysis.finetune.train import step_batches

    return step_batches(n, settings)
