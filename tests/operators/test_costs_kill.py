"""A killed MetronomeCostsOperator task leaves the previous object intact (local files; S3 in test_costs_s3).

Each test runs the task in a real child process (``task_process.py``: Airflow's ``dag.test()``,
whose task runner installs the same SIGTERM handler as a worker) against the simulator, waits until
it is fetching, and signals it:

- SIGTERM: Airflow calls ``on_kill``; the task stops fetching and exits with nothing written.
- SIGKILL: nothing runs in the task; the previous object stays, and the temporary file it leaves
  is removed by the next successful run once it is older than ``STALE_TEMPORARY_AGE``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from airflow_provider_metronome._compat import AIRFLOW_V3
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.output import writers
from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from tests.support.simulator import billable

TASK_PROCESS = Path(__file__).with_name("task_process.py")
REPO = Path(__file__).resolve().parents[2]
PREVIOUS = b'{"customer_id":"previous run"}\n'
# Generous bounds for a loaded CI machine; the task normally starts in a few seconds and stops in
# well under one after the signal.
START_DEADLINE = 120.0
STOP_DEADLINE = 60.0
# Each request waits this long, so the task is still fetching when the signal arrives.
REQUEST_DELAY = 0.3


@contextlib.contextmanager
def task_process(
    airflow_db: Path,
    tmp_path: Path,
    customer_ids: list[str],
    output_uri: str,
    output_conn_id: str = "",
    *,
    ending_before: str = "2024-01-06",
    split_by_day: bool = False,
    spool: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """The task running in a child process; killed on the way out if a test left it running."""
    dag_file = airflow_db.parent / "dags" / f"kill_test_{uuid.uuid4().hex[:12]}.py"
    dag_file.parent.mkdir(exist_ok=True)
    dag_file.write_text(TASK_PROCESS.read_text())
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KILL_TEST_CUSTOMERS": json.dumps(customer_ids),
        "KILL_TEST_OUTPUT_URI": output_uri,
        "KILL_TEST_OUTPUT_CONN_ID": output_conn_id,
        "KILL_TEST_ENDING_BEFORE": ending_before,
        "KILL_TEST_SPLIT": "1" if split_by_day else "",
    }
    if spool is not None:
        env["TMPDIR"] = str(spool)
    log = (tmp_path / "task.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(dag_file)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()
        dag_file.unlink()


def task_log(tmp_path: Path) -> str:
    return (tmp_path / "task.log").read_text(errors="replace")


def wait_for_requests(
    sim: MetronomeSimulator, process: subprocess.Popen[bytes], tmp_path: Path, count: int
) -> None:
    """Poll until the task has sent ``count`` costs requests; fail if it exits or the deadline passes."""
    deadline = time.monotonic() + START_DEADLINE
    while len(sim.requests_for("/costs")) < count:
        if process.poll() is not None:
            pytest.fail(f"the task exited with {process.returncode} before fetching:\n{task_log(tmp_path)}")
        if time.monotonic() > deadline:
            pytest.fail(f"the task did not start fetching in time:\n{task_log(tmp_path)}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)


def stopped(process: subprocess.Popen[bytes], tmp_path: Path) -> int:
    try:
        return process.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the task was still running {STOP_DEADLINE:.0f} s after the signal:\n{task_log(tmp_path)}"
        )


def later(mocker: MockerFixture, hours: float) -> None:
    """Move the writers module's clock ``hours`` ahead, so that today's temporaries count as stale."""
    moved = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)
    mocker.patch.object(writers, "_utcnow", return_value=moved)


def run_again(ids: list[str], output_uri: str, **kwargs: Any) -> dict[str, Any]:
    return MetronomeCostsOperator(
        task_id="fetch_costs",
        customer_ids=ids,
        output_uri=output_uri,
        starting_on="2024-01-05",
        ending_before="2024-01-06",
        **kwargs,
    ).execute({})


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_sigterm_stops_the_task_with_nothing_written(
    sim: MetronomeSimulator, airflow_db: Path, tmp_path: Path, suffix: str
) -> None:
    ids = billable(sim)
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"2024-01-05{suffix}"
    target.write_bytes(PREVIOUS)
    sim.inject(Fault.slow(REQUEST_DELAY), path="/costs", times=None)

    with task_process(airflow_db, tmp_path, ids, f"file://{out}/{{date}}{suffix}") as process:
        wait_for_requests(sim, process, tmp_path, 3)
        process.send_signal(signal.SIGTERM)
        stopped(process, tmp_path)

    log = task_log(tmp_path)
    # Airflow 3's handler only calls on_kill, and the operator stops itself; Airflow 2's raises
    # AirflowTaskTerminated right after on_kill. Either way the writer discards the run's output.
    stop = "The task was killed while fetching" if AIRFLOW_V3 else "Task received SIGTERM signal"
    assert stop in log, log
    # It stopped fetching: the customers after the signal were never asked for.
    assert len(sim.requests_for("/costs")) < len(ids)
    assert target.read_bytes() == PREVIOUS
    assert sorted(os.listdir(out)) == [target.name]


def test_sigkill_leaves_the_previous_file_and_the_next_run_removes_the_stale_temporary(
    sim: MetronomeSimulator, airflow_db: Path, tmp_path: Path, mocker: MockerFixture
) -> None:
    ids = billable(sim)[:12]
    out = tmp_path / "out"
    out.mkdir()
    target = out / "2024-01-05.jsonl.gz"
    target.write_bytes(PREVIOUS)
    uri = f"file://{out}/{{date}}.jsonl.gz"
    sim.inject(Fault.slow(REQUEST_DELAY), path="/costs", times=None)

    with task_process(airflow_db, tmp_path, ids, uri) as process:
        wait_for_requests(sim, process, tmp_path, 3)
        process.kill()
        assert stopped(process, tmp_path) == -signal.SIGKILL

    # The final file is untouched; the killed run's hidden temporary is what no process could remove.
    assert target.read_bytes() == PREVIOUS
    leftovers = [name for name in os.listdir(out) if name != target.name]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(f".{target.name}.tmp-")

    sim.clear_faults()
    # A run right after keeps it: a temporary this young may belong to a run still writing.
    run_again(ids, uri)
    assert sorted(os.listdir(out)) == sorted([target.name, *leftovers])

    # Once it is older than STALE_TEMPORARY_AGE, the next successful run removes it.
    later(mocker, hours=2)
    manifest = run_again(ids, uri)
    assert sorted(os.listdir(out)) == [target.name]
    assert manifest["bytes"] == target.stat().st_size


def test_sigkill_of_a_split_run_leaves_no_copy_of_the_billing_data_on_local_disk(
    sim: MetronomeSimulator, airflow_db: Path, tmp_path: Path
) -> None:
    ids = billable(sim)[:12]
    out, spool = tmp_path / "out", tmp_path / "spool"
    out.mkdir()
    spool.mkdir()
    sim.inject(Fault.slow(REQUEST_DELAY), path="/costs", times=None)

    with task_process(
        airflow_db,
        tmp_path,
        ids,
        f"file://{out}/date={{date}}/costs.jsonl",
        ending_before="2024-01-08",
        split_by_day=True,
        spool=spool,
    ) as process:
        # Several customers' days are spooled by now.
        wait_for_requests(sim, process, tmp_path, 5)
        process.kill()
        assert stopped(process, tmp_path) == -signal.SIGKILL

    # The spool files had no name on disk: nothing of them is left, and no day was written.
    assert [path for path in spool.rglob("*")] == []
    assert [path for path in out.rglob("*") if path.is_file()] == []
