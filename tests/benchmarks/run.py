"""Benchmarks of the provider against what users would otherwise write; prints a markdown table.

Run from the repository root: ``python tests/benchmarks/run.py`` (or ``make bench``). Not part of the
test run. It starts the project's simulator in a separate process and measures:

1. an all-customers day fetch (1,000 customers, 50 ms per request): the operator at its default and
   tuned ``max_workers``, a sequential ``requests`` loop, and the official ``metronome-sdk`` client;
2. the CPU cost of one 100-window costs page against a ``json.loads`` + ``json.dumps`` floor;
3. the operator's peak RSS for 100 and for 10,000 customers with large line-item breakdowns;
4. what importing the operator and sensor adds to parsing a DAG file;
5. requests per pipeline: a 90-day history load, a 7-day restatement and the daily DAG with its
   sensor, before and after one fetch per customer per window (:mod:`tests.benchmarks.request_budget`);
6. the all-customers fetch under a rate-limited simulator, against the version before the rate
   controller and a plain ``requests`` + ``tenacity`` loop (:mod:`tests.benchmarks.rate_limit`);
7. the client CPU per request, against the version before (:mod:`tests.benchmarks.request_cpu`);
8. a real account: the customers of a 7-day window, some archived after it or created inside it, in
   requests against the minimum and records against the simulator's model
   (:mod:`tests.benchmarks.real_account`);
9. ordinary turbulence: 503s and HTML pages under a rate limit, ten seeded runs against their floor
   and a calm run's bytes (:mod:`tests.benchmarks.turbulence`; ``--turbulence-runs`` for fewer);
10. a 100-day breakdowns window against the simulator's gateway timeout, before and after windows are
    split (:mod:`tests.benchmarks.gateway`);
11. the unthrottled all-customers fetch at 20 and 50 ms, before and after fetching while listing,
    beside a plain ``requests`` thread pool (:mod:`tests.benchmarks.listing`).

Also Parquet against JSON Lines (:mod:`tests.benchmarks.parquet_output`) and one account's budget shared:
a customer with its own limit, and operator processes at once (:mod:`tests.benchmarks.sharing`).

Progress goes to stderr; the results go to stdout as markdown. ``--only`` runs some parts; the targets
of parts not run are left out. The exit status is 1 when a target is missed.

The results are also written into ``docs/benchmarks.md`` (``--page`` for another page, ``--no-page``
for none), the one home of the published tables: each part's section lives between
``<!-- bench:<part> -->`` and ``<!-- /bench:<part> -->``, with the command, the time and the machine of
the run that measured it, and the targets table between ``<!-- bench:targets -->`` and
``<!-- /bench:targets -->`` has one row per target, tagged with its part. As each part finishes, its
region is rewritten and its rows of the targets table replaced; the rest of the page (its prose, the
other parts' regions and rows) is left byte for byte as it was. A page without the region of a part
to run is refused before anything is measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

# cpu_page is imported where it is used: it imports the provider (and Airflow), which the runner itself
# does not need (and the page's unit tests should not pay for).
from tests.benchmarks import (  # noqa: E402
    gateway,
    import_cost,
    listing,
    memory_child,
    parquet_output,
    rate_limit,
    real_account,
    request_budget,
    request_cpu,
    sharing,
    turbulence,
)
from tests.benchmarks.common import DAY, PAGE_SIZE, airflow_env, run_child  # noqa: E402
from tests.benchmarks.simulator_process import SimulatorProcess  # noqa: E402

FETCH_CUSTOMERS = 1_000
FETCH_LATENCY_MS = 50.0
TUNED_WORKERS = (16, 32)
TARGET_WORKERS = 16
# Short runs are repeated and the median kept; the sequential baselines take a minute each, run once.
OPERATOR_REPEATS = 3
MEMORY_SIZES = (100, 10_000)
MEMORY_LINE_ITEMS = 50
MEMORY_FORMATS = ("raw", "line_items")

TARGET_FLOOR_RATIO = 1.3
TARGET_SPEEDUP = 10.0
TARGET_PAGE_RATIO = 1.5
TARGET_RSS_GROWTH_MB = 30.0
TARGET_IMPORT_MS = 100.0
PARTS = (
    "fetch",
    "cpu",
    "memory",
    "memorys3",
    "imports",
    "budget",
    "budgetlimited",
    "ratelimit",
    "requestcpu",
    "realaccount",
    "turbulence",
    "parquet",
    "gateway",
    "listing",
    "sharing",
)


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool


@dataclass(frozen=True)
class FetchRun:
    """One path of the all-customers fetch, with the requests the simulator received from it."""

    label: str
    path: str
    """``operator``, ``requests`` or ``sdk``: the path's name in :mod:`tests.benchmarks.fetch_paths`."""
    max_workers: int
    seconds: float
    requests: int
    list_pages: int

    @property
    def floor(self) -> float:
        """The issue's floor: every request's latency, spread over the workers."""
        return self.requests * FETCH_LATENCY_MS / 1000 / self.max_workers

    @property
    def listing_floor(self) -> float:
        """The floor when the (cursor-paginated, so sequential) customer listing is counted as such.

        The operator fetches from the first listing page on, so only that page comes before any fetch;
        the sequential baselines list first.
        """
        latency = FETCH_LATENCY_MS / 1000
        listed_first = 1 if self.path == "operator" else self.list_pages
        return listed_first * latency + (self.requests - self.list_pages) * latency / self.max_workers


