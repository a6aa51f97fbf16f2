"""A task process to kill: runs one MetronomeCostsOperator task with Airflow's own ``dag.test()``.

The kill tests copy this file into the DAGs folder (Airflow 3 runs only DAGs it finds there; the
file's name is the DAG id) and start the copy as a script with the test's environment (its
AIRFLOW_HOME, the ``metronome_default`` connection to the simulator and, for S3, ``aws_default``).
It runs the task exactly as Airflow does in-process: the task runner installs its SIGTERM handler,
which calls the operator's ``on_kill``. What the task does comes from environment variables:

- ``KILL_TEST_CUSTOMERS``: the customer ids, as JSON;
- ``KILL_TEST_OUTPUT_URI`` and ``KILL_TEST_OUTPUT_CONN_ID`` (optional): where it writes;
- ``KILL_TEST_ENDING_BEFORE`` (default 2024-01-06) and ``KILL_TEST_SPLIT`` (set: one object per day).
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path

import pendulum

from airflow_provider_metronome._compat import AIRFLOW_V3
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from tests.support.runs import run_dag_once  # the test puts the repository on PYTHONPATH

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG  # type: ignore[attr-defined,no-redef]


def build_dag(dag_id: str) -> DAG:
    """The one-task DAG; environment variables left unset (when Airflow parses the file) give a stub."""
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False) as dag:
        MetronomeCostsOperator(
            task_id="fetch_costs",
            customer_ids=json.loads(os.environ.get("KILL_TEST_CUSTOMERS", "[]")),
            output_uri=os.environ.get("KILL_TEST_OUTPUT_URI", "file:///tmp/kill-test/{date}.jsonl"),
            output_conn_id=os.environ.get("KILL_TEST_OUTPUT_CONN_ID") or None,
            starting_on="2024-01-05",
            ending_before=os.environ.get("KILL_TEST_ENDING_BEFORE", "2024-01-06"),
            split_by_day=bool(os.environ.get("KILL_TEST_SPLIT")),
            # One customer at a time: the tests stop the task between two of them.
            max_workers=1,
        )
    return dag


dag = build_dag(Path(__file__).stem)


def main() -> None:
    if not AIRFLOW_V3:
        # Airflow 2's dag.test() needs the FAB users table mapped, as `airflow dags test` has it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("airflow.providers.fab.auth_manager.models")
    result = run_dag_once(dag, pendulum.datetime(2024, 1, 6, tz="UTC"))
    print(f"DAG RUN STATE {result.state}", flush=True)


if __name__ == "__main__":
    main()
