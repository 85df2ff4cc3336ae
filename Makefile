# Two commands on a fresh machine (Python >= 3.10, git, make):
#   make run    the main job
#   make test   the test suite (what CI runs)
# Both create .venv and install the exact versions of constraints.txt on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run hello test test-fast lint format docs serve-docs constraints clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,torch,experiments,bench,docs]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) experiments/vanishing_gradients.py

hello: $(STAMP)
	$(PY) experiments/hello.py

# Two pytest workers (pytest-xdist): most tests wait on XLA's single-threaded
# compiler, so two at once use both cores; each has its own persistent compilation
# cache (tests/conftest.py says why). The README gives the suite's measured time.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2

test-fast: $(STAMP)
	$(PY) -m pytest -m 'not slow'

# The documentation site (mkdocs.yml): tutorials and the API reference from the
# docstrings, built offline into site/ (open site/index.html), or served while editing.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

serve-docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

constraints: $(STAMP)
	{ echo "# Exact versions CI installs (pip install -c constraints.txt ...). Python 3.11, Linux x86_64, CPU."; \
	  echo "# Regenerate after an upgrade: make constraints"; \
	  $(PY) -m pip freeze --exclude-editable | sed 's/+cpu//'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
