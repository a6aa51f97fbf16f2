"""A real account: the customers of a 7-day window, some archived after it and some created inside it.

The simulator (its own process, clock frozen at 2024-02-01, 20 ms per request) holds 1,000 customers
of the window 2024-01-05 .. 2024-01-12: 800 active all along, 100 archived after the window (listed
only with ``only_archived=true``, billed every day of it) and 100 created inside it (billed from the
day of their creation), all added with ``add_customer`` but the 800; plus its 3 generated customers
archived in 2020, which the archived listing shows and the operator leaves out. For each source the
operator runs with its defaults and ``customer_ids=None``, :data:`REPEATS` times. Each run must send
exactly the minimum (both listings' pages, then one request per customer of the window: one page
holds the window and the day before it) and write exactly what the simulator's own model
(``billed_days``, ``breakdowns_for``) says the window holds.

``python -m tests.benchmarks.real_account`` prints the markdown section; :func:`run` returns it with
the targets for ``tests/benchmarks/run.py``.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.common import DAY, PAGE_SIZE, airflow_env, run_child
from tests.benchmarks.simulator_process import SimulatorProcess

CUSTOMERS = 1_000
ARCHIVED_AFTER = 100
CREATED_INSIDE = 100
LATENCY_MS = 20.0
FIRST_DAY = DAY
DAYS = 7
END_DAY = FIRST_DAY + dt.timedelta(days=DAYS)
SOURCES = ("costs", "invoice_breakdowns")
REPEATS = 3
# Customers that exist all along the window were created long before it.
LONG_BEFORE = dt.datetime(2023, 1, 1, tzinfo=dt.timezone.utc)
UTC_MIDNIGHT = dt.time(tzinfo=dt.timezone.utc)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _options() -> list[str]:
    """The simulator's options: 800 generated customers, then the 200 whose lifecycle meets the window."""
    start, end = dt.datetime.combine(FIRST_DAY, UTC_MIDNIGHT), dt.datetime.combine(END_DAY, UTC_MIDNIGHT)
    specs = [
        # Archived from an hour to 17 days after the window ends, all before the frozen clock.
        f"created_at={_rfc3339(LONG_BEFORE + dt.timedelta(hours=index))},"
        f"archived_at={_rfc3339(end + dt.timedelta(hours=1 + 4 * index))}"
        for index in range(ARCHIVED_AFTER)
    ]
    # Created at every time of day, spread over the window's days.
    spacing = (end - start) / CREATED_INSIDE
    specs += [
        f"created_at={_rfc3339(start + dt.timedelta(minutes=30) + index * spacing)}"
        for index in range(CREATED_INSIDE)
    ]
    options = [
        "--customers",
        str(CUSTOMERS - ARCHIVED_AFTER - CREATED_INSIDE),
        "--latency-ms",
        str(LATENCY_MS),
    ]
    # The day before the window too: every customer is asked for it.
    for offset in range(-1, DAYS):
        options += ["--warm-day", (FIRST_DAY + dt.timedelta(days=offset)).isoformat()]
    for spec in specs:
        options += ["--customer", spec]
    return options


@dataclass(frozen=True)
class Expected:
    """What the simulator's model says one source holds for the window."""

    list_pages: int
    customers: int
    records: int
    not_billed: dict[str, int]
    """Per day, the customers of the window with nothing billed on it."""

    @property
    def minimum(self) -> int:
        return self.list_pages + self.customers

    @classmethod
    def of(cls, model: dict[str, Any]) -> Expected:
        billed: dict[str, Any] = model["customers"]
        days = [(FIRST_DAY + dt.timedelta(days=offset)).isoformat() for offset in range(DAYS)]
        # Every customer here has a plan and a contract: those of the window are those billed on some day.
        not_billed = {day: sum(day not in customer["days"] for customer in billed.values()) for day in days}
        return cls(
            list_pages=sum(
                max(1, math.ceil(model[listing] / PAGE_SIZE)) for listing in ("active", "archived")
            ),
            customers=len(billed),
            records=sum(customer["records"] for customer in billed.values()),
            not_billed={day: count for day, count in not_billed.items() if count},
        )


@dataclass(frozen=True)
class SourceRun:
    """The repeats of one source, against the model."""

    source: str
    expected: Expected
    seconds: float
    """The median wall time of the repeats."""
    requests: tuple[int, ...]
    records: tuple[int, ...]
    customers: tuple[int, ...]
    not_billed: tuple[dict[str, int], ...]
    missing_days: int
    customer_set: dict[str, int]
    max_workers: int
    failed: str | None

    @property
    def at_minimum(self) -> bool:
        return not self.failed and set(self.requests) == {self.expected.minimum}

    @property
    def as_modelled(self) -> bool:
        expected = self.expected
        return (
            not self.failed
            and not self.missing_days
            and set(self.records) == {expected.records}
            and set(self.customers) == {expected.customers}
            and all(not_billed == expected.not_billed for not_billed in self.not_billed)
        )

    @property
    def best_possible(self) -> float:
        """The listing's pages one after another, then every customer's request spread over the workers."""
        latency = LATENCY_MS / 1000
        return self.expected.list_pages * latency + self.expected.customers * latency / self.max_workers


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] real account: {message}", file=sys.stderr, flush=True)


def _window() -> tuple[str, str]:
    return f"{FIRST_DAY.isoformat()}T00:00:00Z", f"{END_DAY.isoformat()}T00:00:00Z"


