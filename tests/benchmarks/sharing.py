"""One account's budget, shared: a customer with its own limit, and operator processes at once.

- **A customer-scoped limit**: 60 customers of 100 days each (invoice breakdowns, 10 daily windows a
  page, so 11 pages each: the engine asks 35 days at a time) under an organisation budget of 40
  requests/s, once as it is and once with one customer (the middle one of the fetch order) limited to
  1 request/s on its own: the wall of the second against the first.
- **Processes sharing a budget**: operator processes started together, each with its own customers'
  day (20 ms per request), against one 8 requests/s budget: three with identical work and a fourth with
  a quarter of it, then 4 and 8 with identical work. Each one's wall; the slowest against the floor
  (every useful request of all of them / budget); the identical ones' slowest against their fastest;
  the share of requests answered 429.

Each case runs with this version and with the controller before (commit :data:`BASELINE_COMMIT`, taken
from git into a temporary folder), against the same simulator (this version's, in its own process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tests.benchmarks.common import CHILD_TIMEOUT, REPO_ROOT, airflow_env, run_child
from tests.benchmarks.rate_limit import baseline_tree
from tests.benchmarks.simulator_process import Arrival, SimulatorProcess

BASELINE_COMMIT = "5eb00cfaabe296f50d7da60fd1fbfcbfeb59134f"
VERSIONS = ("this version", "before")

LIMITED_CUSTOMERS = 60
LIMITED_WINDOW = ("2023-10-01T00:00:00Z", "2024-01-09T00:00:00Z")  # 100 days
LIMITED_WINDOWS_PER_PAGE = 10
ACCOUNT_RATE = 40.0
CUSTOMER_RATE = 1.0

SHARED_RATE = 8.0
LATENCY_MS = 20.0
IDENTICAL_CUSTOMERS = 200
# (identical processes, customers of an extra process): three plus a quarter, then four and eight.
MIXES = ((3, IDENTICAL_CUSTOMERS // 4), (4, 0), (8, 0))
MANY_CUSTOMERS = 640  # split between the processes of the 4 and 8 cases
# Who gets the first requests in decides the first shares, so one run's spread is luck as much as
# the controller: this version's cases run this many times, and the run of the median spread is shown.
RUNS = {"this version": 3, "before": 1}
# Then the budget split by hand (each process's task_requests_per_second = budget / processes): what
# a known budget gives, beside what adapting to 429s gives.
CAPPED_PROCESSES = 8

# Until its first 429 a process is in its slow start: the 429s of this first stretch are the start's,
# not the probes'.
START_SECONDS = 2.0
# The processes' profiles count each one's successes per second in slices this long.
PROFILE_SLICE = 10.0

TARGET_CUSTOMER_LIMIT = 1.25
TARGET_SPREAD = 1.5
TARGET_TOGETHER = 1.15
TARGET_TOGETHER_MANY = 1.25
TARGET_THROTTLED = 0.10


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] sharing: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class LimitedRun:
    version: str
    limited: bool
    seconds: float
    requests: int
    throttled: int
    failed: str | None
    limited_timeline: list[Arrival]
    """The limited customer's requests."""

    @property
    def limited_span(self) -> str:
        """When the limited customer's first and last requests arrived, and how many of them were 429s."""
        if not self.limited_timeline:
            return ""
        first, last = self.limited_timeline[0].seconds, self.limited_timeline[-1].seconds
        refused = sum(arrival.status == 429 for arrival in self.limited_timeline)
        return f"{first:.1f}-{last:.1f} s ({len(self.limited_timeline)} requests, {refused} 429s)"


