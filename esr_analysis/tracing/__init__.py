"""The only door to nnsight: every trace, generate and remote call of the toolkit goes through here.

* :mod:`.core`: importing nnsight safely, wrapping HF models, meta-device models, registering the package
  for remote (NDIF) execution.
* :mod:`.plans`: what a trace does at a layer (sliced-SAE parameters, layer plans, scope masks, left
  padding), built on the client.
* :mod:`.kernels`: the only code that runs inside a trace (edit maths on plain dicts and tensors, plain
  torch); the only module shipped by value with remote requests.
* :mod:`.sites`: the one map from a model to its components (decoder layers, block/attention/MLP outputs,
  per-head ``o_proj`` inputs, final norm, unembedding) for Llama, Qwen2, Gemma 2 and Gemma 3, and the helpers
  that read, write and capture a site inside a trace.
* :mod:`.run`: the traces themselves (batched generate, teacher-forced forward, residual replacement,
  shape scans).

Nothing outside this subpackage imports nnsight (a test checks it), and nothing here imports it at module
import time.
"""

from __future__ import annotations

from esr_analysis.tracing.core import (
    hf_module,
    import_nnsight,
    meta_model,
    register_kernels,
    wrap_model,
)
from esr_analysis.tracing.kernels import edit_delta, encode_slice, pool_slice, read_site, write_site
from esr_analysis.tracing.plans import (
    STEP0_SCOPES,
    LayerPlan,
    SliceParams,
    left_pad,
    step0_masks,
)
from esr_analysis.tracing.run import (
    forward_pooled,
    forward_with_plan,
    forward_with_residual_replaced,
    generate_with_plan,
    scan_shapes,
)
from esr_analysis.tracing.sites import (
    SITE_KINDS,
    ModelSites,
    Site,
    decoder_layers,
    find_sites,
    head_contributions,
    split_heads,
)

__all__ = [
    "SITE_KINDS",
    "STEP0_SCOPES",
    "LayerPlan",
    "ModelSites",
    "Site",
    "SliceParams",
    "edit_delta",
    "encode_slice",
    "decoder_layers",
    "find_sites",
    "forward_with_plan",
    "forward_pooled",
    "forward_with_residual_replaced",
    "generate_with_plan",
    "head_contributions",
    "hf_module",
    "import_nnsight",
    "left_pad",
    "meta_model",
    "pool_slice",
    "read_site",
    "register_kernels",
    "scan_shapes",
    "split_heads",
    "step0_masks",
    "wrap_model",
    "write_site",
]
