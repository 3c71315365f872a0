# GNU make. `make run` starts a development server with demo data; `make test`
# runs the linters and the whole suite (what CI runs, via .ci/run).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# uv installs exactly what uv.lock names (every package, with its hashes); it is
# itself bootstrapped with pip from requirements-uv.txt (one pinned version, its
# hashes). uv uses the venv's Python: it never downloads one.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: venv run test lint clean bench bench-quick profile services browser lock upgrade

venv: $(STAMP)

$(BIN)/uv: requirements-uv.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-uv.txt
	touch $@

# Re-install only when the lock or the project changes. --frozen: install the
# lock as it is, never re-resolve (a pyproject.toml out of step with it fails
# `make lint`); the project itself is rebuilt (its packages may have changed).
$(STAMP): uv.lock pyproject.toml $(BIN)/uv
	$(BIN)/uv sync --frozen --python $(BIN)/python --reinstall-package quick-connect-dispatch
	touch $(STAMP)

# The lock routine: after editing dependencies in pyproject.toml, `make lock`
# re-resolves only what changed; `make upgrade` takes the newest releases of
# everything. Commit uv.lock (and requirements-uv.txt) with the change.
lock: $(BIN)/uv
	$(BIN)/uv lock
	$(MAKE) requirements-uv.txt-refresh

upgrade: $(BIN)/uv
	$(BIN)/uv lock --upgrade
	$(MAKE) requirements-uv.txt-refresh

# Keep the pip bootstrap at the uv version the lock names, with its hashes.
.PHONY: requirements-uv.txt-refresh
requirements-uv.txt-refresh:
	v=$$(sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock); \
	echo "uv==$$v" | $(BIN)/uv pip compile --quiet --generate-hashes --universal \
		--no-header - -o requirements-uv.txt

run: venv
	$(BIN)/dispatch serve --dev --demo

# The whole suite, then the real-browser tier (a separate pytest run: it lives in a
# network namespace of its own, where the machine's PostgreSQL is out of reach).
test: lint services
	$(BIN)/pytest
	sh scripts/browser-tests

# The real-browser tier alone (tests/browser): Chromium driven by Playwright against
# real servers, in a network namespace with only loopback. As root it installs a
# missing Chromium (apt-get); without what it needs it skips with one line, except
# under CI=true, where that fails. Screenshots go to artifacts/browser/.
browser: venv
	sh scripts/browser-tests

# The suite starts its own redis-server; PostgreSQL (for the durable-store
# tests) must answer on 127.0.0.1:5432. Start the local cluster if it is down.
services:
	@command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)"; exit 1; }
	@command -v redis-cli >/dev/null || { echo "redis-cli is not installed (apt-get install redis-tools): the Redis Cluster tests need it"; exit 1; }
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || \
		{ command -v pg_ctlcluster >/dev/null && \
		  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start; } || \
		echo "PostgreSQL is not answering on 127.0.0.1:5432: its tests will fail under CI=true"

lint: venv
	$(BIN)/uv lock --locked --offline
	$(BIN)/deptry .
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Leaves dispatch.db (the dev database) alone.
clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# The load tests, run by hand (loadtest/README.md, docs/benchmarks.md): the
# standard set (fan-out to 1000 and 2000 consoles with the bare websockets +
# Redis floor in the same run, the claim race, sustained lifecycles, idle
# consoles, scale-out 2 -> 3 servers), about 5 minutes on 2 CPUs. Prints each
# target of issue #16 with its measured ratio and whether it holds, writes that
# table into docs/benchmarks.md, JSON and PNG into artifacts/bench/. Exits
# non-zero if a scenario lost something or could not run.
bench: venv
	$(BIN)/python -m loadtest.bench --artifacts artifacts/bench --docs docs/benchmarks.md

# The same at tiny sizes (a minute): tries the harness; the numbers mean nothing.
bench-quick: venv
	$(BIN)/python -m loadtest.bench --quick --artifacts artifacts/bench-quick

# Where a server's time goes: the 1000-console fan-out with py-spy sampling
# server 0 into a flame graph, artifacts/profile-fanout.svg.
profile: venv
	$(BIN)/python -m loadtest.fanout --consoles 1000 --servers 2 --requests 50 \
		--interval 0.3 --profile artifacts/profile-fanout.svg --out artifacts/profile-fanout.json
