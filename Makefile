# Both targets bootstrap .venv themselves on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# make demo picks its torch threads from the cores free when it starts; an explicit setting wins:
# `make demo TORCH_NUM_THREADS=2` (or the variable in the environment).

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel -c constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,metrics,hf,serve,trl,onnx,keras]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m llmgan.demo $(if $(TORCH_NUM_THREADS),--threads $(TORCH_NUM_THREADS))

test: $(STAMP)
	$(PY) -m pytest -x --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo_runs .pytest_cache
