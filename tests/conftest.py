"""Shared fixtures: a private AIRFLOW_HOME, a running Metronome simulator and a connection to it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Airflow reads its configuration on import: point it at a throw-away home before anything imports it.
# Set once per test session: importing this module again  must not move it.
_AIRFLOW_HOME = Path(
    os.environ.setdefault(
        "METRONOME_PROVIDER_TESTS_HOME", tempfile.mkdtemp(prefix="metronome-provider-tests-")
    )
)
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_AIRFLOW_HOME / "dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"

from airflow_provider_metronome.engine import fetch  # noqa: E402
from airflow_provider_metronome.testing import MetronomeSimulator  # noqa: E402
from tests.support.runs import connection_json  # noqa: E402

# The GCS and Azure emulators: session fixtures, so that each store runs one emulator per session.
pytest_plugins = ["tests.support.stores"]


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated SQLite metadata database, for tests that run DAGs."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ
    )
    return airflow_home / "airflow.db"


@pytest.fixture
def simulator() -> Iterator[MetronomeSimulator]:
    """A fresh simulator on an ephemeral port, stopped after the test."""
    with MetronomeSimulator() as sim:
        yield sim


@pytest.fixture
def metronome_conn(simulator: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the ``metronome_default`` connection at the simulator; returns the conn id."""
    monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url))
    return "metronome_default"


@pytest.fixture(autouse=True)
def quick_engine_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fetch engine's pause before it tries a failed customer again, shortened in every test.

    A wait, not the behaviour tested: how many times a customer is tried stays as it is.
    """
    monkeypatch.setattr(fetch, "RETRY_PAUSE", 0.01)