def _run_source(sim: SimulatorProcess, home: Path, source: str) -> SourceRun:
    expected = Expected.of(sim.model(source, FIRST_DAY, END_DAY))
    env = airflow_env(home, sim.url, sim.token)
    starting_on, ending_before = _window()
    results, stats = [], []
    for attempt in range(REPEATS):
        progress(f"{source}, run {attempt + 1}/{REPEATS}")
        sim.reset()
        args = ["operator", "--url", sim.url, "--token", sim.token, "--out", str(home), "--name", source]
        args += ["--source", source, "--starting-on", starting_on, "--ending-before", ending_before]
        result = run_child("tests.benchmarks.fetch_paths", args, env)
        results.append(result)
        stats.append(sim.stats())
        if "failed" in result:
            break
    failed = next((result["failed"] for result in results if "failed" in result), None)
    manifests = [result["manifest"] for result in results if "failed" not in result]
    return SourceRun(
        source=source,
        expected=expected,
        seconds=statistics.median(result["seconds"] for result in results),
        requests=tuple(stat["requests"] for stat in stats),
        records=tuple(manifest["records"] for manifest in manifests),
        customers=tuple(manifest["customers"] for manifest in manifests),
        not_billed=tuple(
            {day: entry["customers"] for day, entry in manifest["not_billed"].items()}
            for manifest in manifests
        ),
        missing_days=sum(len(ids) for manifest in manifests for ids in manifest["missing_days"].values()),
        customer_set=manifests[-1]["customer_set"] if manifests else {},
        max_workers=next((result["max_workers"] for result in results if "failed" not in result), 0),
        failed=failed,
    )


def run() -> tuple[list[str], list[tuple[str, str, bool]]]:
    """Both sources against one simulator; returns the markdown section and its targets."""
    with (
        tempfile.TemporaryDirectory(prefix="metronome-bench-real-") as tmp,
        SimulatorProcess(_options()) as sim,
    ):
        runs = [_run_source(sim, Path(tmp), source) for source in SOURCES]
    return _section(runs), _targets(runs)


def _same(values: tuple[int, ...]) -> str:
    """One figure when every repeat agrees, else each repeat's."""
    return f"{values[0]:,}" if len(set(values)) == 1 else ", ".join(f"{value:,}" for value in values)


def _row(run: SourceRun) -> str:
    expected = run.expected
    if run.failed:
        cells = [f"FAILED after {run.seconds:.1f} s: {run.failed[:120]}", *[""] * 8]
    else:
        cells = [
            _same(run.requests),
            f"{expected.minimum:,} ({expected.list_pages} list pages + {expected.customers:,})",
            _same(run.records),
            f"{expected.records:,}",
            _same(run.customers),
            _same(tuple(sum(counts.values()) for counts in run.not_billed)),
            f"{sum(expected.not_billed.values()):,}",
            f"{run.seconds:.2f}",
            f"{run.best_possible:.2f}",
        ]
    return f"| {run.source} | {' | '.join(cells)} |"


def _section(runs: list[SourceRun]) -> list[str]:
    groups = next((run.customer_set for run in runs if run.customer_set), {})
    described = ", ".join(f"{name.replace('_', ' ')} {count:,}" for name, count in groups.items())
    return [
        f"### 8. A real account: {CUSTOMERS:,} customers of a {DAYS}-day window, {LATENCY_MS:.0f} ms per request",
        "",
        "| source | requests | minimum | records | model's records | customers with records "
        "| customer-days not billed | model's | wall (s) | best possible (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(_row(run) for run in runs),
        "",
        f"{FIRST_DAY.isoformat()} .. {END_DAY.isoformat()} (7 days), simulator frozen at 2024-02-01: "
        f"{CUSTOMERS - ARCHIVED_AFTER - CREATED_INSIDE} customers active all along, {ARCHIVED_AFTER} archived "
        f"after the window (between 1 hour and 17 days after its end) and {CREATED_INSIDE} created inside it "
        "(at every time of day over its 7 days), plus the simulator's 3 customers archived in 2020. The "
        f'operator runs with its defaults (max_workers={runs[0].max_workers}, `on_missing_days="fail"`) '
        "and `customer_ids=None`, raw records to a local file; its manifest's `customer_set`: "
        f"{described or 'none'}. requests = every request the simulator received, listing included; "
        "minimum = the active and the archived listing's pages (100 customers a page) + one request per "
        "customer of the window (one page holds its 7 days and the day before). The model is the "
        "simulator's own (`billed_days`; for breakdowns `breakdowns_for`, one record per invoice): "
        "records, customers with records and the customer-days with nothing billed (a customer created "
        "inside the window, on the days before its creation) must equal it exactly, day by day, with no "
        "day missing. Figures are the same in each of "
        f"{REPEATS} runs (else each is shown); wall is their median. best possible = listing pages x latency + "
        "customers x latency / max_workers.",
    ]


def _targets(runs: list[SourceRun]) -> list[tuple[str, str, bool]]:
    return [
        (
            "Real account: requests = both listings' pages + one per customer of the window",
            "; ".join(f"{run.source} {_same(run.requests)} vs {run.expected.minimum:,}" for run in runs),
            all(run.at_minimum for run in runs),
        ),
        (
            "Real account: records and nothing-billed days exactly as the simulator's model",
            "; ".join(
                f"{run.source} {'failed' if run.failed else _same(run.records)} vs {run.expected.records:,}"
                for run in runs
            ),
            all(run.as_modelled for run in runs),
        ),
    ]


if __name__ == "__main__":
    section, targets = run()
    print("\n".join(section))
    for name, measured, met in targets:
        print(f"- {'PASS' if met else 'MISS'} {name}: {measured}")