# -- 1. all-customers fetch --------------------------------------------------------------------------


def _expected_requests(customers: int, *, archived_listing: bool = True) -> tuple[int, int]:
    """Customer-list pages and costs pages, from the page size: one day fits one page per customer.

    The operator also lists the archived customers (one page: the simulator's few, archived long
    before the day); the baselines list the active ones only.
    """
    return math.ceil(customers / PAGE_SIZE) + int(archived_listing), customers


def _read_output(path: str) -> tuple[list[str], list[Any]]:
    """The output's lines, sorted, and its records, sorted by customer and window."""
    with open(path, encoding="utf-8") as file:
        lines = sorted(file)
    records = sorted(
        (json.loads(line) for line in lines), key=lambda item: (item["customer_id"], item["start_timestamp"])
    )
    return lines, records


def compare_outputs(outputs: dict[str, tuple[list[str], list[Any]]]) -> str:
    """A sentence on whether every path wrote the same records, and which wrote the same bytes."""
    (reference, (lines, records)), *others = outputs.items()
    same_bytes = [name for name, (other_lines, _) in others if other_lines == lines]
    same_records = [name for name, (_, other_records) in others if other_records == records]
    differ = [name for name, _ in others if name not in same_records]
    if differ:
        return f"The outputs DIFFER: {', '.join(differ)} did not write the records of {reference}."
    sentence = "Every path wrote the same records"
    if same_bytes:
        sentence += f"; {', '.join(same_bytes)} wrote the same bytes as {reference}"
    rewritten = [name for name in same_records if name not in same_bytes]
    if rewritten:
        sentence += (
            f"; {', '.join(rewritten)} re-encoded them (its models reorder fields and turn whole numbers "
            "such as `37` into `37.0`)"
        )
    return sentence + "."