@dataclass(frozen=True)
class ProcessProfile:
    """What the simulator received from one of the processes sharing a budget."""

    wall: float
    """As the process measured it, from its own start."""
    arrivals: list[Arrival]

    @property
    def first(self) -> float:
        return self.arrivals[0].seconds if self.arrivals else 0.0

    @property
    def last(self) -> float:
        return self.arrivals[-1].seconds if self.arrivals else 0.0

    def throttled(self, before: float = float("inf"), after: float = 0.0) -> int:
        return sum(arrival.status == 429 and after <= arrival.seconds < before for arrival in self.arrivals)

    def rates(self, end: float) -> list[float]:
        """Its successes per second in each :data:`PROFILE_SLICE` seconds from the first request to ``end``."""
        slices = [0] * (int(end // PROFILE_SLICE) + 1)
        for arrival in self.arrivals:
            if arrival.status != 429:
                slices[int(arrival.seconds // PROFILE_SLICE)] += 1
        return [count / PROFILE_SLICE for count in slices]


@dataclass(frozen=True)
class SharedRun:
    version: str
    label: str
    processes: int
    identical: int
    walls: list[float]
    requests: int
    throttled: int
    profiles: list[ProcessProfile]
    failed: str | None
    spreads: tuple[float, ...] = ()
    """The spread of every run of the case, when it ran more than once (this one is the median)."""
    cap: float | None = None
    """Each process's own cap (``task_requests_per_second``), when the budget is split by hand."""

    @property
    def throttled_at_start(self) -> int:
        """429s answered in the first :data:`START_SECONDS`, while every process is still in its slow start."""
        return sum(profile.throttled(before=START_SECONDS) for profile in self.profiles)

    @property
    def floor(self) -> float:
        return (self.requests - self.throttled) / SHARED_RATE

    @property
    def together(self) -> float:
        return max(self.walls) / self.floor

    @property
    def spread(self) -> float:
        same = self.walls[: self.identical]
        return max(same) / min(same)

    @property
    def share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0


def _customer_limited(home: Path, packages: dict[str, Path]) -> list[LimitedRun]:
    options = ["--customers", str(LIMITED_CUSTOMERS), "--rate-limit", str(ACCOUNT_RATE)]
    options += ["--day-windows-per-page", str(LIMITED_WINDOWS_PER_PAGE)]
    runs = []
    with SimulatorProcess(options) as sim:
        ids = sorted(sim.customer_ids())
    limited_id = ids[len(ids) // 2]
    for limited in (False, True):
        extra = ["--customer-rate-limit", f"{limited_id}={CUSTOMER_RATE:g}"] if limited else []
        with SimulatorProcess(options + extra) as sim:
            env = airflow_env(home, sim.url, sim.token)
            for version, package in packages.items():
                progress(f"customer limit {'on' if limited else 'off'}, {version}")
                sim.reset()
                args = ["operator", "--url", sim.url, "--token", sim.token, "--out", str(home)]
                args += ["--source", "invoice_breakdowns", "--name", "limited"]
                args += ["--starting-on", LIMITED_WINDOW[0], "--ending-before", LIMITED_WINDOW[1]]
                result = run_child("tests.benchmarks.fetch_paths", args, env, cwd=package)
                stats = sim.stats()
                runs.append(
                    LimitedRun(
                        version,
                        limited,
                        result["seconds"],
                        stats["requests"],
                        stats["throttled"],
                        result.get("failed"),
                        [arrival for arrival in sim.timeline() if arrival.customer_id == limited_id],
                    )
                )
    return runs


def _shared(
    home: Path, package: Path, version: str, identical: int, extra: int, *, cap: float | None = None
) -> SharedRun:
    options = [
        "--customers",
        str(MANY_CUSTOMERS),
        "--latency-ms",
        str(LATENCY_MS),
        "--warm-day",
        "2024-01-05",
    ]
    options += ["--rate-limit", str(SHARED_RATE)]
    with SimulatorProcess(options) as sim:
        env = airflow_env(home, sim.url, sim.token)
        ids = sorted(sim.customer_ids())
        each = IDENTICAL_CUSTOMERS if extra else len(ids) // identical
        sizes = [each] * identical + ([extra] if extra else [])
        children = []
        batches = []
        offset = 0
        for index, size in enumerate(sizes):
            batch_ids = ids[offset : offset + size]
            batches.append(set(batch_ids))
            batch = home / f"batch-{index}.json"
            batch.write_text(json.dumps(batch_ids))
            offset += size
            args = ["operator", "--url", sim.url, "--token", sim.token, "--out", str(home)]
            args += ["--customers-file", str(batch), "--name", f"batch-{index}"]
            args += [] if cap is None else ["--task-requests-per-second", str(cap)]
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.benchmarks.fetch_paths", *args],
                    cwd=package,
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        results = [
            json.loads(child.communicate(timeout=CHILD_TIMEOUT)[0].strip().splitlines()[-1])
            for child in children
        ]
        stats = sim.stats()
        timeline = sim.timeline()
    label = f"{identical} identical + 1 quarter" if extra else f"{identical} identical"
    if cap is not None:
        label += f", each capped at {cap:g} request/s"
    profiles = [
        ProcessProfile(result["seconds"], [arrival for arrival in timeline if arrival.customer_id in batch])
        for result, batch in zip(results, batches, strict=True)
    ]
    return SharedRun(
        version,
        label,
        len(sizes),
        identical,
        [result["seconds"] for result in results],
        stats["requests"],
        stats["throttled"],
        profiles,
        next((result["failed"] for result in results if "failed" in result), None),
        cap=cap,
    )


def run() -> tuple[list[str], list[tuple[str, str, bool]]]:
    """Every case, this version and the one before; returns the markdown section and its targets."""
    with tempfile.TemporaryDirectory(prefix="metronome-bench-sharing-") as tmp:
        home = Path(tmp)
        packages = {"this version": REPO_ROOT, "before": baseline_tree(home / "baseline", BASELINE_COMMIT)}
        limited = _customer_limited(home, packages)
        shared = []
        for identical, extra in MIXES:
            for version, package in packages.items():
                runs = []
                for attempt in range(RUNS[version]):
                    progress(
                        f"{identical} processes{' and a quarter' if extra else ''}, {version} ({attempt + 1})"
                    )
                    runs.append(_shared(home, package, version, identical, extra))
                shared.append(_median(runs))
        progress(f"{CAPPED_PROCESSES} processes capped by hand, this version")
        split = SHARED_RATE / CAPPED_PROCESSES
        shared.append(_shared(home, REPO_ROOT, "this version", CAPPED_PROCESSES, 0, cap=split))
    return section(limited, shared), targets(limited, shared)


def _median(runs: list[SharedRun]) -> SharedRun:
    """The run of the median spread, with every run's spread."""
    ordered = sorted(runs, key=lambda run: run.spread)
    median = ordered[len(ordered) // 2]
    return median if len(runs) == 1 else replace(median, spreads=tuple(run.spread for run in ordered))


def _limited_pair(runs: list[LimitedRun], version: str) -> tuple[LimitedRun, LimitedRun]:
    free = next(run for run in runs if run.version == version and not run.limited)
    limited = next(run for run in runs if run.version == version and run.limited)
    return free, limited


def section(limited: list[LimitedRun], shared: list[SharedRun]) -> list[str]:
    lines = [
        "### 12. One account's budget, shared",
        "",
        f"{LIMITED_CUSTOMERS} customers, 100 days of invoice breakdowns each ({LIMITED_WINDOWS_PER_PAGE} daily "
        f"windows a page: 11 pages), organisation budget {ACCOUNT_RATE:g} requests/s:",
        "",
        f"| version | one customer at {CUSTOMER_RATE:g} request/s | wall (s) | requests | 429s | "
        "wall / without the customer limit | the middle customer's requests |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for version in VERSIONS:
        free, capped = _limited_pair(limited, version)
        for run in (free, capped):
            outcome = f"FAILED: {run.failed[:80]}" if run.failed else f"{run.seconds:.1f}"
            ratio = "" if run.failed or free.failed else f"{run.seconds / free.seconds:.2f}x"
            lines.append(
                f"| {version} | {'yes' if run.limited else 'no'} | {outcome} | {run.requests:,} | "
                f"{run.throttled:,} | {ratio} | {run.limited_span} |"
            )
    lines += [
        "",
        f"Operator processes started together, one day of their own customers each ({LATENCY_MS:.0f} ms per "
        f"request), one budget of {SHARED_RATE:g} requests/s:",
        "",
        "| version | processes | each one's wall (s) | identical: slowest / fastest | slowest / floor | "
        f"requests | 429s | of which in the first {START_SECONDS:g} s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for case in shared:
        walls = ", ".join(f"{wall:.0f}" for wall in case.walls)
        outcome = f"FAILED: {case.failed[:80]}" if case.failed else walls
        runs = f" (runs: {', '.join(f'{spread:.2f}x' for spread in case.spreads)})" if case.spreads else ""
        lines.append(
            f"| {case.version} | {case.label} | {outcome} | {case.spread:.2f}x{runs} | {case.together:.2f}x "
            f"(floor {case.floor:.0f} s) | {case.requests:,} | {case.throttled:,} ({case.share:.0%}) | "
            f"{case.throttled_at_start:,} |"
        )
    lines += profile(shared)
    lines += [
        "",
        "The limited customer is the middle one of the fetch order (its requests: when the first and the last "
        "arrived, in seconds after the run's first request); its 429s carry "
        "`X-Metronome-Rate-Limit-Type: customer`, the organisation's `client`. floor = every useful request "
        "of all the processes / budget (a 429 spends no budget), counted by the simulator. Identical "
        f"processes have {IDENTICAL_CUSTOMERS} customers each, the quarter {IDENTICAL_CUSTOMERS // 4}; in the "
        f"4 and 8 cases {MANY_CUSTOMERS} customers are split evenly; the 429s of the first {START_SECONDS:g} s "
        "are those of the start, when every process is still in its slow start (unpaced). This version's "
        f"shared cases ran {RUNS['this version']} times each: the row (and the profile) is the run of the median spread, the "
        "spreads of all of them in brackets; `before` ran once. The capped row splits the budget by hand "
        f"instead: each of its {CAPPED_PROCESSES} processes has `task_requests_per_second` = "
        f"{SHARED_RATE:g} / {CAPPED_PROCESSES}; it is not one of the targets. `before` is commit "
        f"`{BASELINE_COMMIT[:7]}`: every 429 paused the account and cut its rate, which then grew back by "
        "a few percent per success.",
    ]
    return lines


def profile(shared: list[SharedRun]) -> list[str]:
    """Each process of this version's shared runs: what the simulator received from it, over time."""
    lines = [
        "",
        "Each process of this version, as the simulator received its requests (seconds after the first request "
        f"of all; successes per second in each {PROFILE_SLICE:g} s from then):",
        "",
        f"| processes | process | wall (s) | first-last request (s) | 429s in the first {START_SECONDS:g} s | "
        f"429s after | successes/s, each {PROFILE_SLICE:g} s |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for case in shared:
        if case.version != "this version":
            continue
        end = max(process.last for process in case.profiles)
        for index, process in enumerate(case.profiles):
            rates = " ".join(f"{rate:.1f}" for rate in process.rates(end))
            lines.append(
                f"| {case.label} | {index + 1} | {process.wall:.0f} | {process.first:.1f}-{process.last:.1f} | "
                f"{process.throttled(before=START_SECONDS)} | {process.throttled(after=START_SECONDS)} | {rates} |"
            )
    return lines


def targets(limited: list[LimitedRun], shared: list[SharedRun]) -> list[tuple[str, str, bool]]:
    free, capped = _limited_pair(limited, "this version")
    ratio = capped.seconds / free.seconds
    found = [
        (
            f"A customer-scoped limit slows the run at most {TARGET_CUSTOMER_LIMIT}x",
            "failed"
            if capped.failed or free.failed
            else f"{ratio:.2f}x ({capped.seconds:.1f} s vs {free.seconds:.1f} s)",
            not (capped.failed or free.failed) and ratio <= TARGET_CUSTOMER_LIMIT,
        )
    ]
    for run in shared:
        if run.version != "this version" or run.cap is not None:
            continue
        bound = TARGET_TOGETHER_MANY if run.processes > 4 else TARGET_TOGETHER
        met = (
            not run.failed
            and run.spread <= TARGET_SPREAD
            and run.together <= bound
            and run.share <= TARGET_THROTTLED
        )
        found.append(
            (
                f"{run.label} processes on {SHARED_RATE:g} requests/s: identical within {TARGET_SPREAD}x of "
                f"each other, together within {bound}x the floor, at most {TARGET_THROTTLED:.0%} throttled",
                "failed"
                if run.failed
                else f"{run.spread:.2f}x apart, {run.together:.2f}x the floor, {run.share:.1%} throttled",
                met,
            )
        )
    return found


if __name__ == "__main__":
    section_lines, found = run()
    print("\n".join(section_lines))
    for name, measured, met in found:
        print(f"- {'PASS' if met else 'MISS'} {name}: {measured}")
