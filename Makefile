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

.PHONY: install demo test lint bench sae notebooks organism organism-eval test-ndif ndif-venv ndif-up ndif-down ndif-status

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --user --name esr-analysis --display-name "esr-analysis" >/dev/null
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m esr_analysis demo

# The local NDIF server's own Python 3.12 environment (built once into the user cache, ~8 min / 5.5 GB; a cached
# build is reused), and a stack started by hand (docs/remote.md, issue 15).
NDIF := $(PY) -m esr_analysis.tracing.ndif_local
ndif-venv: install
	$(NDIF) venv

ndif-up: ndif-venv
	$(NDIF) up

ndif-down: install
	$(NDIF) down

ndif-status: install
	$(NDIF) status

# `make test`: the linters (ruff + mypy), every test but the `ndif` ones, then the `ndif` tests in their own pytest
# run against a real local NDIF server (`test-ndif`). That step builds the server's environment when a Python
# 3.12/3.13 exists (or reuses the cached one), runs pytest with ESR_REQUIRE_NDIF=1 (the session fixture starts
# the stack and stops it, also on a failure or Ctrl-C; a stack that does not come up fails, never skips), then
# fails loudly if any process or port of a stack it started is left (esr_analysis/tracing/ndif_local/check.py).
# Without a Python 3.12/3.13 or redis-server it prints why and selects nothing, so the rest stands; with
# ESR_REQUIRE_NDIF=1 in the environment (CI, .ci/run) that is a failure too.
test: lint
	$(PY) -m pytest -q -rs -m 'not ndif'
	$(NDIF) test -- -q -rs -m ndif

test-ndif: install
	$(NDIF) test -- -q -rs -m ndif

lint: install
	$(VENV)/bin/ruff check esr_analysis tests benchmarks notebooks scripts
	$(VENV)/bin/mypy

# Re-execute every notebook at its full setting on the embedded model and write the outputs into the
# committed .ipynb (figures visible on GitHub); the .py files are the source. See scripts/run_notebooks.py.
notebooks: install
	nice -n 10 $(PY) scripts/run_notebooks.py

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

# Re-build the self-correcting model organism from scratch (data from the base model's own text, then LoRA on
# CPU; see docs/organism.md), then evaluate it against the base model (eval.json). v3 recipe: 96-token openings,
# steering on the prompt and opening only while training. (v2 = qwen2.5-coder-0.5b-instruct-sc70: 64-token
# openings, --steer-scope all.)
ORGANISM_FRACTION ?= 0.7
ORGANISM_NAME ?= qwen2.5-coder-0.5b-instruct-sc70v3
organism: install
	rm -rf runs/organism/$(ORGANISM_NAME)
	$(PY) scripts/build_organism.py --fraction $(ORGANISM_FRACTION) --name $(ORGANISM_NAME) \
		--work runs/organism/$(ORGANISM_NAME) --keep-cut-answers --answer-max-new-tokens 64 \
		--opening-max-new-tokens 96 --attempts-per-prompt 3 --offtopic-max-cosine 0.45 --batch-size 32 \
		--steer-in-training --steer-scope opening --epochs 4

organism-eval: install
	$(PY) scripts/evaluate_organism.py --organism $(ORGANISM_NAME) --max-new-tokens 128 --n-latents 24 \
		--n-prompts-per-latent 5 --runs runs/organism-eval-v3
