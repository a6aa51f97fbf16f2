# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
VENV_AIRFLOW2 ?= .venv-airflow2
# Installs go through uv's pip interface (the same constraints files, several times faster than pip); uv itself
# comes from PyPI, pinned, into a virtualenv of its own.
UV_VERSION ?= 0.13.9
UV ?= .venv-uv/bin/uv
UV_INSTALL = $(UV) pip install --quiet --python
# The other Airflow lines pyproject.toml accepts: one smoke virtualenv each, pinned by constraints/airflow-X.Y.txt.
SMOKE_VERSIONS ?= 2.10 3.0 3.1 3.2
# Smoke installs and runs at once (mostly download and unpack; CI has 2 CPUs).
SMOKE_JOBS ?= 2
STORE_TESTS ?= tests/output/test_writers_s3.py tests/operators/test_costs_s3.py tests/output/test_writers_stores.py tests/operators/test_costs_stores.py

.PHONY: demo test test-airflow3 test-airflow2 test-airflow2-and-smoke test-browser test-stores test-smoke lint typecheck bench clean

$(UV):
	$(PYTHON) -m venv .venv-uv
	echo '*' > .venv-uv/.gitignore
	.venv-uv/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.installed: pyproject.toml constraints.txt | $(UV)
	$(PYTHON) -m venv $(VENV)
	$(UV_INSTALL) $(VENV)/bin/python -c constraints.txt -e ".[dev]"
	touch $@

$(VENV_AIRFLOW2)/.installed: pyproject.toml constraints-airflow2.txt | $(UV)
	$(PYTHON) -m venv $(VENV_AIRFLOW2)
	$(UV_INSTALL) $(VENV_AIRFLOW2)/bin/python -c constraints-airflow2.txt -e ".[test,s3,gcs,azure]"
	touch $@

# The provider alone (no test extras): what the smoke script needs. Its own .gitignore keeps it out of git.
.venv-smoke-%/.installed: pyproject.toml constraints/airflow-%.txt | $(UV)
	$(PYTHON) -m venv .venv-smoke-$*
	echo '*' > .venv-smoke-$*/.gitignore
	$(UV_INSTALL) .venv-smoke-$*/bin/python -c constraints/airflow-$*.txt -e .
	touch $@

# Keep the stamps: make would otherwise delete them as intermediate files and reinstall every time.
.PRECIOUS: .venv-smoke-%/.installed

## Run the simulator-backed demo: a three-day backfill, then a re-run of one day.
demo: $(VENV)/.installed
	$(VENV)/bin/python scripts/demo.py

## Lint and type-check, then at once (2 jobs): the whole suite on Airflow 3.3, and the suite on Airflow 2.11
## followed by the smoke test on the other lines. Each job's output is printed whole when it ends.
test: lint typecheck
	$(MAKE) -j2 --output-sync=target test-airflow3 test-airflow2-and-smoke

test-airflow2-and-smoke: test-airflow2
	$(MAKE) test-smoke

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

test-airflow3: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-airflow2: $(VENV_AIRFLOW2)/.installed
	$(VENV_AIRFLOW2)/bin/python -m pytest $(PYTEST_ARGS)

## The browser tests alone (tests/browser: Airflow's UI in Chromium), on Airflow 3.3 and 2.11. They need
## Debian's Chromium (apt-get install -y chromium; .ci/run installs it) and are skipped without it.
test-browser: $(VENV)/.installed $(VENV_AIRFLOW2)/.installed
	$(VENV)/bin/python -m pytest tests/browser $(PYTEST_ARGS)
	$(VENV_AIRFLOW2)/bin/python -m pytest tests/browser $(PYTEST_ARGS)

## The object-store tests alone (S3 on moto_server, GCS on gcp-storage-emulator, Azure on Azurite), on both lines.
## Azurite comes from npm (its version pinned by tests/support/azurite/package.json) into .pytest_cache on first use.
test-stores: $(VENV)/.installed $(VENV_AIRFLOW2)/.installed
	$(VENV)/bin/python -m pytest $(STORE_TESTS) $(PYTEST_ARGS)
	$(VENV_AIRFLOW2)/bin/python -m pytest $(STORE_TESTS) $(PYTEST_ARGS)

## Smoke-test the provider (imports, provider info, example DAGs, one daily run) on Airflow 2.10, 3.0, 3.1 and 3.2.
test-smoke:
	$(MAKE) -j$(SMOKE_JOBS) --output-sync=target $(addprefix smoke-,$(SMOKE_VERSIONS))

smoke-%: .venv-smoke-%/.installed
	.venv-smoke-$*/bin/python tests/smoke/run_smoke.py

## Benchmarks (not part of `make test`): prints the tables and rewrites them in docs/benchmarks.md.
bench: $(VENV)/.installed
	$(VENV)/bin/python tests/benchmarks/run.py

clean:
	rm -rf $(VENV) $(VENV_AIRFLOW2) .venv-smoke-* .venv-uv .pytest_cache .mypy_cache .ruff_cache build *.egg-info
