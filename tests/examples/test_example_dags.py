"""DAG integrity: every example DAG imports cleanly, fast, and without touching the network."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from airflow_provider_metronome.testing import MetronomeSimulator

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 2
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
EXPECTED_DAGS = {
    "metronome_daily_costs.py": {"metronome_daily_costs"},
    "metronome_costs_all_customers.py": {"metronome_costs_all_customers"},
    "metronome_costs_consumer.py": {"metronome_costs_consumer"},
    "metronome_costs_restatement.py": {"metronome_costs_restatement"},
    "metronome_costs_history.py": {"metronome_costs_history"},
}


def test_every_example_file_is_covered() -> None:
    assert {path.name for path in EXAMPLES.glob("*.py")} == set(EXPECTED_DAGS)


@pytest.mark.parametrize("file_name", sorted(EXPECTED_DAGS))
def test_example_dag_parses_cleanly_without_network(
    file_name: str, metronome_conn: str, simulator: MetronomeSimulator, mocker: MockerFixture
) -> None:
    connect = mocker.patch.object(
        socket.socket, "connect", side_effect=AssertionError("network at parse time")
    )

    dagbag = DagBag(dag_folder=str(EXAMPLES / file_name))

    assert dagbag.import_errors == {}
    assert dict(dagbag.captured_warnings) == {}
    assert set(dagbag.dag_ids) == EXPECTED_DAGS[file_name]
    assert connect.call_count == 0
    assert simulator.requests == []


# -- production waits, and a first try's ------------------------------------------------------------------

MINUTE = dt.timedelta(minutes=1)
HOUR = 60 * MINUTE
# A task's retries and retry delay, and for a sensor its poke interval and timeout.
Waits = tuple[int, dt.timedelta, dt.timedelta | None, dt.timedelta | None]
# Each example's tasks, as shipped ("production") and with METRONOME_EXAMPLES_FIRST_TRY=1 where the
# files are parsed ("first try"): what each module docstring (and the README) says.
WAITS: dict[str, dict[str, dict[str, Waits]]] = {
    "metronome_daily_costs.py": {
        "production": {
            "wait_for_costs": (2, 5 * MINUTE, 15 * MINUTE, 12 * HOUR),
            "fetch_costs": (2, 5 * MINUTE, None, None),
        },
        "first try": {
            "wait_for_costs": (0, 5 * MINUTE, MINUTE, 30 * MINUTE),
            "fetch_costs": (0, 5 * MINUTE, None, None),
        },
    },
    "metronome_costs_history.py": {
        "production": {
            "wait_for_month": (2, 30 * MINUTE, 30 * MINUTE, 12 * HOUR),
            "load_month": (2, 30 * MINUTE, None, None),
        },
        "first try": {
            "wait_for_month": (0, 30 * MINUTE, MINUTE, 30 * MINUTE),
            "load_month": (0, 30 * MINUTE, None, None),
        },
    },
    "metronome_costs_restatement.py": {
        "production": dict.fromkeys(["trailing_window", "refetch_days"], (2, 30 * MINUTE, None, None)),
        "first try": dict.fromkeys(["trailing_window", "refetch_days"], (0, 30 * MINUTE, None, None)),
    },
    "metronome_costs_all_customers.py": {
        "production": dict.fromkeys(
            ["list_customer_batches", "fetch_batch", "report"], (6, 30 * MINUTE, None, None)
        ),
        "first try": dict.fromkeys(
            ["list_customer_batches", "fetch_batch", "report"], (0, 30 * MINUTE, None, None)
        ),
    },
    # Airflow's defaults: no retry.
    "metronome_costs_consumer.py": {
        "production": {"log_day_totals": (0, 5 * MINUTE, None, None)},
        "first try": {"log_day_totals": (0, 5 * MINUTE, None, None)},
    },
}


def waits_of(dag: Any) -> dict[str, Waits]:
    def span(seconds: float | None) -> dt.timedelta | None:
        return None if seconds is None else dt.timedelta(seconds=seconds)

    waits: dict[str, Waits] = {}
    for task in dag.tasks:
        sensor = hasattr(task, "poke_interval")
        waits[task.task_id] = (
            task.retries,
            task.retry_delay,
            span(task.poke_interval) if sensor else None,
            span(task.timeout) if sensor else None,
        )
    return waits


@pytest.mark.parametrize("mode", ["production", "first try"])
@pytest.mark.parametrize("file_name", sorted(WAITS))
def test_waits_are_for_production_unless_the_environment_asks_for_a_first_try(
    file_name: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if mode == "first try":
        monkeypatch.setenv("METRONOME_EXAMPLES_FIRST_TRY", "1")
    else:
        monkeypatch.delenv("METRONOME_EXAMPLES_FIRST_TRY", raising=False)

    dagbag = DagBag(dag_folder=str(EXAMPLES / file_name))

    assert dagbag.import_errors == {}
    (dag,) = dagbag.dags.values()
    assert waits_of(dag) == WAITS[file_name][mode]
