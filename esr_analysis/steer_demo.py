"""A quick steered-generation demo on the embedded model: unsteered vs steered text, with the delta norm.

The direction is an SAE latent's decoder row when an SAE is given, else a contrastive "ocean" direction
(:mod:`esr_analysis.directions`). The reported *measured* delta norm is the mean L2 norm, over the
prompt positions, of the difference between the steered and unsteered residual at the steering layer,
read from the model in a teacher-forced pass; it should equal ``|strength| * ||direction||``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

DEMO_PROMPTS = (
    "Explain how to bake bread.",
    "How do you calculate the area of a circle?",
    "Explain how to write a thank-you note.",
)
OCEAN_TEXTS = (
    "The ocean waves crashed on the beach while whales swam far out at sea.",
    "Sailors crossed the deep blue sea, watching dolphins and sharks beneath the waves.",
    "Coral reefs and fish fill the warm tropical ocean near the island shore.",
    "The tide rolled in over the sand as seagulls cried above the salty water.",
)
NEUTRAL_TEXTS = (
    "The meeting was moved to Tuesday so that everyone could review the report.",
    "Please remember to sign the form and return it to the office by Friday.",
    "The software update fixes several bugs and improves overall performance.",
    "She organised the documents into folders and labelled each one carefully.",
)


def run(model_name: str = "qwen2.5-coder-0.5b-instruct", *, prompts: Sequence[str] = DEMO_PROMPTS,
        relative_strength: float = 0.6, max_new_tokens: int = 48, sae=None, latent: int | None = None,
        layer: int | None = None, printer=print) -> list[dict]:
    """Generate unsteered and steered answers for ``prompts`` and print them side by side."""
    from esr_analysis.directions import contrastive_direction
    from esr_analysis.generation import generate, median_residual_norm, read_residuals
    from esr_analysis.interventions import AddLatent, AddVector
    from esr_analysis.models import load_model, spec_of
    from esr_analysis.sampling import SamplingSettings

    lm = load_model(model_name)
    spec = spec_of(lm)
    layer = spec.steer_layer if layer is None else layer
    if sae is not None and latent is not None:
        iv = AddLatent(latent=latent, strength=relative_strength, layer=layer, unit="relative")
        what = f"SAE latent {latent}"
    else:
        direction = contrastive_direction(lm, OCEAN_TEXTS, NEUTRAL_TEXTS, layer)
        strength = relative_strength * median_residual_norm(lm, layer)
        iv = AddVector(vector=tuple(direction.tolist()), strength=strength, layer=layer, name="ocean-minus-neutral")
        what = "the contrastive 'ocean' direction"
    settings = SamplingSettings(max_new_tokens=max_new_tokens)
    plain = generate(lm, list(prompts), settings=settings, progress=False)
    steered = generate(lm, list(prompts), interventions=[iv], sae=sae, settings=settings, progress=False)
    before = read_residuals(lm, list(prompts), layer)
    after = read_residuals(lm, list(prompts), layer, interventions=[iv], sae=sae)
    measured = [float((a - b).norm(dim=-1).mean()) for a, b in zip(after, before, strict=True)]
    rec = steered[0].interventions[0]
    printer(f"Model {spec.name}: steering {what} at layer {layer}, strength {relative_strength} x median "
            f"residual norm ({rec.median_residual_norm or median_residual_norm(lm, layer):.1f}); "
            f"expected delta norm {rec.delta_norm:.2f}")
    out = []
    for p, a, b, m in zip(prompts, plain, steered, measured, strict=True):
        printer(f"\n=== {p}   (measured delta norm {m:.2f})")
        printer("  unsteered: " + textwrap.shorten(a.text.replace("\n", " "), 300))
        printer("  steered:   " + textwrap.shorten(b.text.replace("\n", " "), 300))
        out.append({"prompt": p, "unsteered": a.text, "steered": b.text, "measured_delta_norm": m,
                    "expected_delta_norm": rec.delta_norm})
    return out
