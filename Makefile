# The two commands of the quick start:
#   make local   runs the whole pipeline on this machine against moto (the local AWS stand-in)
#   make test    runs every check and test (what CI runs)
# Both set up what they need: a Python venv with pinned tools (.venv) and the Rust workspace.

VENV    := .venv
STAMP   := $(VENV)/.installed-$(shell sha256sum requirements-dev.txt | cut -c1-12)
PYTHON  ?= python3
CARGO   ?= cargo

.PHONY: local test setup build lint models bench

local: setup build
	target/debug/sluice-local run $(ARGS)

test: setup lint
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace

setup: $(STAMP)

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --upgrade pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

build:
	$(CARGO) build --workspace

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml

# Regenerates the example models, data and reference outputs (deterministic).
models: setup
	$(VENV)/bin/python models/make_models.py

# Throughput and peak memory against pandas + onnxruntime (release build; prints a table).
bench: setup
	$(CARGO) build --release --workspace
	$(VENV)/bin/python bench/bench.py $(ARGS)
