# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv/ in the repo root and install what they need into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCAL_STAMP := $(VENV)/.installed-local
DEV_STAMP := $(VENV)/.installed-dev

NODE_STAMP := node_modules/.installed

.PHONY: demo test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(LOCAL_STAMP): requirements.txt $(wildcard requirements/*.txt) | $(VENV)/bin/python
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q -r requirements/local.txt
	touch $@

# llama-cpp-python compiles llama.cpp (several minutes on 2 cores); GGML_NATIVE=OFF keeps the
# build portable, as in the conversion Lambda image.
$(DEV_STAMP): requirements.txt $(wildcard requirements/*.txt) | $(VENV)/bin/python
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q -r requirements/dev.txt
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

# The whole suite against a throwaway PostgreSQL server (installed if missing, always stopped).
test: $(DEV_STAMP) $(NODE_STAMP)
	scripts/with-postgres.sh $(PY) -m pytest

bench: $(DEV_STAMP)
	scripts/with-postgres.sh $(PY) benchmarks/bench_export.py

clean:
	rm -rf $(VENV) .pytest_cache node_modules
