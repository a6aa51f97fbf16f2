"""Unpausing every example DAG as shipped, in a fresh Airflow, queues a few runs, not a thousand.

A fresh AIRFLOW_HOME (SQLite) with ``dags_examples/`` as its DAGs folder, and Airflow's own processes:
``airflow dag-processor`` and ``airflow scheduler`` on Airflow 3 (the DAG processor parses the files),
``airflow scheduler`` on Airflow 2 (it parses them itself). Once the DAGs are stored, ``airflow dags
unpause`` unpauses every one of them, as a user would; the test then reads the metadata database until
the scheduler has created the runs it will create and has gone round its loop a few more times, and
counts them. The ``default_pool`` has no slot, so no task of those runs is ever queued: the scheduler
creates and plans runs exactly as in a real deployment, and nothing runs, so nothing can reach
Metronome (a simulator stands in for it and must see no request) or fail.

Then history is loaded deliberately, with the README's backfill command for two months: on Airflow 3
``airflow backfill create`` makes the two monthly runs and the scheduler starts one at a time; on
Airflow 2 ``airflow dags backfill`` runs them itself, against the simulator, and writes both months in
the daily layout.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_metronome._compat import AIRFLOW_V3, RUNTIME_PARTITIONS
from airflow_provider_metronome.testing import MetronomeSimulator
from tests.support.deployment import (
    Deployment,
    moment,
    new_deployment,
    stop_all,
    wait_for_scheduler_loops,
)

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
DAILY = "metronome_daily_costs"
ALL_CUSTOMERS = "metronome_costs_all_customers"
RESTATEMENT = "metronome_costs_restatement"
HISTORY = "metronome_costs_history"
CONSUMER = "metronome_costs_consumer"
DAILY_DAGS = (DAILY, ALL_CUSTOMERS, RESTATEMENT)
SCHEDULED_DAGS = (*DAILY_DAGS, HISTORY)
EXAMPLE_DAGS = (*SCHEDULED_DAGS, CONSUMER)
# What the README promises for a fresh deployment: one run per scheduled example, none for the
# asset-scheduled consumer (it runs when the others write).
RUNS_WHEN_UNPAUSED = {DAILY: 1, ALL_CUSTOMERS: 1, RESTATEMENT: 1, HISTORY: 1, CONSUMER: 0}
# The README's backfill of two months: each line's command, from January to February 2024.
HISTORY_BACKFILL = {
    "airflow3": [
        "backfill", "create", "--dag-id", HISTORY,
        "--from-date", "2024-01-01", "--to-date", "2024-02-01", "--max-active-runs", "1",
    ],
    "airflow2": ["dags", "backfill", HISTORY, "-s", "2024-01-01", "-e", "2024-02-01"],
}  # fmt: skip
# The months it loads: January and February 2024.
BACKFILLED_INTERVALS = [
    (dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)),
    (dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc), dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc)),
]
# By then both months are produced and their invoices finalized.
AFTER_BACKFILLED = dt.datetime(2024, 3, 10, tzinfo=dt.timezone.utc)
# On Airflow 3.3+ the daily example is partitioned: a run at 02:00 UTC keyed by the day before.
PARTITIONED_DAILY = RUNTIME_PARTITIONS
DAILY_TICK = dt.time(2)
# Scheduler loops to watch after the expected runs exist: a flood (catch-up) would show in the first.
LOOPS_AFTER_RUNS = 3


# -- a fresh Airflow, run as a user runs it --------------------------------------------------------------


@pytest.fixture
def deployment(tmp_path: Path, simulator: MetronomeSimulator) -> Iterator[Deployment]:
    deployment = new_deployment(tmp_path / "airflow-home", simulator)
    for path in sorted(EXAMPLES.glob("*.py")):
        shutil.copy(path, deployment.home / "dags" / path.name)
    # No slot for any task: the scheduler creates and plans runs, and none of their tasks is queued.
    deployment.set_default_pool_slots(0)
    try:
        yield deployment
    finally:
        stop_all(deployment)


# -- reading the metadata database --------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    dag_id: str
    run_type: str
    state: str
    data_interval: tuple[dt.datetime | None, dt.datetime | None]
    partition_key: str | None = None


def runs(deployment: Deployment, run_type: str | None = None) -> dict[str, list[Run]]:
    """Every DAG run, by DAG id, in data-interval order (``run_type``: only those)."""
    # The partition key is Airflow 3.2's.
    key = "partition_key" if RUNTIME_PARTITIONS else "NULL"
    rows = deployment.query(
        f"SELECT dag_id, run_type, state, data_interval_start, data_interval_end, {key} FROM dag_run"
        " ORDER BY dag_id, data_interval_start"
    )
    found: dict[str, list[Run]] = {dag_id: [] for dag_id in EXAMPLE_DAGS}
    for dag_id, kind, state, start, end, partition_key in rows:
        if run_type is None or kind == run_type:
            run = Run(dag_id, kind, state, (moment(start), moment(end)), partition_key)
            found.setdefault(dag_id, []).append(run)
    return found


def stored_dags(deployment: Deployment) -> dict[str, bool]:
    """The DAGs the metadata database knows, and whether each is paused."""
    return {dag_id: bool(paused) for dag_id, paused in deployment.query("SELECT dag_id, is_paused FROM dag")}


def next_run_creation(deployment: Deployment) -> dict[str, dt.datetime | None]:
    """When the scheduler plans to create each DAG's next run (None: not planned)."""
    rows = deployment.query("SELECT dag_id, next_dagrun_create_after FROM dag")
    return {dag_id: moment(value) for dag_id, value in rows}


