"""The committed notebooks: paired with their .py, executed with outputs (figures included), and carrying no
secrets and no machine paths. Fake keys are assembled at run time so no key-shaped literal is in the source."""

from __future__ import annotations

import getpass
import re
import socket

import nbformat
import pytest
from nbrun import NOTEBOOKS, ROOT, check_pairing, output_texts, runner

NAMES = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))
WITH_OUTPUTS = ("01_sae_and_latents", "02_steered_generation", "03_esr_rates", "04_boost_sweep", "05_meta_prompting",
                "06_model_organism", "07_off_topic_detectors", "08_anatomy_of_a_recovery", "09_what_drives_recovery")
"""Notebooks committed with the outputs of `make notebooks`: every code cell executed, no error, a figure shown.
(Add a notebook here once `make notebooks` has executed it on the machine that commits it.)"""


def _secret_patterns() -> list[re.Pattern[str]]:
    sk, dash = "sk", "-"
    return [
        re.compile(sk + dash + "ant" + dash + r"[A-Za-z0-9_\-]{8,}"),            # Anthropic
        re.compile(sk + dash + "or" + dash + r"[A-Za-z0-9_\-]{8,}"),             # OpenRouter
        re.compile(r"\b" + sk + dash + r"(?:proj-)?[A-Za-z0-9_\-]{20,}"),       # OpenAI
        re.compile(r"\bhf" + "_" + r"[A-Za-z0-9]{30,}"),                         # Hugging Face
        re.compile(r"\bgh[pousr]" + "_" + r"[A-Za-z0-9]{30,}"),                  # GitHub
        re.compile(r"\bAK" + "IA" + r"[0-9A-Z]{16}\b"),                          # AWS
        re.compile(r"(?i)\b(?:api[_-]?key|token|secret)\b\s*[=:]\s*['\"]?[A-Za-z0-9_\-]{16,}"),
    ]


def _machine_patterns() -> list[re.Pattern[str]]:
    pats = [re.compile(re.escape(p)) for p in ("/root", "/home/", "/work/", "/tmp/", "/Users/", "/private/var/",
                                               "C:\\Users", str(ROOT))]
    user = getpass.getuser()
    if len(user) >= 3:
        pats.append(re.compile(r"[/\\]" + re.escape(user) + r"(?:[/\\]|$)"))
    host = socket.gethostname()
    if len(host) >= 6:
        pats.append(re.compile(re.escape(host)))
    return pats


def findings(nb, patterns: list[re.Pattern[str]]) -> list[str]:
    return [m.group(0) for text in output_texts(nb) for p in patterns for m in p.finditer(text)]


def _read(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def test_every_notebook_is_found():
    assert NAMES[:5] == ["01_sae_and_latents", "02_steered_generation", "03_esr_rates", "04_boost_sweep",
                         "05_meta_prompting"]


@pytest.mark.parametrize("name", NAMES)
def test_pairs_are_in_sync(name):
    check_pairing(name)


@pytest.mark.parametrize("name", WITH_OUTPUTS)
def test_committed_with_outputs_and_figures(name):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") is not None for c in code), f"{name}.ipynb has unexecuted cells"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"], f"{name}.ipynb holds an error"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}.ipynb shows no figure"


@pytest.mark.parametrize("name", NAMES)
def test_committed_outputs_carry_no_secrets(name):
    assert findings(_read(name), _secret_patterns()) == []


@pytest.mark.parametrize("name", NAMES)
def test_committed_outputs_carry_no_machine_paths(name):
    assert findings(_read(name), _machine_patterns()) == []


def _fake_notebook(text: str):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(x)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text),
                    nbformat.v4.new_output("display_data", data={"text/plain": text, "image/png": "iVBORw0K"})]
    nb.cells.append(cell)
    return nb


def test_the_checks_catch_planted_keys_and_paths():
    key = "sk" + "-" + "ant" + "-" + "api03" + "x" * 30
    hf = "hf" + "_" + "A" * 34
    assert len(findings(_fake_notebook(f"key {key} and {hf}"), _secret_patterns())) >= 2
    assert findings(_fake_notebook(f"saved to {ROOT}/runs and /tmp/x"), _machine_patterns())
    assert findings(_fake_notebook("a square root of 2, no keys, no paths"), _secret_patterns()) == []
    assert findings(_fake_notebook("a square root of 2, no keys, no paths"), _machine_patterns()) == []


def test_scrub_replaces_machine_strings_in_every_text_output():
    run = runner()
    nb = _fake_notebook(f"wrote {run.ROOT}/runs/x and {run.Path.home()}/.cache/y")
    nb.cells[0].metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    out = run.scrub(nb)
    texts = output_texts(out)
    assert any("<repo>/runs/x" in t for t in texts) and any("~/.cache/y" in t for t in texts)
    assert findings(out, _machine_patterns()) == []
    assert "execution" not in out.cells[0].metadata
    assert out.cells[0].outputs[1]["data"]["image/png"] == "iVBORw0K"


def test_make_notebooks_runs_every_notebook_and_rejects_unknown_names(capsys):
    run = runner()
    assert run.notebook_names() == NAMES
    with pytest.raises(SystemExit):
        run.main(["99_no_such_notebook"])
    assert "no such notebook: 99_no_such_notebook" in capsys.readouterr().err
