# vinstruct — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-quick demo-ablations test test-fast bench clean help

help:
	@echo "make setup       create .venv and install pinned dependencies"
	@echo "make demo        run the whole method on the embedded shapes world (runs/demo/REPORT.md)"
	@echo "make demo-quick  a smaller demo (8 to 11 minutes)"
	@echo "make demo-ablations  make demo, then its ablations (5 to 12 minutes each)"
	@echo "make test        run the test suite"
	@echo "make bench       run the benchmarks (results in docs/RESULTS.md)"

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (vinstruct needs Python 3.11+; set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vinstruct demo --out runs/demo

demo-quick: $(STAMP)
	$(VENV)/bin/vinstruct demo --out runs/demo-quick --quick

demo-ablations: $(STAMP)
	$(VENV)/bin/vinstruct demo --out runs/demo --ablations

test: $(STAMP)
	$(PY) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests selected"; exit 0; fi; exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
