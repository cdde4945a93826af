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

run: install
	$(BIN)/raypipe run $(ARGS)

# Everything: unit tests, whole pipelines on a local Ray, the service over HTTP (CI runs this).
test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The inner loop: unit tests only (tests marked `slow` run the real model or whole runs).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) artifacts data .pytest_cache
