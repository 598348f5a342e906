# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch; an unpinned torch pulls a multi-GB CUDA build. On a GPU machine:
#   make install TORCH_PIN=torch
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install test test-fast lint typecheck demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# tools/constraints.txt: the exact versions of everything else (no resolver backtracking on a fresh clone)
$(VENV)/.installed: pyproject.toml tools/constraints.txt | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -c tools/constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff check .

# mypy's level (default checks; see [tool.mypy] in pyproject.toml): tiler/ passes it with no error.
typecheck: install
	$(BIN)/python -m mypy

test: lint typecheck
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# Without the `slow` tests (subprocess runs, signals, clusters): a quick check while working.
test-fast: lint typecheck
	$(BIN)/python -m pytest -q --durations=15 -m "not slow" $(PYTEST_ARGS)

demo: install
	$(BIN)/python -m tools.demo

bench: install
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache .mypy_cache