def _fetch_once(
    sim: SimulatorProcess, env: dict[str, str], out: Path, path: str, max_workers: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    sim.reset()
    args = [path, "--url", sim.url, "--token", sim.token, "--out", str(out)]
    if max_workers is not None:
        args += ["--max-workers", str(max_workers)]
    result = run_child("tests.benchmarks.fetch_paths", args, env)
    return result, sim.stats()


def _check_fetch(label: str, path: str, result: dict[str, Any], stats: dict[str, Any]) -> None:
    """Refuse to publish a figure for a run that did not do exactly the expected work."""
    list_pages, costs_pages = _expected_requests(FETCH_CUSTOMERS, archived_listing=path == "operator")
    counted = stats["by_endpoint"]
    problems = []
    if result["customers"] != FETCH_CUSTOMERS or result["windows"] != FETCH_CUSTOMERS:
        problems.append(f"{result['customers']} customers and {result['windows']} windows")
    if counted.get("customers") != list_pages or counted.get("costs") != costs_pages or stats["unauthorized"]:
        problems.append(f"requests {counted}, unauthorized {stats['unauthorized']}")
    if result["client_requests"] is not None and result["client_requests"] != stats["requests"]:
        problems.append(f"client counted {result['client_requests']}, simulator {stats['requests']}")
    if problems:
        raise RuntimeError(f"{label}: unexpected work: {'; '.join(problems)}")


def run_fetch() -> tuple[list[FetchRun], str]:
    """Every path against one simulator; returns the runs and how their outputs compare."""
    options = ["--customers", str(FETCH_CUSTOMERS), "--latency-ms", str(FETCH_LATENCY_MS)]
    options += ["--warm-day", DAY.isoformat()]
    plans: list[tuple[str, str, int | None, int]] = [
        ("MetronomeCostsOperator", "operator", None, OPERATOR_REPEATS),
        *(("MetronomeCostsOperator", "operator", workers, OPERATOR_REPEATS) for workers in TUNED_WORKERS),
        ("requests loop, sequential", "requests", None, 1),
        ("metronome-sdk, sequential", "sdk", None, 1),
    ]
    runs: list[FetchRun] = []
    outputs: dict[str, tuple[list[str], list[Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="metronome-bench-") as tmp, SimulatorProcess(options) as sim:
        env = airflow_env(Path(tmp), sim.url, sim.token)
        for label, path, workers, repeats in plans:
            seconds = []
            for attempt in range(repeats):
                tuning = f" (max_workers={workers or 'default'})" if path == "operator" else ""
                progress(f"fetch: {label}{tuning}, run {attempt + 1}/{repeats}")
                result, stats = _fetch_once(sim, env, Path(tmp), path, workers)
                _check_fetch(label, path, result, stats)
                seconds.append(result["seconds"])
            outputs.setdefault(label.split(",")[0], _read_output(result["output"]))
            runs.append(
                FetchRun(
                    label=label,
                    path=path,
                    max_workers=result["max_workers"],
                    seconds=statistics.median(seconds),
                    requests=stats["requests"],
                    list_pages=stats["by_endpoint"]["customers"],
                )
            )
    return runs, compare_outputs(outputs)


def fetch_section(runs: list[FetchRun], outputs: str, default_workers: int) -> list[str]:
    list_pages, costs_pages = _expected_requests(FETCH_CUSTOMERS)
    latency = FETCH_LATENCY_MS / 1000
    lines = [
        f"### 1. All-customers day fetch: {FETCH_CUSTOMERS:,} customers, {FETCH_LATENCY_MS:.0f} ms per request",
        "",
        "| path | max_workers | requests | wall (s) | requests/s | floor (s) | wall / floor "
        "| wall / best possible |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        workers = (
            f"{run.max_workers} (default)"
            if run.path == "operator" and run.max_workers == default_workers
            else str(run.max_workers)
        )
        lines.append(
            f"| {run.label} | {workers} | {run.requests:,} | {run.seconds:.2f} | "
            f"{run.requests / run.seconds:.0f} | {run.floor:.2f} | {run.seconds / run.floor:.2f}x | "
            f"{run.seconds / run.listing_floor:.2f}x |"
        )
    target = _run_with(runs, TARGET_WORKERS)
    lines += [
        "",
        f"Each path lists the active customers ({PAGE_SIZE} per page; none on a UNIQUE-metric plan, whose "
        "`/costs` answers 400), fetches each one's costs for "
        f"{DAY.isoformat()} and writes one JSON line per window to a local file. {outputs}",
        f"requests = {list_pages} customer-list pages + {costs_pages:,} costs pages, counted by the simulator "
        "process for each run and checked against the page-size arithmetic (and against the client's own "
        "count for the two baselines). floor = requests x latency / max_workers. "
        f"Operator rows are the median of {OPERATOR_REPEATS} runs of `execute()` (connection lookup, "
        "listing, fetching and the atomic write included); the baselines ran once.",
        f"The customer listing is cursor-paginated, so sequential whatever max_workers is ({list_pages} "
        f"pages: {list_pages * latency:.2f} s); the operator fetches from its first page on, the sequential "
        "baselines list first. best possible = the pages listed before any fetch (the operator: one; the "
        "baselines: all) x latency + costs pages x latency / max_workers: at "
        f"max_workers={TARGET_WORKERS}, {target.listing_floor:.2f} s ({target.listing_floor / target.floor:.2f}x "
        "the floor). What remains above it is the per-request cost of HTTP on this machine, which the "
        "sequential baselines pay too.",
    ]
    return lines


def _run_with(runs: list[FetchRun], workers: int) -> FetchRun:
    return next(run for run in runs if run.path == "operator" and run.max_workers == workers)


def fetch_targets(runs: list[FetchRun]) -> list[Target]:
    tuned = _run_with(runs, TARGET_WORKERS)
    ratio = tuned.seconds / tuned.floor
    targets = [
        Target(
            f"All-customers fetch within {TARGET_FLOOR_RATIO}x of the floor at max_workers={TARGET_WORKERS}",
            f"{ratio:.2f}x ({tuned.seconds:.2f} s vs {tuned.floor:.2f} s)",
            ratio <= TARGET_FLOOR_RATIO,
        )
    ]
    for baseline in runs:
        if baseline.path == "operator":
            continue
        speedup = baseline.seconds / tuned.seconds
        targets.append(
            Target(
                f"At least {TARGET_SPEEDUP:.0f}x faster than the {baseline.label.split(',')[0]}",
                f"{speedup:.1f}x ({baseline.seconds:.1f} s vs {tuned.seconds:.2f} s)",
                speedup >= TARGET_SPEEDUP,
            )
        )
    return targets


# -- 2. CPU per page ---------------------------------------------------------------------------------


def cpu_section(result: dict[str, Any]) -> tuple[list[str], list[Target]]:
    from tests.benchmarks import cpu_page

    floor = result["floor_seconds"]
    lines = [
        f"### 2. CPU per page: one {result['windows']}-window costs page ({result['page_bytes']:,} bytes)",
        "",
        "| work | µs per page | ratio to the json floor |",
        "|---|---:|---:|",
        f"| floor: `json.loads` + `json.dumps` per window | {floor * 1e6:,.0f} | 1.00x |",
        f'| provider, `record_format="raw"` (default) | {result["raw_seconds"] * 1e6:,.0f} | '
        f"{result['raw_seconds'] / floor:.2f}x |",
        f'| provider, `record_format="line_items"` ({result["line_item_records"]} records) | '
        f"{result['line_items_seconds'] * 1e6:,.0f} | {result['line_items_seconds'] / floor:.2f}x |",
        "",
        "Provider = the hook's parse and validation (`Page[CostWindow].model_validate_json`), then the "
        "fetch engine's `days_of_objects`, then `to_day_lines` (raw: the object as sent, `customer_id` in front; line_items: `to_records`; both encoded with every number's digits as sent). The floor produces the same "
        "bytes as the raw format (checked). Best of "
        f"{cpu_page.TIMING_REPEATS} timeit repeats.",
    ]
    ratio = result["raw_seconds"] / floor
    target = Target(
        f"Per-page overhead within {TARGET_PAGE_RATIO}x of the json floor",
        f"{ratio:.2f}x ({result['raw_seconds'] * 1e6:,.0f} µs vs {floor * 1e6:,.0f} µs)",
        ratio <= TARGET_PAGE_RATIO,
    )
    return lines, [target]


# -- 3. memory ---------------------------------------------------------------------------------------


def run_memory() -> list[dict[str, Any]]:
    """Each size against its own simulator, each record format in a fresh process."""
    results = []
    for customers in MEMORY_SIZES:
        options = ["--customers", str(customers), "--line-items", str(MEMORY_LINE_ITEMS)]
        with tempfile.TemporaryDirectory(prefix="metronome-bench-") as tmp, SimulatorProcess(options) as sim:
            env = airflow_env(Path(tmp), sim.url, sim.token)
            for record_format in MEMORY_FORMATS:
                progress(f"memory: {customers:,} customers, record_format={record_format}")
                sim.reset()
                args = ["--out", tmp, "--record-format", record_format]
                result = run_child("tests.benchmarks.memory_child", args, env)
                measured_requests = sim.stats()["requests"] - memory_child.WARM_UP_REQUESTS
                # The manifest counts customers with records; a few have no usage that day.
                if (
                    not 0.8 * customers <= result["customers"] <= customers
                    or result["records"] < result["customers"]
                    or measured_requests != sum(_expected_requests(customers))
                ):
                    raise RuntimeError(
                        f"memory run for {customers} customers did unexpected work: {result}, "
                        f"{measured_requests} requests"
                    )
                result.update(record_format=record_format, requests=measured_requests, size=customers)
                results.append(result)
    return results


def memory_section(results: list[dict[str, Any]]) -> tuple[list[str], list[Target]]:
    lines = [
        f"### 3. Peak RSS: operator, {MEMORY_LINE_ITEMS} line items per credit type, no latency",
        "",
        "| record_format | customers | requests | records | output (MB) | wall (s) "
        "| RSS before `execute()` (MB) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in sorted(results, key=lambda item: MEMORY_FORMATS.index(item["record_format"])):
        lines.append(
            f"| {result['record_format']} | {result['size']:,} | {result['requests']:,} | "
            f"{result['records']:,} | {result['bytes'] / 2**20:,.1f} | {result['seconds']:.1f} | "
            f"{result['rss_before_kb'] / 1024:.1f} | {result['peak_rss_kb'] / 1024:.1f} |"
        )
    lines += [
        "",
        "Each run is `execute()` for every active customer (default max_workers, a local JSON Lines file) in "
        "a fresh process, after a one-customer `execute()` that pays the one-time costs (imports on first "
        "use, connection lookup). Peak RSS is that process's high-water mark (`VmHWM`)"
        + (
            ", reset to the current RSS just before the measured `execute()` (`/proc/self/clear_refs`), so "
            "it is the peak of the fetch, not of importing Airflow"
            if all(result["peak_reset"] for result in results)
            else " (this OS cannot reset it, so it may be the peak of importing Airflow instead)"
        )
        + ". Not `ru_maxrss`: in a child process it also counts the RSS the benchmark runner had when it "
        "forked. The simulator runs in another process.",
    ]
    small, large = MEMORY_SIZES[0], MEMORY_SIZES[-1]
    growth = {
        record_format: (peak(results, record_format, large) - peak(results, record_format, small)) / 1024
        for record_format in MEMORY_FORMATS
    }
    worst = max(growth.values())
    target = Target(
        f"Peak RSS for {large:,} customers within {TARGET_RSS_GROWTH_MB:.0f} MB of {small:,}",
        ", ".join(f"{growth[record_format]:+.1f} MB ({record_format})" for record_format in MEMORY_FORMATS),
        worst <= TARGET_RSS_GROWTH_MB,
    )
    return lines, [target]


def run_memory_s3() -> tuple[list[str], list[Target]]:
    """The raw-format memory run again, writing to S3 (a moto server on this machine) instead of a file."""
    from tests.support.s3 import moto_s3_server

    results = {}
    with moto_s3_server("metronome-bench") as s3:
        for customers in MEMORY_SIZES:
            options = ["--customers", str(customers), "--line-items", str(MEMORY_LINE_ITEMS)]
            with (
                tempfile.TemporaryDirectory(prefix="metronome-bench-") as tmp,
                SimulatorProcess(options) as sim,
            ):
                progress(f"memory on S3: {customers:,} customers")
                env = airflow_env(Path(tmp), sim.url, sim.token) | {
                    "AIRFLOW_CONN_AWS_DEFAULT": s3.connection_json
                }
                args = ["--out", tmp, "--uri-prefix", f"s3://aws_default@{s3.bucket}/bench-{customers}"]
                results[customers] = run_child("tests.benchmarks.memory_child", args, env)
    small, large = MEMORY_SIZES[0], MEMORY_SIZES[-1]
    lines = [
        "### 3b. Peak RSS writing to S3 (moto server on this machine), raw format",
        "",
        "| customers | records | object (MB) | wall (s) | peak RSS (MB) |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {customers:,} | {result['records']:,} | {result['bytes'] / 2**20:,.1f} | "
            f"{result['seconds']:.1f} | {result['peak_rss_kb'] / 1024:.1f} |"
            for customers, result in results.items()
        ),
        "",
        "The same runs as section 3, the object uploaded straight to its S3 key (5 MiB parts) instead of "
        "a local file.",
    ]
    growth = (results[large]["peak_rss_kb"] - results[small]["peak_rss_kb"]) / 1024
    target = Target(
        f"Peak RSS on S3 for {large:,} customers within {TARGET_RSS_GROWTH_MB:.0f} MB of {small:,}",
        f"{growth:+.1f} MB",
        growth <= TARGET_RSS_GROWTH_MB,
    )
    return lines, [target]


def peak(results: list[dict[str, Any]], record_format: str, customers: int) -> int:
    return next(
        int(result["peak_rss_kb"])
        for result in results
        if result["record_format"] == record_format and result["size"] == customers
    )


# -- 4. imports --------------------------------------------------------------------------------------


def imports_section(result: dict[str, Any]) -> tuple[list[str], list[Target]]:
    lines = [
        "### 4. Import cost in DAG parsing",
        "",
        "| step (fresh interpreter, in this order) | median ms |",
        "|---|---:|",
        f"| `import airflow` | {result['airflow'] * 1000:.0f} |",
        f"| the DAG authoring API (`{result['dag_api_name']}`) | {result['dag_api'] * 1000:.0f} |",
        f"| operator + sensor modules of this provider | {result['provider'] * 1000:.0f} |",
        "",
        f"Median of {result['samples']} fresh interpreters (after one warm-up run).",
    ]
    provider_ms = result["provider"] * 1000
    target = Target(
        f"Import overhead under {TARGET_IMPORT_MS:.0f} ms",
        f"{provider_ms:.0f} ms",
        provider_ms < TARGET_IMPORT_MS,
    )
    return lines, [target]


# -- the report --------------------------------------------------------------------------------------


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The machine and the versions measured on, as the page states them."""
    return (
        f"{platform.system()} {platform.machine()} ({_cpu_model()}), **{os.cpu_count()} CPUs** "
        f"(`os.cpu_count()`), Python {platform.python_version()}, Airflow {_version('apache-airflow')}, "
        f"requests {_version('requests')}, metronome-sdk {_version('metronome-sdk')}"
    )


def header() -> list[str]:
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"`python tests/benchmarks/run.py`, {today}, on {machine()}. The simulator runs in its own process.",
    ]


def targets_table(targets: list[Target]) -> list[str]:
    lines = ["### Targets", "", "| target | measured | result |", "|---|---|---|"]
    lines += [f"| {t.name} | {t.measured} | {'PASS' if t.met else 'MISS'} |" for t in targets]
    return lines


# -- the page: docs/benchmarks.md --------------------------------------------------------------------

PAGE = REPO_ROOT / "docs" / "benchmarks.md"
TARGETS_REGION = "targets"
TARGETS_HEADER = ["| part | target | measured | result |", "|---|---|---|---|"]
TARGET_ROW = re.compile(r"^\|\s*(?P<part>[a-z][\w-]*)\s*\|")


class PageError(ValueError):
    """The page does not have the regions a run would write."""


def markers(region: str) -> tuple[str, str]:
    return f"<!-- bench:{region} -->", f"<!-- /bench:{region} -->"


def region_span(text: str, region: str) -> tuple[int, int]:
    """Where ``region``'s body lies in ``text``: from after its opening marker's line to its closing marker."""
    opening, closing = markers(region)
    starts = [match.end() for match in re.finditer(rf"^{re.escape(opening)}[ \t]*\n", text, re.MULTILINE)]
    ends = [match.start() for match in re.finditer(rf"^{re.escape(closing)}[ \t]*$", text, re.MULTILINE)]
    if not starts or not ends:
        raise PageError(f"the page has no region {opening} ... {closing} (each on a line of its own)")
    if len(starts) > 1 or len(ends) > 1:
        raise PageError(f"the page has the region {region} more than once")
    if ends[0] < starts[0]:
        raise PageError(f"the page's {closing} comes before its {opening}")
    return starts[0], ends[0]


def region_lines(text: str, region: str) -> list[str]:
    start, end = region_span(text, region)
    return text[start:end].splitlines()


def replace_region(text: str, region: str, lines: Sequence[str]) -> str:
    """``text`` with ``region``'s body replaced by ``lines``; nothing else of it changes."""
    start, end = region_span(text, region)
    return text[:start] + "".join(line + "\n" for line in lines) + text[end:]


def check_page(text: str, parts: Sequence[str]) -> None:
    """Refuse, before anything is measured, a page that lacks a region this run would write."""
    for region in (TARGETS_REGION, *parts):
        region_span(text, region)


def span(started: dt.datetime, ended: dt.datetime) -> str:
    """``2026-12-03 10:00-10:05 UTC`` (``10:00 UTC`` within a minute), both dates over midnight (UTC)."""
    if f"{started:%Y-%m-%d %H:%M}" == f"{ended:%Y-%m-%d %H:%M}":
        return f"{started:%Y-%m-%d %H:%M} UTC"
    if started.date() == ended.date():
        return f"{started:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC"
    return f"{started:%Y-%m-%d %H:%M} UTC to {ended:%Y-%m-%d %H:%M} UTC"


def part_region(lines: Sequence[str], measured: str) -> list[str]:
    """A part's section with the line saying how it was measured after its heading.

    Blank lines around it keep the markers out of its markdown (a table ends before a marker).
    """
    if lines and lines[0].startswith("#"):
        return ["", lines[0], "", measured, *lines[1:], ""]
    return ["", measured, "", *lines, ""]


def merge_targets(existing: Sequence[str], part: str, targets: Sequence[Target]) -> list[str]:
    """The targets table with ``part``'s rows replaced by ``targets``, the other parts' rows kept as they are.

    Rows are grouped by part, in the order of PARTS; rows of a part this script does not know are kept, last.
    """
    rows: dict[str, list[str]] = {}
    for line in existing:
        match = TARGET_ROW.match(line)
        if match and line not in TARGETS_HEADER and match["part"] != "part":
            rows.setdefault(match["part"], []).append(line)
    rows[part] = [f"| {part} | {t.name} | {t.measured} | {'PASS' if t.met else 'MISS'} |" for t in targets]
    ordered = [name for name in PARTS if name in rows] + [name for name in rows if name not in PARTS]
    return ["", *TARGETS_HEADER, *(row for name in ordered for row in rows[name]), ""]


def write_part(text: str, part: str, lines: Sequence[str], targets: Sequence[Target], measured: str) -> str:
    """``text`` with ``part``'s region and its rows of the targets table rewritten."""
    text = replace_region(text, part, part_region(lines, measured))
    return replace_region(
        text, TARGETS_REGION, merge_targets(region_lines(text, TARGETS_REGION), part, targets)
    )


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# The README's region of headline figures: these parts' rows of the targets table, with when and on
# what they were measured, copied from the page so that the README never claims what the page does not.
README = REPO_ROOT / "README.md"
HEADLINE_REGION = "headline"
HEADLINE_PARTS = ("gateway", "listing", "sharing")
MEASURED_LINE = re.compile(
    r"^Measured by `[^`]+`, (?P<span>.+?), on (?P<machine>.+?)\.(?:\s|$)", re.MULTILINE
)


def headline(page_text: str) -> list[str]:
    """The README's headline region from the page: the headline parts' target rows, then when and where."""
    rows = [
        line
        for line in region_lines(page_text, TARGETS_REGION)
        if (match := TARGET_ROW.match(line)) and match["part"] in HEADLINE_PARTS
    ]
    by_machine: dict[str, list[str]] = {}
    for part in HEADLINE_PARTS:
        found = MEASURED_LINE.search("\n".join(region_lines(page_text, part)))
        if found is None:
            raise PageError(f"the page's region {part} does not say when it was measured")
        by_machine.setdefault(found["machine"], []).append(f"`{part}` {found['span']}")
    where = "; ".join(f"{', '.join(parts)}, on {machine}" for machine, parts in by_machine.items())
    return ["", *TARGETS_HEADER, *rows, "", f"Measured {where}.", ""]


def record(page: Path, part: str, lines: Sequence[str], targets: Sequence[Target], run: str) -> None:
    """Write one part's results into ``page``, as measured by ``run`` (the command and its time).

    The published page's headline parts are copied into the README's headline region too.
    """
    measured = f"Measured by {run}, on {machine()}."
    text = write_part(page.read_text(encoding="utf-8"), part, lines, targets, measured)
    save(page, text)
    progress(f"{part}: written to {page}")
    if page == PAGE and part in HEADLINE_PARTS:
        save(README, replace_region(README.read_text(encoding="utf-8"), HEADLINE_REGION, headline(text)))
        progress(f"{part}: headline written to {README}")


def save(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (a reader sees the old page or the new one)."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _count(text: str) -> int:
    if not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"expected a positive count, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=PARTS, action="append", help="run only this part (repeatable)")
    parser.add_argument(
        "--turbulence-runs",
        type=_count,
        default=turbulence.RUNS,
        help="seeded runs of the turbulence part, 2-3 minutes each (default and published: %(default)s)",
    )
    parser.add_argument(
        "--page",
        type=Path,
        default=PAGE,
        help="the page whose regions the parts run rewrite (default: docs/benchmarks.md)",
    )
    parser.add_argument("--no-page", action="store_true", help="print the results only; write no page")
    return parser


def _page(parser: argparse.ArgumentParser, args: argparse.Namespace, parts: Sequence[str]) -> Path | None:
    """The page to write (None: --no-page), refused at once if it lacks a region of the parts to run."""
    if args.no_page:
        return None
    page: Path = args.page
    try:
        check_page(page.read_text(encoding="utf-8"), parts)
    except (OSError, PageError) as err:
        parser.error(f"{page}: {err}")
    return page


def fetch_part() -> tuple[list[str], list[Target]]:
    runs, outputs = run_fetch()
    default_workers = runs[0].max_workers
    return fetch_section(runs, outputs, default_workers), fetch_targets(runs)


def cpu_part() -> tuple[list[str], list[Target]]:
    from tests.benchmarks import cpu_page

    progress("cpu: one 100-window page")
    return cpu_section(cpu_page.measure())


def _targeted(result: tuple[list[str], list[tuple[str, str, bool]]]) -> tuple[list[str], list[Target]]:
    lines, found = result
    return lines, [Target(*target) for target in found]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    parts = args.only or list(PARTS)
    page = _page(parser, args, parts)
    command = " ".join(["python tests/benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    started = time.monotonic()
    sections: list[list[str]] = []
    targets: list[Target] = []

    def part(name: str, produce: Callable[[], tuple[list[str], list[Target]]]) -> None:
        if name in parts:
            began = now()
            lines, found = produce()
            sections.append(lines)
            targets.extend(found)
            if page is not None:
                record(page, name, lines, found, f"`{command}`, {span(began, now())}")

    def imports() -> tuple[list[str], list[Target]]:
        progress("imports")
        with tempfile.TemporaryDirectory(prefix="metronome-bench-") as tmp:
            return imports_section(import_cost.measure(airflow_env(Path(tmp)), Path(tmp)))

    def budget_limited() -> tuple[list[str], list[Target]]:
        progress("requests per pipeline under a rate limit")
        lines, found = request_budget.run_rate_limited()
        return lines, [Target(*target) for target in found]

    def budget() -> tuple[list[str], list[Target]]:
        progress("requests per pipeline (history, restatement, daily)")
        lines, found = request_budget.run()
        return lines, [Target(*target) for target in found]

    def ratelimit() -> tuple[list[str], list[Target]]:
        lines, found = rate_limit.run()
        return lines, [Target(*target) for target in found]

    def requestcpu() -> tuple[list[str], list[Target]]:
        progress("client CPU per request")
        lines, found = request_cpu.run()
        return lines, [Target(*target) for target in found]

    def turbulent() -> tuple[list[str], list[Target]]:
        lines, found = turbulence.run(args.turbulence_runs)
        return lines, [Target(*target) for target in found]

    part("fetch", fetch_part)
    part("cpu", cpu_part)
    part("memory", lambda: memory_section(run_memory()))
    part("memorys3", run_memory_s3)
    part("imports", imports)
    part("budget", budget)
    part("budgetlimited", budget_limited)
    part("ratelimit", ratelimit)
    part("requestcpu", requestcpu)
    part("realaccount", lambda: _targeted(real_account.run()))
    part("turbulence", turbulent)
    part("parquet", lambda: parquet_output.run(progress, Target))
    part("gateway", lambda: _targeted(gateway.run()))
    part("listing", lambda: _targeted(listing.run()))
    part("sharing", lambda: _targeted(sharing.run()))
    progress(f"done in {time.monotonic() - started:.0f} s")

    report = [header(), targets_table(targets), *sections]
    print("\n\n".join("\n".join(lines) for lines in report))
    return 0 if all(target.met for target in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
