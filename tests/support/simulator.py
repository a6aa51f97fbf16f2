"""The one way the tests start the simulator in a process of its own: through its command line."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from airflow_provider_metronome.testing import MetronomeSimulator

# Generous: only reached when something is broken, never waited out when things work.
DEADLINE_SECONDS = 20.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_SECONDS) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


@dataclass
class StandaloneSimulator:
    """A simulator run from the command line, and what it printed once listening."""

    url: str
    process: subprocess.Popen[str]
    lines: list[str]


@contextmanager
def standalone_simulator(tmp_path: Path, *args: str, extra_lines: int = 0) -> Iterator[StandaloneSimulator]:
    """Run ``python -m airflow_provider_metronome.testing ARGS`` until the block ends, then stop it.

    ``extra_lines`` is how many lines it prints after "listening on ..." that the test wants to read.
    """
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_metronome.testing", "--port-file", str(port_file), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: port_file.exists() or process.poll() is not None, "the simulator listens")
        assert process.poll() is None, process.communicate()
        assert process.stdout is not None
        # Printed and flushed right after the port file is written, so these reads do not wait long.
        lines = [process.stdout.readline().strip() for _ in range(1 + extra_lines)]
        url = lines[0].split(" listening on ", 1)[1].split(" ", 1)[0]
        yield StandaloneSimulator(url, process, lines)
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == 0


def not_produced_yet(sim: MetronomeSimulator, customer_ids: list[str], days: list[dt.date]) -> None:
    """The account's ``days`` are late: withheld from every one of ``customer_ids``.

    Withheld from one customer alone while others have it, a day reads as one that customer has
    nothing billed on, which the operator and the sensor rightly do not wait for.
    """
    for customer_id in customer_ids:
        sim.withhold(customer_id, days)


def billable(sim: MetronomeSimulator) -> list[str]:
    """The active customers ``/costs`` serves (no UNIQUE-type metric), sorted as the operator writes them."""
    return sorted(sim.costs_customer_ids)
