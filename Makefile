# CHM: the README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export CHM_DATABASE_URL ?= sqlite:///./chm.db

.PHONY: install run test chromium screenshots check fuzz lint typecheck imports format lock clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs exactly the pinned versions of the lock file, then CHM itself.
$(VENV)/.installed: requirements-dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The API and the worker together: Ctrl-C (or SIGTERM to make) stops both,
# each after its bounded shutdown. On PostgreSQL, run them apart instead
# (docs/worker.md): `chm serve` and any number of `chm worker`.
run: install
	$(BIN)/chm db upgrade
	@$(BIN)/chm worker & worker=$$!; \
	$(BIN)/chm serve --host $(HOST) --port $(PORT) & serve=$$!; \
	trap 'kill -TERM $$serve 2>/dev/null' INT TERM; \
	wait $$serve; wait $$serve; \
	kill -TERM $$worker 2>/dev/null; wait $$worker

# The whole suite, on SQLite and on PostgreSQL (see tests/conftest.py), on
# two worker processes (each with its own template databases).
PYTEST_ARGS ?= -n 2
test: install chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The browser tests (tests/web/test_browser.py) drive Debian's chromium, never a
# downloaded one: installed here when missing and apt-get can (as root). When it
# cannot, those tests skip with the reason, or fail under CI=true.
CHROMIUM := /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium (Debian) for the browser tests"; \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
				|| echo "could not install chromium: the browser tests will skip (fail under CI=true)"; \
		else \
			echo "chromium is missing and apt-get cannot install it here (needs root):" \
				"the browser tests will skip (fail under CI=true)"; \
		fi; }

# docs/screenshots/{now,pipeline,alerts}.png at 1280 px: a realistic seeded
# database served by `chm serve`, photographed in chromium (tests/web/screenshots.py).
screenshots: install chromium
	env -u CHM_DATABASE_URL $(BIN)/python -m tests.web.screenshots

# schemathesis against the OpenAPI document with many more examples per
# operation and mode than the suite's bounded run (both databases); -rP prints
# the case counts of each database.
FUZZ_EXAMPLES ?= 300
fuzz: install
	CHM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/test_fuzz.py -rP -p no:cacheprovider $(PYTEST_ARGS)

# The performance benchmarks (bench/README.md), never part of `make test`:
# installs wrk (Debian) when missing, starts the local PostgreSQL when down,
# generates or reuses the cached data set, runs every benchmark on SQLite and
# PostgreSQL and writes bench/results/. BENCH_SIZE=small is a quick smoke run.
BENCH_SIZE ?= large
BENCH_ARGS ?=
bench: install
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@command -v pg_ctlcluster >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
		echo "PostgreSQL is down; starting it"; \
		pg_ctlcluster --skip-systemctl-redirect "$$(ls /etc/postgresql | head -n 1)" main start || true; \
		for _ in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; }
	env -u CHM_DATABASE_URL $(BIN)/python -m bench.run --size $(BENCH_SIZE) $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

# The import rules of docs/architecture.md (import-linter contracts in pyproject.toml).
imports: install
	$(BIN)/lint-imports --no-cache

# Everything CI checks besides the tests: ruff, mypy --strict, the import rules.
check: lint typecheck imports

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Re-pin the lock files after changing pyproject.toml (needs uv).
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements-dev.lock
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
