"""DAG integrity: every example DAG imports cleanly, fast, and without touching the network."""

from __future__ import annotations

import socket
from pathlib import Path

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
    (stats,) = dagbag.dagbag_stats
    assert stats.duration.total_seconds() < 1.0, f"{file_name} took {stats.duration} to parse"