def task_states(deployment: Deployment) -> set[str | None]:
    return {state for (state,) in deployment.query("SELECT DISTINCT state FROM task_instance")}


# -- what the scheduler should have made --------------------------------------------------------------


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def previous_month(day: dt.date) -> tuple[dt.date, dt.date]:
    first = day.replace(day=1)
    return (first - dt.timedelta(days=1)).replace(day=1), first


def expected_interval(dag_id: str, today: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The data interval of the one run ``dag_id`` gets when unpaused on ``today`` (UTC)."""
    if dag_id == HISTORY:
        # CronDataIntervalTimetable("@monthly"): the month that last ended, on both lines.
        start, end = previous_month(today)
        return midnight(start), midnight(end)
    if AIRFLOW_V3:
        # "@daily" is a CronTriggerTimetable: zero-length, at today's midnight (it fetches yesterday).
        return midnight(today), midnight(today)
    # Airflow 2's "@daily" is a CronDataIntervalTimetable: yesterday.
    return midnight(today - dt.timedelta(days=1)), midnight(today)


def next_creation(dag_id: str, today: dt.date) -> dt.datetime:
    """When the scheduler should create the run after that one: the next midnight, or next month."""
    if dag_id == HISTORY:
        following = (today.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        return midnight(following)
    return midnight(today + dt.timedelta(days=1))


def last_daily_tick(moment: dt.datetime) -> dt.datetime:
    """The partitioned daily example's latest run time at ``moment``: the last 02:00 UTC."""
    tick = dt.datetime.combine(moment.date(), DAILY_TICK, tzinfo=dt.timezone.utc)
    return tick if tick <= moment else tick - dt.timedelta(days=1)


@contextmanager
def utc_moments() -> Iterator[list[dt.datetime]]:
    """When the block began and ended."""
    moments = [dt.datetime.now(dt.timezone.utc)]
    yield moments
    moments.append(dt.datetime.now(dt.timezone.utc))


def listing_requests(active: int, archived: int) -> int:
    """Requests for one listing of a window's customers: active ones, then archived, 100 a page."""
    return max(1, math.ceil(active / 100)) + max(1, math.ceil(archived / 100))


# -- the test ---------------------------------------------------------------------------------------------


@dataclass
class Unpaused:
    """What the scheduler made of the examples once they were unpaused."""

    moments: list[dt.datetime]  # when the scheduler made them: from, to
    created: dict[str, list[Run]]
    planned: dict[str, dt.datetime | None]
    max_active_runs: dict[str, int]


def start_airflow_and_unpause_every_example(deployment: Deployment) -> Unpaused:
    with utc_moments() as moments:
        if AIRFLOW_V3:
            deployment.start("dag-processor", "dag-processor")
        deployment.start("scheduler", "scheduler")
        deployment.wait_until(
            lambda: set(EXAMPLE_DAGS) <= set(stored_dags(deployment)), "every example DAG is stored"
        )
        # Paused as they arrive: nothing happens until the user unpauses them.
        assert {dag_id: stored_dags(deployment)[dag_id] for dag_id in EXAMPLE_DAGS} == dict.fromkeys(
            EXAMPLE_DAGS, True
        )
        assert all(not found for found in runs(deployment).values())

        deployment.airflow("dags", "unpause", "--treat-dag-id-as-regex", "-y", "^metronome_")

        assert set(stored_dags(deployment).items()) >= {(dag_id, False) for dag_id in EXAMPLE_DAGS}
        deployment.wait_until(
            lambda: all(runs(deployment)[dag_id] for dag_id in SCHEDULED_DAGS),
            "every scheduled example has its first run",
        )
        # A catch-up would go on creating runs loop after loop; the scheduler goes round a few more times.
        wait_for_scheduler_loops(deployment, LOOPS_AFTER_RUNS)
        created = runs(deployment)
        planned = next_run_creation(deployment)
        limits = dict(deployment.query("SELECT dag_id, max_active_runs FROM dag"))
    return Unpaused(moments, created, planned, limits)


def check_one_run_per_scheduled_example(unpaused: Unpaused) -> None:
    created, planned = unpaused.created, unpaused.planned
    days = sorted({moment.date() for moment in unpaused.moments})
    counts = {dag_id: len(found) for dag_id, found in created.items()}
    if len(days) == 1 and len({last_daily_tick(moment) for moment in unpaused.moments}) == 1:
        assert counts == RUNS_WHEN_UNPAUSED, counts
    assert counts[CONSUMER] == 0
    for dag_id in SCHEDULED_DAGS:
        assert {run.run_type for run in created[dag_id]} == {"scheduled"}
        if dag_id == DAILY and PARTITIONED_DAILY:
            check_the_partitioned_daily_run(unpaused)
            continue
        # The latest interval only. (Had the test run over a UTC midnight, or a month's end for the
        # history, the new one may be there too: the scheduler rightly makes it.)
        intervals = [run.data_interval for run in created[dag_id]]
        allowed = [expected_interval(dag_id, day) for day in days]
        assert intervals in ([allowed[0]], [allowed[-1]], sorted(set(allowed))), (dag_id, intervals)
        # The scheduler's own plan: the next run at the next midnight (UTC), or next month. Airflow 2
        # plans none while a DAG has max_active_runs runs, and plans again once one of them ends.
        if planned[dag_id] is None and not AIRFLOW_V3:
            assert unpaused.max_active_runs[dag_id] == counts[dag_id], dag_id
        else:
            assert planned[dag_id] in [next_creation(dag_id, day) for day in days], (dag_id, planned)
    assert planned[CONSUMER] is None  # scheduled on the asset: only an event makes a run


def check_the_partitioned_daily_run(unpaused: Unpaused) -> None:
    """One run, at the last 02:00 UTC, keyed by the day before it (the day it fetches); the next one a day on."""
    ticks = sorted({last_daily_tick(moment) for moment in unpaused.moments})
    keys = [run.partition_key for run in unpaused.created[DAILY]]
    allowed = [str((tick - dt.timedelta(days=1)).date()) for tick in ticks]
    assert keys in ([allowed[0]], [allowed[-1]], allowed), keys
    assert unpaused.planned[DAILY] in [tick + dt.timedelta(days=1) for tick in ticks], unpaused.planned


def check_history_backfill_on_airflow3(deployment: Deployment) -> None:
    """``airflow backfill create``: one run per month, which the scheduler starts one at a time."""
    deployment.airflow(*HISTORY_BACKFILL["airflow3"])

    backfill = runs(deployment, "backfill")[HISTORY]
    assert [run.data_interval for run in backfill] == BACKFILLED_INTERVALS
    deployment.wait_until(
        lambda: any(run.state == "running" for run in runs(deployment, "backfill")[HISTORY]),
        "the scheduler starts the backfill",
    )
    wait_for_scheduler_loops(deployment, LOOPS_AFTER_RUNS)
    # --max-active-runs 1: the other month waits, queued.
    states = sorted(run.state for run in runs(deployment, "backfill")[HISTORY])
    assert states == ["queued", "running"], states


def check_history_backfill_on_airflow2(deployment: Deployment, simulator: MetronomeSimulator) -> None:
    """``airflow dags backfill`` runs the months itself: each one, into the daily layout."""
    # With a slot for its tasks; the scheduler is not needed.
    deployment.stop("scheduler")
    deployment.set_default_pool_slots(2)

    deployment.airflow(*HISTORY_BACKFILL["airflow2"])

    backfill = runs(deployment, "backfill")[HISTORY]
    assert [(run.data_interval, run.state) for run in backfill] == [
        (month, "success") for month in BACKFILLED_INTERVALS
    ]
    # Per month: the sensor's listing and one customer, then the operator's listing and every customer.
    customers = len(simulator.active_customer_ids)
    per_month = customers + 1 + 2 * listing_requests(customers, len(simulator.archived_customer_ids))
    assert len(simulator.requests) == 2 * per_month
    written = sorted(path.parent.name for path in deployment.lake.rglob("costs.jsonl.gz"))
    first, end = BACKFILLED_INTERVALS[0][0].date(), BACKFILLED_INTERVALS[-1][1].date()
    assert written == [f"date={first + dt.timedelta(days=n)}" for n in range((end - first).days)]


def test_unpausing_every_example_queues_one_run_per_scheduled_dag_and_history_is_a_backfill(
    deployment: Deployment, simulator: MetronomeSimulator
) -> None:
    unpaused = start_airflow_and_unpause_every_example(deployment)

    check_one_run_per_scheduled_example(unpaused)
    # Nothing ran (no slot), so nothing asked Metronome or wrote anything.
    assert task_states(deployment) <= {None, "scheduled"}
    assert simulator.requests == []
    assert not deployment.lake.exists()

    # History on purpose: the README's backfill command, for January and February 2024.
    simulator.now = AFTER_BACKFILLED
    if AIRFLOW_V3:
        check_history_backfill_on_airflow3(deployment)
        assert simulator.requests == []
    else:
        check_history_backfill_on_airflow2(deployment, simulator)
