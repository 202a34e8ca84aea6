# Two targets for users (see README.md): `make book` and `make test`.
# Both create the virtual environment .venv on first use.

PYTHON ?= python3.11
VENV := .venv
PROFILE ?= laptop
BIN := $(VENV)/bin

.PHONY: book test chapters benchmark clean

$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $@

# Execute every chapter with $(PROFILE) and build _build/html/index.html.
book: $(BIN)/.installed
	$(BIN)/python -m l2d_utils.book --profile $(PROFILE)

# The llama.cpp server for tests/test_llama_server.py, compiled from source
# (about 5 min on 2 cores) with the CPU flags of tools/llama_cmake_args.py.
LLAMA_CMAKE_ARGS ?= $(shell $(PYTHON) tools/llama_cmake_args.py)
$(BIN)/.llama-installed: $(BIN)/.installed
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test,llama-server]"
	touch $@

# Unit tests, a real llama.cpp server, every chapter with the smoke profile, and a strict book build.
test: $(BIN)/.llama-installed
	$(BIN)/python -m pytest

# Execute chapters without building the HTML, e.g. make chapters PROFILE=smoke.
chapters: $(BIN)/.installed
	$(BIN)/python -m l2d_utils.book --profile $(PROFILE) --no-build

# Speed figures of the local LLM backend (prints ms per sentence).
benchmark: $(BIN)/.installed
	$(BIN)/python benchmarks/llm_speed.py

clean:
	rm -rf _build
