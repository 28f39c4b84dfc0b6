# xmargin — every target bootstraps uv and syncs the locked environment first.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
RUN := $(UV) run --frozen
PACKAGES := features models margin pipelines

.PHONY: setup run test lint fmt bench ui data clean

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --user --quiet uv
	@$(UV) sync --frozen --quiet --compile-bytecode

run: setup
	$(RUN) xmargin data sync
	$(RUN) xmargin run

test: setup lint
	@$(RUN) pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy $(PACKAGES)

fmt: setup
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

bench: setup
	$(RUN) python -m benchmarks

ui: setup
	$(RUN) xmargin ui

data: setup
	$(RUN) xmargin data sync
	$(RUN) xmargin data check

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
