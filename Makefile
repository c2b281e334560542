# antihack developer commands. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint migrate bench sample docs docs-serve lock

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

run: install ## Migrate and start API + worker + scheduler on http://127.0.0.1:8000 (ARGS='--port 9000')
	$(BIN)/antihack migrate
	$(BIN)/antihack serve $(ARGS)

test: install docs ## Build the docs (--strict), then run the whole test suite (uses ANTIHACK_TEST_DATABASE_URL / _REDIS_URL when set)
	$(BIN)/pytest $(ARGS)

test-fast: install ## The in-process tiers only: unit and integration tests, not e2e, browser or slow
	$(BIN)/pytest -m "not e2e and not browser and not slow" $(ARGS)

lint: install ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy antihack tests bench

migrate: install ## Apply database migrations
	$(BIN)/antihack migrate

bench: install ## Run the benchmarks in bench/ (prints figures, asserts nothing)
	$(BIN)/python -m bench $(ARGS)

docs: install ## Build the documentation site into site/ (mkdocs --strict, offline)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: install ## Serve the documentation on http://127.0.0.1:8001, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

# The images' lock files (Dockerfile), resolved for the image's Python and platform whatever
# this machine's. Pins already there are kept while pyproject.toml admits them; ARGS=--upgrade
# takes the newest versions. tests/test_deploy.py checks that the locks match pyproject.toml.
LOCK = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_36 --custom-compile-command 'make lock' $(ARGS)

lock: install ## Write the images' hashed lock files requirements/*.txt from pyproject.toml (ARGS=--upgrade)
	$(LOCK) pyproject.toml -o requirements/runtime.txt
	$(LOCK) pyproject.toml --extra gpu --no-emit-package onnxruntime \
		-c requirements/runtime.txt -o requirements/gpu.txt
	$(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'], sep='\n')" \
		| $(LOCK) - -o requirements/build.txt
