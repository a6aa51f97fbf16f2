"""A fresh Airflow deployment run as a user runs it: its own AIRFLOW_HOME, SQLite, Airflow's own processes."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_metronome.testing import MetronomeSimulator
from tests.support.processes import stop_process_group
from tests.support.runs import connection_json

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


def new_deployment(home: Path, simulator: MetronomeSimulator) -> Deployment:
    """A migrated metadata database in ``home`` (WAL, so the processes do not lock each other out)."""
    (home / "dags").mkdir(parents=True, exist_ok=True)
    deployment = Deployment(home, fresh_environment(home, simulator))
    deployment.airflow("db", "migrate")
    with sqlite3.connect(deployment.database) as connection:
        assert connection.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    return deployment


def stop_all(deployment: Deployment) -> None:
    for name in list(deployment.processes):
        deployment.stop(name)


# -- reading the metadata database --------------------------------------------------------------------


def moment(value: str | None) -> dt.datetime | None:
    """A datetime column as SQLite holds it (naive UTC text, or with an offset)."""
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


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
