# Each target bootstraps its own virtual environment: `make demo` and `make test` work on a fresh
# machine with Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint sandbox bench clean lock

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed: run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/failover-bot demo

sandbox: $(STAMP)
	$(BIN)/failover-bot sandbox

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# requirements.txt (what buildpacks and the Dockerfile install): pyproject's runtime dependencies
# pinned to the versions installed in the venv.
lock: $(STAMP)
	$(BIN)/python scripts/lock_requirements.py

clean:
	rm -rf $(VENV) .ci-venv .mypy_cache .ruff_cache .pytest_cache *.egg-info
