# Every target creates (or reuses) .venv and installs exactly what requirements/dev.lock pins
# (hash-checked, the build backend included), then this checkout in editable mode.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements/dev.lock
STAMP := $(VENV)/.installed
BENCH_LOCK := requirements/bench.lock
BENCH_STAMP := $(VENV)/.bench-installed
PIP_TOOLS := pip-tools==7.6.2

.PHONY: demo test test-slow lint bench lock lock-upgrade clean

$(STAMP): $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Where podman and mmdebstrap are installed, pods run inside a real python:3.X-slim image made
# from Debian's packages (about a minute the first time, kept in $$PODRUN_HOME/images); elsewhere
# they run on the host's Python and podrun says so.
demo: $(STAMP)
	@if command -v podman >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1; then \
		$(VENV)/bin/podrun images prepare "python:$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')-slim" \
			|| echo "note: no image prepared; pods run on the host's Python"; \
	fi
	$(PY) examples/quickstart.py

# The default suite; suites marked slow (pods in images, arm64 under emulation) run in `make test-slow` and in CI.
# On two workers (pytest-xdist), a test file to one worker at a time, so a module's emulator starts
# once: the suite mostly waits (pods, emulators, podman), one process kept 60% of a core busy.
# PYTEST_WORKERS=0 runs it in this process alone.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: no slow test selected

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

# The peers (loky, Dask, Ray) come from the bench extra, pinned apart in requirements/bench.lock.
$(BENCH_STAMP): $(STAMP) $(BENCH_LOCK)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(BENCH_LOCK)
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/pods.py
	$(PY) benchmarks/pool.py
	$(PY) benchmarks/streaming.py
	$(PY) benchmarks/storage.py
	$(PY) benchmarks/peers.py $(BENCH_ARGS)

# `make lock` pins what pyproject.toml adds or changes and keeps every other pin (the bench lock
# within the development lock's pins);
# `make lock-upgrade` re-resolves everything to the newest versions the ranges allow.
lock-upgrade: LOCK_FLAGS := --upgrade
lock lock-upgrade:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_TOOLS)
	$(VENV)/bin/pip-compile --quiet $(LOCK_FLAGS) --extra dev --build-deps-for editable --generate-hashes \
		--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml
	$(VENV)/bin/pip-compile --quiet $(LOCK_FLAGS) --extra bench --constraint $(LOCK) --generate-hashes \
		--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -o $(BENCH_LOCK) pyproject.toml
	rm -f $(STAMP) $(BENCH_STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
