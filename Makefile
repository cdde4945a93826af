# Set-up is part of every target: the first `make run` or `make test` builds .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch. Where pip would otherwise fetch a CUDA build you don't need, add
# TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu".
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
ARGS        ?=
PYTEST_ARGS ?=

.PHONY: install run test test-fast bench clean

$(BIN)/.installed: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# The demo (no ARGS): the encoder trains for at most a minute, 7 epochs here, with the
# planted ARI as high as with training to early stopping (docs/benchmarks.md).
# `make run DEMO=` trains to early stopping; with ARGS, DEMO is not used.
DEMO ?= --set encoder.max_minutes=1

run: install
	$(BIN)/raypipe run $(if $(strip $(ARGS)),$(ARGS),$(DEMO))

# Everything: unit tests, whole pipelines on a local Ray, the service over HTTP (CI runs this).
test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The inner loop: unit tests only (tests marked `slow` run the real model or whole runs).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) artifacts data .pytest_cache
