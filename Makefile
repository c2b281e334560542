# antihack developer commands. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint migrate bench sample

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

run: install ## Migrate and start API + worker + scheduler on http://127.0.0.1:8000 (ARGS='--port 9000')
	$(BIN)/antihack migrate
	$(BIN)/antihack serve $(ARGS)

test: install ## Run the whole test suite (uses ANTIHACK_TEST_DATABASE_URL / _REDIS_URL when set)
	$(BIN)/pytest $(ARGS)

lint: install ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared worker api

migrate: install ## Apply database migrations
	$(BIN)/antihack migrate

bench: install ## Run the benchmarks in bench/ (prints figures, asserts nothing)
	$(BIN)/python -m bench $(ARGS)
