"""A scripted store run of recoveries for smoke tests and the SMALL notebook (tiny random models cannot recover).

:func:`write_demo_run` writes a normal run directory (:func:`esr_analysis.store.run.open_run`) whose trials have
hand-written responses: recoveries ("<off-topic sentence>. Wait, I made a mistake! <answer>.") graded as two
attempts scoring 10 then 80, and plain answers graded as one attempt scoring 90. Token ids are the tokenizer's
own (chat-formatted prompt, response tokens and an end-of-turn token), the steering record is a resolved
``add_latent`` in SAE units, so every episode replays like a generated one. Nothing here is a result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEMO_PROMPTS = ("How do you boil an egg?", "What is the area of a circle?", "How do you plant a tree?",
                "Explain how to make tea.", "How do you tie a shoelace?", "What is a budget?")
DEMO_DRIFTS = ("Kneeling and sitting are body poses.", "The harbour bridge was painted red.",
               "Volcanoes erupt with hot lava.", "The printing press changed books.",
               "Whales sing long songs.", "Chess openings control the centre.")
DEMO_CORRECTIONS = ("Wait, I made a mistake!", "Sorry, let me try again.", "Wait, that's not right.",
                    "Let me get back on track.")
DEMO_ANSWERS = ("Put the egg in boiling water for eight minutes.", "The area is pi times the radius squared.",
                "Dig a hole, set the tree in it and water it.", "Steep the tea leaves in hot water.",
                "Cross the laces, loop them and pull tight.", "A budget is a plan for spending money.")


def write_demo_run(directory: str | Path, tokenizer: Any, *, model_name: str, latent: int, layer: int,
                   strength: float, n_recoveries: int = 6, n_baseline: int = 4, sae_source: str | None = None
                   ) -> Path:
    """Write the scripted run (module docstring) to ``directory`` and return it."""
    from esr_analysis.models.chat import format_chat
    from esr_analysis.store.run import open_run
    from esr_analysis.store.schema import Layers, RunManifest, Trial

    manifest = RunManifest(experiment="exp1", model_id=model_name, layers=Layers(steer=layer, read=layer),
                           sae_source={"source": sae_source} if sae_source else None, judge_id="scripted")
    record = {"kind": "add_latent", "layer": layer, "scope": "all", "latent": latent, "unit": "sae",
              "strength_given": strength, "strength_sae": strength}
    end = tokenizer.eos_token_id
    with open_run(directory, manifest, overwrite=True, fsync=False) as run:
        for i in range(n_recoveries + n_baseline):
            k = i % len(DEMO_PROMPTS)
            prompt = DEMO_PROMPTS[k]
            if i < n_recoveries:
                first = DEMO_DRIFTS[k]
                second = f"{DEMO_CORRECTIONS[i % len(DEMO_CORRECTIONS)]} {DEMO_ANSWERS[k]}"
                response = f"{first} {second}"
                attempts = [{"text": first, "score": 10.0}, {"text": second, "score": 80.0}]
            else:
                response = DEMO_ANSWERS[k]
                attempts = [{"text": response, "score": 90.0}]
            chat_input, input_ids = format_chat(tokenizer, prompt)
            output_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
            output_ids += [end] if end is not None else []
            run.append(Trial(
                experiment="exp1", prompt=prompt, latent=latent, latent_label="demo", boost=strength, seed=i,
                layers=Layers(steer=layer), interventions=[record], key_extra={"demo": i}, chat_input=chat_input,
                response=response, input_ids=input_ids, output_ids=output_ids, meta={"model": model_name},
                grade={"attempts": attempts, "raw_response": None, "error": None, "judge_id": "scripted",
                       "rubric_hash": "scripted"},
            ))
    return Path(directory)
