# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
VENV_AIRFLOW2 ?= .venv-airflow2
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: demo test test-airflow3 test-airflow2 lint typecheck bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -c constraints.txt -e ".[dev]"
	touch $@

$(VENV_AIRFLOW2)/.installed: pyproject.toml constraints-airflow2.txt
	$(PYTHON) -m venv $(VENV_AIRFLOW2)
	$(VENV_AIRFLOW2)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV_AIRFLOW2)/bin/pip install $(PIP_FLAGS) -c constraints-airflow2.txt -e ".[test]"
	touch $@

## Run the simulator-backed demo: a three-day backfill, then a re-run of one day.
demo: $(VENV)/.installed
	$(VENV)/bin/python scripts/demo.py

## Lint, type-check and run the whole suite on Airflow 3.3, then the suite on Airflow 2.11.
test: lint typecheck test-airflow3 test-airflow2

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test-airflow3: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-airflow2: $(VENV_AIRFLOW2)/.installed
	$(VENV_AIRFLOW2)/bin/python -m pytest $(PYTEST_ARGS)

## Benchmarks (not part of `make test`): prints the table published in the README.
bench: $(VENV)/.installed
	$(VENV)/bin/python tests/benchmarks/run.py

clean:
	rm -rf $(VENV) $(VENV_AIRFLOW2) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
