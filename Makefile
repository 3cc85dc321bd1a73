# topbc — the two commands of the README are `make demo` and `make test`; both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv demo test test-slow test-all bench lint

venv: $(VENV)/.topbc-installed
$(VENV)/.topbc-installed: pyproject.toml scripts/bootstrap.sh
	VENV=$(VENV) scripts/bootstrap.sh

demo: venv
	$(PY) demo.py $(ARGS)

test: venv
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

test-all: venv
	$(PY) -m pytest -q -m "slow or not slow"

bench: venv
	$(PY) -m benchmarks.scoring --json
	$(PY) -m benchmarks.annotate --json
	$(PY) -m benchmarks.loader --json
	$(PY) -m benchmarks.peer --json
	$(PY) -m benchmarks.memory --json
	$(PY) -m benchmarks.train_step --json

lint: venv
	$(PY) -m ruff check .
