"""The unthrottled all-customers fetch at 20 and 50 ms: listing first (before), fetching while listing
(after), and a plain ``requests`` thread pool, all with 16 workers, against the latency floor.

The simulator runs in its own process with :data:`CUSTOMERS` customers. Each path lists the customers
(10 pages of 100; the operator also lists the archived ones, one page) and fetches one day of costs
for each. floor = requests x latency / workers, as in part 1. ``before`` is the package at
:data:`BASELINE_COMMIT`, which read the listing to its end before the first customer was fetched.

``python -m tests.benchmarks.listing`` prints the markdown section; :func:`run` returns it with its
targets for ``tests/benchmarks/run.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.common import DAY, REPO_ROOT, airflow_env, package_at, run_child
from tests.benchmarks.simulator_process import SimulatorProcess

BASELINE_COMMIT = "5eb00cf"
CUSTOMERS = 1_000
LATENCIES_MS = (20.0, 50.0)
WORKERS = 16
REPEATS = 3
TARGET_FLOOR_RATIO = 1.3


@dataclass(frozen=True)
class Plan:
    label: str
    path: str
    """The path's name in :mod:`tests.benchmarks.fetch_paths`."""
    package: Path
    """The folder whose ``airflow_provider_metronome`` it imports."""


@dataclass(frozen=True)
class Run:
    label: str
    latency_ms: float
    seconds: list[float]
    cpu: list[float]
    requests: int
    output: bytes

    @property
    def wall(self) -> float:
        return statistics.median(self.seconds)

    @property
    def floor(self) -> float:
        return self.requests * self.latency_ms / 1000 / WORKERS

    @property
    def ratio(self) -> float:
        return self.wall / self.floor


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] listing: {message}", file=sys.stderr, flush=True)


def _measure(sim: SimulatorProcess, home: Path, latency: float, plan: Plan) -> Run:
    env = airflow_env(home, sim.url, sim.token)
    args = [
        plan.path,
        "--url",
        sim.url,
        "--token",
        sim.token,
        "--out",
        str(home),
        "--max-workers",
        str(WORKERS),
    ]
    if plan.path == "operator":
        args += ["--name", "operator"]
    seconds, cpu = [], []
    for attempt in range(REPEATS):
        progress(f"{latency:.0f} ms, {plan.label}, run {attempt + 1}/{REPEATS}")
        sim.reset()
        result = run_child("tests.benchmarks.fetch_paths", args, env, cwd=plan.package)
        if "failed" in result or result["customers"] != CUSTOMERS:
            raise RuntimeError(f"{plan.label}: {result.get('failed', result)}")
        seconds.append(result["seconds"])
        cpu.append(result["cpu_seconds"])
    requests = sim.stats()["requests"]
    return Run(plan.label, latency, seconds, cpu, requests, Path(result["output"]).read_bytes())


def run() -> tuple[list[str], list[tuple[str, str, bool]]]:
    """Every path at every latency; returns the markdown section and its targets."""
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="metronome-bench-listing-") as tmp:
        home = Path(tmp)
        plans = [
            Plan("operator, before (lists first)", "operator", package_at(BASELINE_COMMIT, home / "before")),
            Plan("operator, after (fetches while listing)", "operator", REPO_ROOT),
            Plan("requests thread pool", "requests-pool", REPO_ROOT),
        ]
        for latency in LATENCIES_MS:
            options = [
                "--customers",
                str(CUSTOMERS),
                "--latency-ms",
                str(latency),
                "--warm-day",
                DAY.isoformat(),
            ]
            with SimulatorProcess(options) as sim:
                runs += [_measure(sim, home, latency, plan) for plan in plans]
    return _section(runs), _targets(runs)


def _records(run: Run) -> list[bytes]:
    return sorted(run.output.splitlines())


def _section(runs: list[Run]) -> list[str]:
    lines = [
        f"### 11. Fetch while listing: {CUSTOMERS:,} customers, unthrottled, {WORKERS} workers",
        "",
        "| latency | path | requests | wall (s) | floor (s) | wall / floor | client CPU (s) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run.latency_ms:.0f} ms | {run.label} | {run.requests:,} | {run.wall:.2f} | {run.floor:.2f} | "
            f"{run.ratio:.2f}x | {statistics.median(run.cpu):.2f} |"
        )
    befores, afters, pools = runs[0::3], runs[1::3], runs[2::3]
    same_bytes = all(before.output == after.output for before, after in zip(befores, afters, strict=True))
    same_records = all(_records(after) == _records(pool) for after, pool in zip(afters, pools, strict=True))
    lines += [
        "",
        f"Each path lists the customers (100 per page) and fetches each one's costs for {DAY.isoformat()} "
        f"with {WORKERS} workers into a local JSON Lines file, against the simulator in its own process. "
        "floor = requests x latency / workers (the listing's pages counted like any request), as in part 1; "
        f"wall is the median of {REPEATS} runs (for the operator: `execute()`, connection lookup and the "
        "atomic write included). requests are counted by the simulator: the operator also lists the "
        "archived customers (one page). before = commit "
        f"`{BASELINE_COMMIT}`, which read the listing to its end before fetching the first customer; after, "
        "customers are fetched as each listing page arrives, their results waiting in a temporary file for "
        "their turn in id order. The thread pool (one `requests.Session` per thread, results in listing "
        "order) lists first. client CPU = the client process's CPU time, every thread, over the wall "
        "time (median): the simulator's own process, answering the same requests, competes with it for "
        "the machine's CPUs. "
        f"Before and after wrote the same bytes: {'yes' if same_bytes else 'NO'}; the pool wrote the same "
        f"records (in listing order): {'yes' if same_records else 'NO'}.",
    ]
    return lines


def _targets(runs: list[Run]) -> list[tuple[str, str, bool]]:
    afters = runs[1::3]
    return [
        (
            f"Unthrottled all-customers fetch within {TARGET_FLOOR_RATIO}x the latency floor at {WORKERS} "
            f"workers, at {after.latency_ms:.0f} ms",
            f"{after.ratio:.2f}x ({after.wall:.2f} s vs {after.floor:.2f} s; before "
            f"{before.ratio:.2f}x, requests pool {pool.ratio:.2f}x)",
            after.ratio <= TARGET_FLOOR_RATIO,
        )
        for before, after, pool in zip(runs[0::3], afters, runs[2::3], strict=True)
    ]


if __name__ == "__main__":
    section, targets = run()
    print("\n".join(section))
    for name, measured, met in targets:
        print(f"- {'PASS' if met else 'MISS'} {name}: {measured}")
