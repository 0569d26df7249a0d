# The README's quick start: `make demo` runs quotad on SQLite with a demo deployment,
# `make test` runs everything CI runs. Both install into .venv first: `demo` and `serve`
# only what serving needs, the others the developer extras too.
# `make demo PORT=9000` (or HOST=0.0.0.0) picks the address.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve
PORT ?=
HOST ?=
ADDRESS := $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

.PHONY: demo serve test lint typecheck pytest openapi clean

# uv (Astral's installer, from PyPI) installs into the venv: about 100 packages in seconds
# where pip takes two minutes. Unlike pip, uv writes no bytecode unless asked; without it,
# and with PYTHONDONTWRITEBYTECODE set (as on the machine CI runs on), every interpreter compiles
# FastAPI, SQLAlchemy and pydantic again from source: each `quotad` start took twice as long.
UV_INSTALL := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python
# The package's own modules too (an editable install is not compiled by uv); a module
# changed later is compiled afresh on import, as for any stale bytecode.
COMPILE_SRC := $(BIN)/python -m compileall -q src

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "quotad needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)

# Its own target, so that a venv made before uv was used gets it too.
$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install -q uv

# The package and its runtime dependencies only (what `quotad serve` needs). Both installs
# run again when this file changes: its recipe is part of what they install.
$(SERVE_STAMP): pyproject.toml Makefile | $(BIN)/uv
	$(UV_INSTALL) -e .
	$(COMPILE_SRC)
	@touch $(SERVE_STAMP)

# The package with the developer extras (test, lint and type-check tools).
# xds-protos (the envoy extra) ships an old copy of opentelemetry-proto's modules, which
# can land over the OTLP exporter's own: reinstalling opentelemetry-proto puts them back.
$(STAMP): pyproject.toml Makefile | $(BIN)/uv
	$(UV_INSTALL) -e '.[dev]'
	$(UV_INSTALL) --reinstall-package opentelemetry-proto --no-deps \
	  "opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	$(COMPILE_SRC)
	@touch $(STAMP) $(SERVE_STAMP)

demo: $(SERVE_STAMP)
	$(BIN)/quotad serve --demo $(ADDRESS)

serve: $(SERVE_STAMP)
	$(BIN)/quotad serve $(ADDRESS)

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench scripts
	$(BIN)/ruff format --check src tests examples bench scripts
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy src

# The tests that time what they do or kill servers run alone, after the rest has run on
# three workers (tests/conftest.py SERIAL_MODULES); extra arguments: `make pytest ARGS=-x`.
pytest: $(STAMP)
	$(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder -m "not serial" $(ARGS)
	$(BIN)/pytest -m serial $(ARGS)

test: lint typecheck pytest

openapi: $(STAMP)
	$(BIN)/quotad openapi -o openapi.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
