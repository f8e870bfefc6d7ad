# Two commands set everything up from a bare Python 3.10+: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test check lint format bench docs clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m callstream demo $(ARGS)

check: $(STAMP)
	$(PY) -m ruff check src tests benchmarks adapters docs
	$(PY) -m ruff format --check src tests benchmarks adapters docs
	$(PY) -m mypy --strict src

test: check
	$(PY) -m pytest -q

format: $(STAMP)
	$(PY) -m ruff format src tests benchmarks adapters docs
	$(PY) -m ruff check --fix src tests benchmarks adapters docs

bench: $(STAMP)
	$(PY) -m benchmarks

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis
