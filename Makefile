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

.PHONY: install demo test lint bench clean-cache

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --user --name esr-analysis --display-name "esr-analysis" >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m esr_analysis demo

test: install
	$(PY) -m pytest -q -rs

lint: install
	$(VENV)/bin/ruff check esr_analysis tests benchmarks notebooks scripts

bench: install
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_judge.py
	$(PY) benchmarks/bench_pipeline.py
