"""Helpers shared by the tests: connections as users write them, DAG runs read back, a simulator clock mover."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from airflow_provider_metronome._compat import AIRFLOW_V3
from airflow_provider_metronome.testing import DEFAULT_TOKEN, MetronomeSimulator


def connection_json(url: str, token: str = DEFAULT_TOKEN, **extra: object) -> str:
    """An Airflow connection in JSON form, as users put it in AIRFLOW_CONN_<ID>."""
    return json.dumps({"conn_type": "metronome", "host": url, "password": token, "extra": extra})


@dataclass
class DagRunResult:
    """A finished DAG run, read back from the metadata database."""

    dag_id: str
    run_id: str
    state: str
    data_interval: tuple[dt.datetime, dt.datetime]

    def task_states(self) -> dict[tuple[str, int], str]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.execute(
                select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
                    TaskInstance.dag_id == self.dag_id, TaskInstance.run_id == self.run_id
                )
            ).all()
        return {(task_id, map_index): str(state) for task_id, map_index, state in rows}

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        try:
            from airflow.models.xcom import XComModel as XComRow
        except ImportError:  # Airflow 2
            from airflow.models.xcom import XCom as XComRow  # type: ignore[no-redef]
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.scalars(
                select(XComRow).where(
                    XComRow.dag_id == self.dag_id,
                    XComRow.run_id == self.run_id,
                    XComRow.task_id == task_id,
                    XComRow.map_index == map_index,
                    XComRow.key == key,
                )
            ).one_or_none()
            return None if row is None else row.value


def run_dag_once(dag: Any, logical_date: dt.datetime, run_conf: dict[str, Any] | None = None) -> DagRunResult:
    """Run ``dag`` once for ``logical_date`` with Airflow's own ``dag.test()``."""
    if AIRFLOW_V3:
        dag_run = dag.test(logical_date=logical_date, run_conf=run_conf)
    else:
        dag_run = dag.test(execution_date=logical_date, run_conf=run_conf)
    return DagRunResult(
        dag.dag_id,
        dag_run.run_id,
        str(dag_run.state),
        (dag_run.data_interval_start, dag_run.data_interval_end),
    )


@contextmanager
def clock_moves_to(
    simulator: MetronomeSimulator, moment: dt.datetime, *, after: int, requests_to: str
) -> Iterator[None]:
    """Move the simulator's clock to ``moment`` once ``after`` requests to ``requests_to`` have arrived.

    The request that triggers the move may or may not see it; the ones before it cannot.
    """
    stop = threading.Event()

    def advance() -> None:
        deadline = time.monotonic() + 60
        while not stop.wait(0.01) and time.monotonic() < deadline:
            if len(simulator.requests_for(requests_to)) >= after:
                simulator.now = moment
                return

    mover = threading.Thread(target=advance, name="advance-simulator-clock", daemon=True)
    mover.start()
    try:
        yield
    finally:
        stop.set()
        mover.join()
