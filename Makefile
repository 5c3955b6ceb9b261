# Two commands do all the set-up on a fresh machine with Python 3.11, 3.12 or 3.13:
#   make run   - virtual environment, install what running needs, migrate, serve on 127.0.0.1:8080
#   make test  - the same plus the dev tools, then ruff, mypy and the whole pytest suite
# With DATABASE_URL / REDIS_URL unset both use embedded PostgreSQL and Redis under .boardcast-data/.

# The Pythons the project runs and is tested on (`make test-pythons`): its embedded servers
# ship wheels for these.
SUPPORTED_PYTHONS := 3.11 3.12 3.13
# PYTHON=... picks the interpreter; otherwise the first supported one of these.
PYTHON_CANDIDATES := python3 python3.13 python3.12 python3.11
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-stamp
DEV_STAMP := $(VENV)/.dev-stamp

python_version = $(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
supported = $(filter $(SUPPORTED_PYTHONS),$(call python_version,$(1)))
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach p,$(PYTHON_CANDIDATES),$(if $(call supported,$(p)),$(p))))
endif

.PHONY: install run test test-pythons lint typecheck bench clean

$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then \
	    echo "make: no supported Python found ($(SUPPORTED_PYTHONS)); install one, or run make PYTHON=/path/to/python3.12"; exit 1; \
	elif [ -z "$(call python_version,$(PYTHON))" ]; then \
	    echo "make: cannot run $(PYTHON); Boardcast runs on Python $(SUPPORTED_PYTHONS): run make PYTHON=/path/to/python3.12 (or 3.11, 3.13)"; exit 1; \
	elif [ -z "$(call supported,$(PYTHON))" ]; then \
	    echo "make: $(PYTHON) is Python $(call python_version,$(PYTHON)); Boardcast runs on Python $(SUPPORTED_PYTHONS): run make PYTHON=/path/to/python3.12 (or 3.11, 3.13)"; exit 1; \
	fi
	@echo "==> creating $(VENV) with $(PYTHON) (Python $(call python_version,$(PYTHON)))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# What running needs: the server and the embedded PostgreSQL and Redis.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "==> installing boardcast with its embedded servers"
	$(BIN)/python -m pip install --quiet -e '.[embedded]'
	@touch $@

# ...and what testing needs besides: pytest, ruff, mypy and the rest.
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	@echo "==> installing boardcast with its dev tools"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(RUN_STAMP)

install: $(DEV_STAMP)

run: $(RUN_STAMP)
	$(BIN)/boardcast serve

lint: $(DEV_STAMP)
	@echo "==> ruff"
	$(BIN)/ruff check .

typecheck: $(DEV_STAMP)
	@echo "==> mypy"
	$(BIN)/mypy

test: lint typecheck
	@echo "==> pytest"
	$(BIN)/python -m pytest -p no:cacheprovider

# `make run` in a fresh virtual environment with each supported Python (CI runs this).
test-pythons: $(DEV_STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -m pythons

bench: $(DEV_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .boardcast-data .mypy_cache .ruff_cache .pytest_cache
