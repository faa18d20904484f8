# aslfr: `make demo` runs the pipeline on synthetic data, `make test` runs the tests.
# Each target sets up what it needs from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/aslfr synth $(DEMO_DIR)/data --sequences 2000 --participants 16 --files 4 --seed 0 --workers 2
	$(VENV)/bin/aslfr prepare $(DEMO_DIR)/data $(DEMO_DIR)/prepared --workers 2

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/prepare.py

clean:
	rm -rf $(VENV) $(DEMO_DIR)
