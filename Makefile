# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv/ in the repo root and install what they need into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCAL_STAMP := $(VENV)/.installed-local
DEV_STAMP := $(VENV)/.installed-dev

NODE_STAMP := node_modules/.installed
# The deploy rehearsal (tests/deploy_rehearsal): the Lambda layers as `pulumi up` builds them, the
# runtime's boto3, and a python3.12 environment from requirements/convert.txt alone (the conversion
# image's). Prepared here, where the package index is reachable; the tests themselves use no network.
REHEARSAL_STAMP := .build/.rehearsal-ready
LAMBDA_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12 2>/dev/null))
CONVERT_VENV := .build/convert-venv

.PHONY: demo test test-fast lint bench clean rehearsal-assets

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(LOCAL_STAMP): requirements.txt $(wildcard requirements/*.txt) pyproject.toml | $(VENV)/bin/python
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q -r requirements/local.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# llama-cpp-python compiles llama.cpp (several minutes on 2 cores); GGML_NATIVE=OFF keeps the
# build portable, as in the conversion Lambda image.
$(DEV_STAMP): requirements.txt $(wildcard requirements/*.txt) pyproject.toml | $(VENV)/bin/python
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# asl-validator (npm) lints the state machine in the test suite; Node.js from Debian if missing.
$(NODE_STAMP): package.json package-lock.json
	command -v npm >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null)
	npm ci --no-audit --no-fund --silent
	touch $@

# The whole pipeline on this machine: embedded PostgreSQL with the bundled sample -> tiny model
# trained on CPU -> GGUF -> llama.cpp -> quality gates -> promote or roll back. Exit 3 (gates
# failed, rolled back) is a normal outcome of a run, not a failed demo.
demo: $(LOCAL_STAMP)
	$(PY) -m pipeline run || [ $$? -eq 3 ]

$(REHEARSAL_STAMP): $(DEV_STAMP) requirements/dataset.txt requirements/serving.txt requirements/convert.txt requirements/lambda-runtime.txt infra/packaging.py
	@test -n "$(LAMBDA_PYTHON)" || { echo "the deploy rehearsal needs Python 3.12 (the Lambda runtime's): set LAMBDA_PYTHON" >&2; exit 1; }
	$(PY) -m infra.packaging
	rm -rf .build/lambda-runtime && $(PY) -m pip install -q --target .build/lambda-runtime/python --only-binary=:all: \
		--implementation cp --python-version 3.12 --platform manylinux2014_x86_64 -r requirements/lambda-runtime.txt
	rm -rf $(CONVERT_VENV) && $(LAMBDA_PYTHON) -m venv $(CONVERT_VENV)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF" $(CONVERT_VENV)/bin/python -m pip install -q -r requirements/convert.txt
	$(PY) -c "from tests.pipeline.gguf.conftest import ensure_converter; ensure_converter()"
	touch $@

rehearsal-assets: $(REHEARSAL_STAMP)

# Lint (ruff), format check and types (mypy): part of `make test`, so of CI.
lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The whole suite against a throwaway PostgreSQL server (installed if missing, always stopped).
test: lint $(NODE_STAMP) $(REHEARSAL_STAMP)
	scripts/with-postgres.sh $(PY) -m pytest

# The quick tier (under two minutes here): everything not marked slow.
test-fast: $(DEV_STAMP) $(NODE_STAMP) $(REHEARSAL_STAMP)
	scripts/with-postgres.sh $(PY) -m pytest -m "not slow" -q

bench: $(DEV_STAMP)
	scripts/with-postgres.sh $(PY) -m benchmarks.bench_export

clean:
	rm -rf $(VENV) .pytest_cache node_modules
