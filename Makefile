# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export WANDB_MODE := disabled
export MPLBACKEND := Agg

.PHONY: install demo test lint bench sae

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --user --name esr-analysis --display-name "esr-analysis" >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m esr_analysis demo

# `make test` runs the linters first (ruff + mypy), so CI checks style, types and behaviour in one command.
test: lint
	$(PY) -m pytest -q -rs

lint: install
	$(VENV)/bin/ruff check esr_analysis tests benchmarks notebooks scripts
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_judge.py
	$(PY) benchmarks/bench_pipeline.py

# Re-train the shipped SAE from scratch (corpus -> harvest -> sae-lens training -> labels); see docs/sae.md.
SAE_TOKENS ?= 1000000
SAE_SAMPLES ?= 2000000
sae: install
	$(PY) scripts/build_sae_corpus.py
	$(PY) scripts/harvest_activations.py --tokens $(SAE_TOKENS) --held-out-tokens 16256
	$(PY) scripts/train_sae.py --samples $(SAE_SAMPLES) --batch-size 512 --lr 7e-4 --lr-scheduler cosineannealing --l1 4 --max-minutes 50 --ce-windows 8
	$(PY) scripts/label_sae.py
