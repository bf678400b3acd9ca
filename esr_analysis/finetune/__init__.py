"""Fine-tuning a self-correcting model organism (the paper's exp 4, ``docs/organism.md``).

* :mod:`~esr_analysis.finetune.data`: examples as loss-flagged segments, token masks, the mix formula, files;
* :mod:`~esr_analysis.finetune.build`: the offline data build from the base model's own text;
* :mod:`~esr_analysis.finetune.train`: peft LoRA presets and the resumable training loop;
* :mod:`~esr_analysis.finetune.adapter`: shipped adapters (save, hash, merge);
* :mod:`~esr_analysis.finetune.organism`: the recipe end to end, resumable by stage.

Importing this package imports no heavy library (torch and peft are imported inside functions).
"""
