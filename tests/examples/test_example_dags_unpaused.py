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
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_metronome._compat import AIRFLOW_V3
from airflow_provider_metronome.testing import MetronomeSimulator
from tests.support.processes import stop_process_group
from tests.support.runs import connection_json

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
# Scheduler loops to watch after the expected runs exist: a flood (catch-up) would show in the first.
LOOPS_AFTER_RUNS = 3
# Generous: only reached when something is broken, never waited out when things work.
STARTUP_DEADLINE = 180.0
CLI_TIMEOUT = 300.0
# Runs of a CLI command that SQLite turned away because the scheduler was writing.
LOCKED_RETRIES = 5
POLL = 0.2
LOG_TAIL = 4000


# -- a fresh Airflow, run as a user runs it --------------------------------------------------------------


@dataclass
class Deployment:
    """A fresh AIRFLOW_HOME and the environment of every Airflow process run in it."""

    home: Path
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def database(self) -> Path:
        return self.home / "airflow.db"

    @property
    def lake(self) -> Path:
        return self.home / "lake"

    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def airflow(self, *args: str) -> str:
        """Run ``airflow ARGS`` to completion; its output, or a failure naming it.

        SQLite refuses at once, whatever the busy timeout, a write that could deadlock with the
        scheduler's ("database is locked"); the command's transaction is rolled back, so it is run
        again, a few times at most.
        """
        for attempt in range(LOCKED_RETRIES + 1):
            result = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT,
                check=False,
            )
            output = result.stdout + result.stderr
            if result.returncode == 0 or "database is locked" not in output or attempt == LOCKED_RETRIES:
                break
        assert result.returncode == 0, (
            f"airflow {' '.join(args)} exited {result.returncode}:\n{output[-LOG_TAIL:]}"
        )
        return output

    def start(self, name: str, *args: str) -> None:
        """Start ``airflow ARGS`` in the background (its own process group), its output in ``<name>.log``."""
        with self.log(name).open("ab") as out:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self, name: str) -> None:
        """Stop a process started by ``start`` (and its children), by its own process group id."""
        stop_process_group(self.processes.pop(name))

    def check_running(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"airflow {name} exited {process.returncode}:\n{self.tail(name)}"

    def tail(self, name: str) -> str:
        path = self.log(name)
        return path.read_text(errors="replace")[-LOG_TAIL:] if path.exists() else "(no output)"

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of the metadata database, read as the processes write it."""
        connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def set_default_pool_slots(self, slots: int) -> None:
        """What ``airflow pools set default_pool <slots> ...`` does, without starting Airflow for it."""
        with sqlite3.connect(self.database, timeout=30) as connection:
            changed = connection.execute(
                "UPDATE slot_pool SET slots = ? WHERE pool = 'default_pool'", (slots,)
            )
            assert changed.rowcount == 1

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` (and that every process still runs) until it holds, with a deadline."""
        deadline = time.monotonic() + STARTUP_DEADLINE
        while True:
            self.check_running()
            if condition():
                return
            logs = "\n".join(f"--- {name}.log\n{self.tail(name)}" for name in self.processes)
            assert time.monotonic() < deadline, f"timed out waiting until {what}\n{logs}"
            time.sleep(POLL)


def fresh_environment(home: Path, simulator: MetronomeSimulator) -> dict[str, str]:
    """This interpreter's environment without any Airflow setting of the test session, for ``home``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW", "METRONOME_EXAMPLES_")) and name != "METRONOME_PROVIDER_TESTS_HOME"
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            # Four processes share one SQLite file: each waits up to a minute for another's write
            # (sqlite3's default is 5 s, which a busy machine outlasts: "database is locked").
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}?timeout=60",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Airflow's default, spelled out: new DAGs wait for the user to unpause them.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # A heartbeat a second, to see the scheduler's loop go round.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            # Few executor workers on a 2-CPU machine (none of them gets a task while the pool is empty).
            "AIRFLOW__CORE__PARALLELISM": "4",
            # What a user sets: the connection (the simulator) and where the examples write.
            "AIRFLOW_CONN_METRONOME_DEFAULT": connection_json(simulator.url),
            "AIRFLOW_VAR_METRONOME_COSTS_BASE_URI": f"file://{home / 'lake'}",
            "PYTHONUNBUFFERED": "1",
            # Executors start tasks with the `airflow` command: this interpreter's.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
    )
    return env


@pytest.fixture
def deployment(tmp_path: Path, simulator: MetronomeSimulator) -> Iterator[Deployment]:
    home = tmp_path / "airflow-home"
    (home / "dags").mkdir(parents=True)
    for path in sorted(EXAMPLES.glob("*.py")):
        shutil.copy(path, home / "dags" / path.name)
    deployment = Deployment(home, fresh_environment(home, simulator))
    deployment.airflow("db", "migrate")
    # Write-ahead logging: the processes (and this test's reads) do not lock each other out of the file.
    with sqlite3.connect(deployment.database) as connection:
        assert connection.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    # No slot for any task: the scheduler creates and plans runs, and none of their tasks is queued.
    deployment.set_default_pool_slots(0)
    try:
        yield deployment
    finally:
        for name in list(deployment.processes):
            deployment.stop(name)


# -- reading the metadata database --------------------------------------------------------------------


def moment(value: str | None) -> dt.datetime | None:
    """A datetime column as SQLite holds it (naive UTC text, or with an offset)."""
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Run:
    dag_id: str
    run_type: str
    state: str
    data_interval: tuple[dt.datetime | None, dt.datetime | None]


def runs(deployment: Deployment, run_type: str | None = None) -> dict[str, list[Run]]:
    """Every DAG run, by DAG id, in data-interval order (``run_type``: only those)."""
    rows = deployment.query(
        "SELECT dag_id, run_type, state, data_interval_start, data_interval_end FROM dag_run"
        " ORDER BY dag_id, data_interval_start"
    )
    found: dict[str, list[Run]] = {dag_id: [] for dag_id in EXAMPLE_DAGS}
    for dag_id, kind, state, start, end in rows:
        if run_type is None or kind == run_type:
            found.setdefault(dag_id, []).append(Run(dag_id, kind, state, (moment(start), moment(end))))
    return found


def stored_dags(deployment: Deployment) -> dict[str, bool]:
    """The DAGs the metadata database knows, and whether each is paused."""
    return {dag_id: bool(paused) for dag_id, paused in deployment.query("SELECT dag_id, is_paused FROM dag")}


def next_run_creation(deployment: Deployment) -> dict[str, dt.datetime | None]:
    """When the scheduler plans to create each DAG's next run (None: not planned)."""
    rows = deployment.query("SELECT dag_id, next_dagrun_create_after FROM dag")
    return {dag_id: moment(value) for dag_id, value in rows}


def scheduler_heartbeat(deployment: Deployment) -> dt.datetime | None:
    rows = deployment.query(
        "SELECT max(latest_heartbeat) FROM job WHERE job_type = 'SchedulerJob' AND state = 'running'"
    )
    return moment(rows[0][0]) if rows else None


def wait_for_scheduler_loops(deployment: Deployment, loops: int) -> None:
    """Until the scheduler has heartbeated ``loops`` more times (once a second, from within its loop)."""
    seen: list[dt.datetime] = []

    def went_round() -> bool:
        beat = scheduler_heartbeat(deployment)
        if beat is not None and (not seen or beat > seen[-1]):
            seen.append(beat)
        return len(seen) > loops

    deployment.wait_until(went_round, f"the scheduler heartbeated {loops} more times")


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


@contextmanager
def utc_days() -> Iterator[list[dt.date]]:
    """The UTC dates the block ran on: one, unless it ran over midnight."""
    days = [dt.datetime.now(dt.timezone.utc).date()]
    yield days
    last = dt.datetime.now(dt.timezone.utc).date()
    if last != days[0]:
        days.append(last)


def listing_requests(active: int, archived: int) -> int:
    """Requests for one listing of a window's customers: active ones, then archived, 100 a page."""
    return max(1, math.ceil(active / 100)) + max(1, math.ceil(archived / 100))


# -- the test ---------------------------------------------------------------------------------------------


@dataclass
class Unpaused:
    """What the scheduler made of the examples once they were unpaused."""

    days: list[dt.date]  # the UTC dates it ran on
    created: dict[str, list[Run]]
    planned: dict[str, dt.datetime | None]
    max_active_runs: dict[str, int]


def start_airflow_and_unpause_every_example(deployment: Deployment) -> Unpaused:
    with utc_days() as days:
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
    return Unpaused(days, created, planned, limits)


def check_one_run_per_scheduled_example(unpaused: Unpaused) -> None:
    days, created, planned = unpaused.days, unpaused.created, unpaused.planned
    counts = {dag_id: len(found) for dag_id, found in created.items()}
    if len(days) == 1:
        assert counts == RUNS_WHEN_UNPAUSED, counts
    assert counts[CONSUMER] == 0
    for dag_id in SCHEDULED_DAGS:
        assert {run.run_type for run in created[dag_id]} == {"scheduled"}
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
