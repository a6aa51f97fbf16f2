"""Partitioned asset events in a real Airflow 3.3 deployment: a consumer run per changed day, none for the others.

A fresh AIRFLOW_HOME with the restatement and consumer examples as shipped, and Airflow's own
processes: ``api-server`` (the tasks report through its execution API), ``dag-processor`` and
``scheduler`` with the LocalExecutor. Unpaused, the restatement makes its one scheduled run: seven
days, all new, so seven events keyed by the days, and the scheduler makes seven consumer runs, one
per day, each with its day as partition key. Then two stored days are made stale and the
restatement is triggered again for the same days: two of seven change, and exactly two consumer
runs follow, for those two days.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_metronome._compat import RUNTIME_PARTITIONS
from airflow_provider_metronome.testing import MetronomeSimulator
from tests.support.deployment import (
    Deployment,
    moment,
    new_deployment,
    stop_all,
    wait_for_scheduler_loops,
)
from tests.support.s3 import HOST, free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not RUNTIME_PARTITIONS, reason="tasks name their asset events' partitions from Airflow 3.3 on"
    ),
]

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
RESTATEMENT = "metronome_costs_restatement"
CONSUMER = "metronome_costs_consumer"
DAYS = 7  # the restatement's default window
STALE = 2
# Loops to watch once the expected consumer runs exist: one too many would show by then.
LOOPS_AFTER_RUNS = 5


@pytest.fixture
def deployment(tmp_path: Path, simulator: MetronomeSimulator) -> Iterator[Deployment]:
    simulator.set_customer_count(4)
    # Every day up to today is produced and final.
    simulator.now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    deployment = new_deployment(tmp_path / "airflow-home", simulator)
    for name in (RESTATEMENT, CONSUMER):
        shutil.copy(EXAMPLES / f"{name}.py", deployment.home / "dags" / f"{name}.py")
    port = free_port()
    deployment.env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{port}/execution/",
            "METRONOME_EXAMPLES_FIRST_TRY": "1",
        }
    )
    deployment.start("api-server", "api-server", "--host", HOST, "--port", str(port), "--workers", "1")
    deployment.start("dag-processor", "dag-processor")
    deployment.start("scheduler", "scheduler")
    try:
        yield deployment
    finally:
        stop_all(deployment)


def dag_runs(deployment: Deployment, dag_id: str) -> list[tuple[str, str, str | None]]:
    """``(run_id, state, partition_key)`` of each run of ``dag_id``, oldest first."""
    rows = deployment.query(
        "SELECT run_id, state, partition_key FROM dag_run WHERE dag_id = ? ORDER BY id", dag_id
    )
    return [(run_id, state, key) for run_id, state, key in rows]


def finished(deployment: Deployment, dag_id: str, count: int) -> bool:
    found = dag_runs(deployment, dag_id)
    failed = [run for run in found if run[1] == "failed"]
    assert not failed, f"{dag_id} failed: {failed}\n{deployment.tail('scheduler')}"
    return len(found) >= count and all(state == "success" for _, state, _ in found)


def restated_days(deployment: Deployment, run_id: str) -> tuple[list[str], list[str]]:
    """The days the restatement run wrote, and those it changed, from its manifest (XCom)."""
    ((value,),) = deployment.query(
        "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'refetch_days'"
        " AND key = 'return_value'",
        RESTATEMENT,
        run_id,
    )
    manifest = json.loads(value)
    return [entry["date"] for entry in manifest["objects"]], manifest["changed_days"]


def test_a_restatement_changing_two_of_seven_days_makes_exactly_two_consumer_runs(
    deployment: Deployment,
) -> None:
    deployment.wait_until(
        lambda: {RESTATEMENT, CONSUMER} <= {row[0] for row in deployment.query("SELECT dag_id FROM dag")},
        "both DAGs are stored",
    )
    deployment.airflow("dags", "unpause", CONSUMER)
    deployment.airflow("dags", "unpause", RESTATEMENT)

    # Its one scheduled run: seven new days, seven consumer runs keyed by them.
    deployment.wait_until(lambda: finished(deployment, RESTATEMENT, 1), "the scheduled restatement succeeds")
    ((first_run, _, _),) = dag_runs(deployment, RESTATEMENT)
    days, changed = restated_days(deployment, first_run)
    assert len(days) == DAYS
    assert changed == days
    deployment.wait_until(lambda: finished(deployment, CONSUMER, DAYS), "one consumer run per new day")
    assert sorted(key for _, _, key in dag_runs(deployment, CONSUMER)) == days

    # Two stored days go stale; the same seven days again.
    stale = days[1 : 1 + STALE]
    for day in stale:
        (deployment.lake / "costs" / f"date={day}" / "costs.jsonl.gz").write_bytes(b"an older version")
    # A second after the scheduled run's logical date: the same trailing days.
    ((scheduled_at,),) = deployment.query("SELECT logical_date FROM dag_run WHERE run_id = ?", first_run)
    later = (moment(scheduled_at) + dt.timedelta(seconds=1)).isoformat()
    deployment.airflow("dags", "trigger", RESTATEMENT, "--logical-date", later)
    deployment.wait_until(lambda: finished(deployment, RESTATEMENT, 2), "the triggered restatement succeeds")
    (_, (second_run, _, _)) = dag_runs(deployment, RESTATEMENT)
    assert restated_days(deployment, second_run) == (days, stale)

    deployment.wait_until(
        lambda: finished(deployment, CONSUMER, DAYS + STALE), "a consumer run per changed day"
    )
    wait_for_scheduler_loops(deployment, LOOPS_AFTER_RUNS)
    consumer_runs = dag_runs(deployment, CONSUMER)
    assert len(consumer_runs) == DAYS + STALE
    assert sorted(key for _, _, key in consumer_runs[DAYS:]) == stale
