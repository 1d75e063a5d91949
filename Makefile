# crm-perf-sync — the two commands: `make run` and `make test`.
# Needs only Python 3.11+ and make: uv (pinned) is installed into .tools/, the project into .venv/
# from uv.lock, so every install is the same.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
SIZE ?= full
# Three workers on two cores: much of the suite waits on PostgreSQL, subprocesses and servers, so a
# third worker fills the gaps; worksteal evens out the long tests at the end. Each worker has its own
# migrated templates (tests/conftest.py), each test its own store copy.
PYTEST_ARGS ?= -n 3 --dist worksteal --durations=15

export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: setup run test lint typecheck pytest bench bench-small bench-small-sqlite bench-small-postgresql bench-report migrate readme vendor clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The libraries are compiled to bytecode once, at install: the suite starts some two hundred Python
# processes (CLI, worker, server, plugin builds), and each would otherwise compile them again
# wherever PYTHONDONTWRITEBYTECODE is set (measured on a fresh clone: a sixth of the suite's Python
# CPU time went to imports, half of that to compiling the same sources again).
$(VENV)/.installed: $(UV) uv.lock pyproject.toml connectors/*/pyproject.toml
	$(UV) sync --frozen --all-packages --compile-bytecode --python $(PYTHON)
	touch $@

setup: $(VENV)/.installed

## make run: start the service on the embedded default (SQLite + the demo connection), syncing on schedule.
run: setup
	$(BIN)/crm-perf-sync serve

## make test: lint, type-check, the whole test suite, and the small benchmarks (so they never rot).
# Lint and type-check are short and independent: they run side by side, each one's output in one
# piece; the suite and the benchmarks each want both cores, so they run alone, in turn.
test: setup
	$(MAKE) --no-print-directory --jobs=2 --output-sync=target lint typecheck
	$(MAKE) --no-print-directory pytest
	$(MAKE) --no-print-directory bench-small

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

typecheck: setup
	$(BIN)/mypy src connectors/*/src tests bench scripts

# The project's own modules (and pytest's rewritten test modules) are cached as bytecode in the
# (ignored) __pycache__ folders even where PYTHONDONTWRITEBYTECODE is set, for the same reason.
pytest: setup
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest $(PYTEST_ARGS)

## make bench [SIZE=small]: the benchmark scenarios; appends JSON to bench/results/full.jsonl (small.jsonl).
bench: setup
	$(BIN)/python -m bench --size $(SIZE)

## make bench-report: regenerate docs/benchmarks.md from the recorded results.
bench-report: setup
	$(BIN)/python -m bench.report

# The small benchmarks only prove the harness works (their figures are never judged): the two
# databases' runs go side by side, one per core, each with its own stores.
bench-small: setup
	$(MAKE) --no-print-directory --jobs=2 --output-sync=target bench-small-sqlite bench-small-postgresql

bench-small-sqlite bench-small-postgresql: setup
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m bench --size small --db $(@:bench-small-%=%)

migrate: setup
	$(BIN)/crm-perf-sync migrate

## make readme: regenerate the README's environment-variable table from the settings model.
readme: setup
	$(BIN)/python -m crm_perf_sync.kit.settings_table README.md

## make vendor: refresh the vendored browser assets (ECharts, axe-core) from the npm registry (needs npm).
vendor:
	$(PYTHON) scripts/vendor.py

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache bench/results/small.jsonl
