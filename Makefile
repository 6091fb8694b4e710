# Everything a fresh machine needs: `make demo` runs the example flows, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
PRISM := tools/prism/node_modules/.bin/prism
# Compile site-packages once at install: where PYTHONDONTWRITEBYTECODE is set no .pyc files are written,
# and every process (each Prefect worker, server and test) would pay seconds to import Prefect.
export UV_COMPILE_BYTECODE := 1

.PHONY: install test lint typecheck pytest test-versions demo bench bench-scale test-scale deploy clean ui-check

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras
	touch $@

install: $(VENV)/.installed

$(PRISM): tools/prism/package.json tools/prism/package-lock.json
	npm ci --prefix tools/prism --no-audit --no-fund --loglevel=error
	touch $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

pytest: install $(PRISM)
	UV="$(UV)" $(PY) -m pytest --cov=parallel_tasks --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

test: lint typecheck pytest

# The library's unit and flow tests on the other declared Pythons (3.10, 3.12, 3.13), one .venv-3.X each, one
# version after the other; `make test` runs the full suite on .venv's Python (3.11). VERSIONS="3.12" for one.
VERSIONS ?= 3.10 3.12 3.13
test-versions: $(PRISM) | $(UV)
	UV=$(UV) .ci/test-versions $(VERSIONS)

clean:
	rm -rf $(VENV) .venv-3.* .tools tools/prism/node_modules .pytest_cache .mypy_cache .ruff_cache .coverage

demo: install
	$(PY) flows/demo.py

# What a person sees, in headless Chromium (installed from Debian's packages if missing): the demo against a Prefect
# server of its own, screenshots of the run page and the artifacts into docs/screenshots/. Not part of `make test`.
ui-check: install
	$(PY) tools/ui_check.py

# Ready a running Prefect server (PREFECT_API_URL) for the deployments: block types, the `parallel` credentials block
# from PARALLEL_API_KEY (or `make deploy EMULATOR=http://127.0.0.1:8787`), the parallel-process work pool, and
# deployments/prefect.yaml. Idempotent: a second run reports "unchanged".
deploy: install
	$(PY) -m parallel_tasks setup $(if $(EMULATOR),--emulator $(EMULATOR))

test-scale: install
	$(PY) -m pytest tests/scale -m scale -s -p no:cacheprovider --no-cov $(PYTEST_ARGS)

# Benchmarks, not part of `make test` (how long they take: README, "Benchmarks"); writes
# benchmarks/results/latest.{md,png,json}. BENCH_ARGS="--quick" for a smoke run (N = 100 and 1,000 only).
bench: | $(UV)
	$(UV) sync --frozen --all-extras --group bench
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# The audit flow at N = 10,000 and 100,000 (the latter time-boxed), RSS sampled over time; not part of `make bench`.
# Writes benchmarks/results/audit_scale.{md,json}. SCALE_ARGS="--sizes 1000 3000" for a smoke run.
bench-scale: | $(UV)
	$(UV) sync --frozen --all-extras --group bench
	$(PY) benchmarks/audit_scale.py $(SCALE_ARGS)
