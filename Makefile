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

.PHONY: install run test bench clean

$(BIN)/.installed: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/raypipe run $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) artifacts data .pytest_cache
