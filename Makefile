# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make run   - virtual environment, install, migrate, serve on 127.0.0.1:8080
#   make test  - ruff, mypy, then the whole pytest suite
# With DATABASE_URL / REDIS_URL unset both use embedded PostgreSQL and Redis under .boardcast-data/.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck bench clean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing boardcast with its dev tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/boardcast serve

lint: install
	@echo "==> ruff"
	$(BIN)/ruff check .

typecheck: install
	@echo "==> mypy"
	$(BIN)/mypy

test: lint typecheck
	@echo "==> pytest"
	$(BIN)/python -m pytest -p no:cacheprovider

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .boardcast-data .mypy_cache .ruff_cache .pytest_cache
