# The two commands of the README: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit native-twin system-deps bench clean

$(STAMP): pyproject.toml setup.py $(wildcard _native/*.pyx)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,postgres]'
	touch $@

system-deps:
	bash scripts/ensure-debian-tools

demo: $(STAMP) system-deps
	$(BIN)/smimegate demo

lint: $(STAMP)
	$(BIN)/ruff check gateway tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) system-deps
	$(BIN)/python scripts/check-native-build
	$(BIN)/pytest -q

# The twins are the specification: the native modules' tests run again with them forced.
native-twin: $(STAMP)
	SMIMEGATE_NO_EXTENSIONS=1 $(BIN)/pytest -q -m native

test: lint typecheck unit native-twin

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info gateway/_ext/*.so _native/*.c
