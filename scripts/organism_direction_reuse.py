"""Does the organism reuse a base-model direction? (Ward et al. 2025's test, issue 11 point 7.)

1. From the organism's steered evaluation transcripts (``scripts/evaluate_organism.py``, exp 1), take the
   responses with restart language. Teacher-force each [prompt + response] through the organism, unsteered,
   and read layer ``--layer``. The **restart direction** is the mean residual at the first token of each
   restart phrase minus the mean residual at every other response position (ordinary positions only), scaled
   to unit norm. The same contrast is read in the **base** model on the same texts (cosine with the organism's,
   against contrasts of random position sets of the same size as a control).
2. Steer the **base** model with that direction (``AddVector``, all positions) at ``--strengths`` times the
   median residual norm on the held-out organism prompts, and, as controls, with no steering and with a random
   unit direction of the same norm (seeded). Count responses with restart language
   (:func:`esr_analysis.judge.restart.has_restart`).

Writes ``data/adapters/<name>/direction_reuse.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from esr_analysis.paths import DATA_DIR


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--organism", default="qwen2.5-coder-0.5b-instruct-sc70")
    ap.add_argument("--runs", type=Path, default=Path("runs") / "organism-eval-v2")
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--strengths", default="0.25,0.5,1.0,2.0")
    ap.add_argument("--n-prompts", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from esr_analysis.experiments.prompts import load_prompts
    from esr_analysis.files import atomic_write_json
    from esr_analysis.finetune.adapter import adapter_dir
    from esr_analysis.judge.restart import find_restarts, has_restart
    from esr_analysis.models.loading import load_model
    from esr_analysis.models.registry import get_spec
    from esr_analysis.steering import AddVector, SamplingSettings, generate, read_residuals
    from esr_analysis.steering.residuals import median_residual_norm, ordinary_positions
    from esr_analysis.store.read import read_trials

    org = get_spec(args.organism)
    trials, _ = read_trials(args.runs / org.name / "organism" / "exp1")
    episodes = [t for t in trials if t.response and has_restart(t.response)]
    if not episodes:
        raise SystemExit("no organism transcript with restart language; nothing to contrast")
    organism = load_model(org.name)
    tok = organism.tokenizer
    sequences, marked = [], []  # per episode: [prompt + response] ids and the restart-phrase positions in it
    for t in episodes:
        prompt_ids = list(t.input_ids or [])
        resp_ids = list(t.output_ids or [])
        # character offset of each response token's start, to map restart phrases to tokens
        starts, pos = [], 0
        for i in range(len(resp_ids)):
            starts.append(pos)
            pos = len(tok.decode(resp_ids[: i + 1], skip_special_tokens=True))
        text = tok.decode(resp_ids, skip_special_tokens=True)
        marks = {max(i for i, s in enumerate(starts) if s <= m.start) for m in find_restarts(text)}
        sequences.append(prompt_ids + resp_ids)
        marked.append(({len(prompt_ids) + i for i in marks}, len(prompt_ids)))

    def positions(lm):
        """Residuals at the ordinary response positions, and which of them start a restart phrase."""
        rows, is_restart = [], []
        for ids, (marks, start) in zip(sequences, marked, strict=True):
            h = read_residuals(lm, [ids], args.layer)[0]
            keep = ordinary_positions(h[None])[0]
            for p in range(start, len(ids)):
                if keep[p]:
                    rows.append(h[p])
                    is_restart.append(p in marks)
        return torch.stack(rows), torch.tensor(is_restart)

    def contrast(h, sel):
        d = h[sel].mean(0) - h[~sel].mean(0)
        return d / d.norm()

    h_org, is_restart = positions(organism)
    restart_rows, other_rows = h_org[is_restart], h_org[~is_restart]
    direction = contrast(h_org, is_restart)
    del organism

    base = load_model(org.base_model)
    norm = median_residual_norm(base, args.layer)
    # The same contrast read in the base model on the same text: does the base already separate those positions
    # along that direction? Control: contrasts of random position sets of the same size (both models share
    # most of their residual geometry, so any contrast agrees to some degree).
    h_base, _ = positions(base)
    base_direction = contrast(h_base, is_restart)
    g = torch.Generator().manual_seed(args.seed)
    control = []
    for _ in range(50):
        sel = torch.zeros_like(is_restart)
        sel[torch.randperm(len(sel), generator=g)[: int(is_restart.sum())]] = True
        control.append(float(contrast(h_org, sel) @ contrast(h_base, sel)))
    geometry = {"cosine_organism_vs_base_restart_direction": float(direction @ base_direction),
                "cosine_random_position_contrasts": {"n": len(control), "mean": float(torch.tensor(control).mean()),
                                                     "max": max(control)},
                "base_projection_restart_minus_other": float((h_base[is_restart] @ direction).mean()
                                                             - (h_base[~is_restart] @ direction).mean()),
                "organism_projection_restart_minus_other": float((h_org[is_restart] @ direction).mean()
                                                                 - (h_org[~is_restart] @ direction).mean())}
    print(geometry, flush=True)
    gen = torch.Generator().manual_seed(args.seed)
    random_dir = torch.randn(direction.shape[0], generator=gen)
    random_dir = random_dir / random_dir.norm()
    prompts = load_prompts(DATA_DIR / "prompts" / "finetune_heldout_prompts.txt")[: args.n_prompts]
    settings = SamplingSettings(temperature=0.6, repetition_penalty=1.1, max_new_tokens=args.max_new_tokens)
    out: dict = {"organism": org.name, "base": org.base_model, "layer": args.layer, "n_episodes": len(episodes),
                 "n_restart_positions": len(restart_rows), "n_other_positions": len(other_rows),
                 "median_residual_norm": norm, "n_prompts": len(prompts), "geometry": geometry, "conditions": {},
                 "command": "python scripts/organism_direction_reuse.py " + " ".join(argv or sys.argv[1:])}
    conditions: dict[str, list] = {"no_steering": []}
    for s in (float(x) for x in args.strengths.split(",")):
        conditions[f"restart_dir_{s}"] = [AddVector(vector=tuple(direction.tolist()), strength=s * norm,
                                                    layer=args.layer, name="organism restart direction")]
        conditions[f"random_dir_{s}"] = [AddVector(vector=tuple(random_dir.tolist()), strength=s * norm,
                                                   layer=args.layer, name="random direction")]
    for name, iv in conditions.items():
        res = generate(base, prompts, interventions=iv or None, settings=settings, seeds=args.seed, batch_size=20)
        n_restart = sum(has_restart(r.text) for r in res)
        out["conditions"][name] = {"restart_rate": n_restart / len(res), "n": len(res), "n_restart": n_restart,
                                   "examples": [r.text for r in res if has_restart(r.text)][:3]}
        print(name, n_restart, "/", len(res), flush=True)
    atomic_write_json(adapter_dir(org.name) / "direction_reuse.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
