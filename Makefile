# make demo: create .venv, install, run the main job on the bundled samples.
# make test: create .venv, install, run the whole test suite (the slow end-to-end tests included).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,launchers]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) evaluate.py corruption=motion_blur severity=2 allow_untrained_fallback=true

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf outputs multirun .pytest_cache
