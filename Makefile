# Two commands set everything up from a bare Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make test-latest`: the newest Python that pyenv has (else $(PYTHON)) and the newest releases.
PYENV_ROOT ?= $(HOME)/.pyenv
PYTHON_LATEST ?= $(or $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/3.1[1-9].*/bin/python3))),$(PYTHON))
VENV_LATEST := .venv-latest
# The dev venv: callstream (editable) with every extra, plus the `dev` dependency group of
# pyproject.toml (test, lint, docs and build tools: a group, not an extra, so users never get it).
EXTRAS := openai,agents,fastapi,flask,django,haystack,redis,celery
# A representative subset, to keep CI (both runs) within about 6 minutes on 2 cores: the unit and
# integration tests (LangChain, LangGraph, langchain-openai and openai over real HTTP), the CLI and the
# docs examples and site. Left to `make test`: the property tests and the leak loops (callstream's own
# machinery), the web apps under their servers, and the package build.
TESTS_LATEST := tests/unit tests/integration tests/test_docs.py tests/test_public_api.py \
	--ignore=tests/unit/test_leaks.py -m "not slow"

.PHONY: install demo test test-latest check lint format bench docs dist clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=25.1"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]" --group dev
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m callstream demo $(ARGS)

# mypy checks the files listed in [tool.mypy] (pyproject.toml): src under --strict, and tests,
# benchmarks and adapters under a relaxed override (unannotated helpers allowed, bodies checked).
check: $(STAMP)
	$(PY) -m ruff check src tests benchmarks adapters docs
	$(PY) -m ruff format --check src tests benchmarks adapters docs
	$(PY) -m mypy

# Coverage of src/callstream, with the floor of [tool.coverage.report] (fail_under). Two workers, a
# test at a time but for the tests of a module sharing a costly fixture (servers, a built site), which
# go to one worker together (`--dist loadgroup`, the groups made by tests/conftest.py); most of the
# suite waits on real servers and subprocesses, so two workers fit two cores.
test: check
	$(PY) -m pytest -q -n 2 --dist loadgroup --cov --cov-report=term

# The newest release of every dependency, no constraints, in a venv of its own (re-resolved on
# every run), so that a release that breaks callstream shows up the day it ships.
test-latest:
	test -x $(VENV_LATEST)/bin/python || $(PYTHON_LATEST) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/python -m pip install --quiet --upgrade "pip>=25.1"
	$(VENV_LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[$(EXTRAS)]" --group dev
	@$(VENV_LATEST)/bin/python -c "import sys; from importlib.metadata import version as v; \
	  names = 'langchain-core langchain langgraph langchain-openai openai pydantic'.split(); \
	  print('test-latest: Python', sys.version.split()[0] + ',', ', '.join(n + ' ' + v(n) for n in names))"
	$(VENV_LATEST)/bin/python -m pytest -q -n 2 --dist loadgroup $(TESTS_LATEST)

format: $(STAMP)
	$(PY) -m ruff format src tests benchmarks adapters docs
	$(PY) -m ruff check --fix src tests benchmarks adapters docs

bench: $(STAMP)
	$(PY) -m benchmarks

# NO_MKDOCS_2_WARNING: Material prints an end-of-life banner on every build otherwise.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# A wheel and an sdist in dist/, built by the pinned hatchling of the dev venv.
dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) $(VENV_LATEST) dist site .mypy_cache .ruff_cache .hypothesis
