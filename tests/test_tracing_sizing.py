"""Request sizes measured without sending (``tracing/sizing.py``): the measured blob is exactly the one nnsight's
remote backend would post for the same call, nothing runs or is sent, and the model is usable afterwards."""

from __future__ import annotations

import pytest
import torch

from esr_analysis.steering.generate import generate
from esr_analysis.steering.interventions import AblateLatents, AddLatent
from esr_analysis.steering.residuals import remember_median_norm
from esr_analysis.steering.results import LatentCapture
from esr_analysis.steering.sampling import SamplingSettings
from esr_analysis.tracing.sizing import RequestPlanned, measure_request, sizing

PROMPTS = ["Explain how to bake bread.", "How do you calculate the area of a circle?"]
SETTINGS = SamplingSettings(temperature=0.7, max_new_tokens=4, min_new_tokens=4)


def _kwargs(sae):
    rows = [[AddLatent(latent=4, strength=3.0, layer=0), AblateLatents(latents=(2, 3), layer=1)],
            [AddLatent(latent=9, strength=-2.0, layer=0)]]
    return dict(interventions=rows, sae=sae, settings=SETTINGS, seeds=[1, 2],
                capture=LatentCapture(latents=(1, 2, 7), layer=1), progress=False)


class _Posted(Exception):
    pass


def _posted_size(lm, monkeypatch, call, *args, **kwargs) -> int:
    """The size of the blob nnsight's own RemoteBackend serialises for the call, stopped before its POST."""
    from nnsight.intervention.backends.remote import RemoteBackend

    seen: list[int] = []

    def request(self, request, tracer):
        seen.append(len(self._serialize(tracer)))
        raise _Posted

    monkeypatch.setattr(RemoteBackend, "request", request)
    monkeypatch.setattr(type(lm), "to_model_key", lambda self: "tiny-llama")  # an in-memory model has no repo id
    with pytest.raises(_Posted):
        call(*args, **kwargs)
    monkeypatch.undo()
    return seen[0]


@pytest.mark.parametrize("compress", [False, True])
def test_the_measured_request_is_the_one_the_remote_backend_posts(tiny_lm, tiny_sae, monkeypatch, compress):
    from esr_analysis.tracing import import_nnsight

    nnsight = import_nnsight()
    monkeypatch.setattr(nnsight.CONFIG.API, "COMPRESS", compress)
    remember_median_norm(tiny_lm, 0, 1.0)  # the generate request itself, not the norm pass before it
    size = measure_request(tiny_lm, generate, tiny_lm, PROMPTS, remote=True, **_kwargs(tiny_sae))
    posted = _posted_size(tiny_lm, monkeypatch, generate, tiny_lm, PROMPTS, remote=True, **_kwargs(tiny_sae))
    monkeypatch.setattr(nnsight.CONFIG.API, "COMPRESS", compress)
    assert size.compressed is compress
    if compress:  # zstd of a pickle holding object ids: the same length to within a few bytes
        assert abs(size.sent_bytes - posted) <= 0.01 * posted and size.sent_bytes < size.raw_bytes
    else:
        assert size.sent_bytes == size.raw_bytes == posted
    remember_median_norm(tiny_lm, 0, None)


def test_a_larger_payload_is_measured_larger(tiny_lm, tiny_sae):
    remember_median_norm(tiny_lm, 0, 1.0)
    kw = _kwargs(tiny_sae)
    small = measure_request(tiny_lm, generate, tiny_lm, PROMPTS, remote=True, **kw)
    kw["capture"] = LatentCapture(latents=tuple(range(90)), layer=1)  # 87 more encoder columns: [64, 87]
    big = measure_request(tiny_lm, generate, tiny_lm, PROMPTS, remote=True, **kw)
    grown = big.raw_bytes - small.raw_bytes
    # a read ships the encoder slice only: the decoder rows of read latents ([87, 64] more) stay home
    assert 87 * 64 * 4 <= grown < 2 * 87 * 64 * 4
    remember_median_norm(tiny_lm, 0, None)


def test_nothing_runs_and_the_model_works_afterwards(tiny_lm, tiny_sae):
    want = generate(tiny_lm, PROMPTS, **_kwargs(tiny_sae))
    with sizing(tiny_lm) as sizes, pytest.raises(RequestPlanned):
        generate(tiny_lm, PROMPTS, remote=True, **_kwargs(tiny_sae))
    assert len(sizes) == 1  # stopped at the first request (the norm pass)
    with sizing(tiny_lm) as sizes:  # remote="local" and local calls are not intercepted
        local = generate(tiny_lm, PROMPTS, remote="local", **_kwargs(tiny_sae))
    assert sizes == []
    again = generate(tiny_lm, PROMPTS, **_kwargs(tiny_sae))
    for a, b, c in zip(want, local, again, strict=True):
        assert a.output_ids == b.output_ids == c.output_ids
        torch.testing.assert_close(torch.tensor(c.latent_acts), torch.tensor(a.latent_acts))


def test_a_call_without_a_remote_request_is_an_error(tiny_lm):
    with pytest.raises(RuntimeError, match="sent no remote request"):
        measure_request(tiny_lm, lambda: None)
