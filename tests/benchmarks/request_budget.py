"""Requests a pipeline spends: restatement, history load and the daily DAG's gate, before and after split runs.

For 1,000 customers at 50 ms per request (the simulator in its own process, clock frozen at
2024-02-01, so 2024-01-31 is not produced yet and every earlier day is):

- a 7-day restatement: before, 7 one-day runs (the old example's mapped tasks); after, one
  ``split_by_day`` run;
- a 90-day history load: before, 90 one-day runs (the daily DAG's catch-up; measured as one run, the
  90 being identical); after, one ``split_by_day`` run per source;
- the daily DAG for one day, its sensor waiting through 10 checks then fetching: before, every check
  swept every customer (the old sensor); after, a waiting check asks one customer and the gate asks
  three once the day is there. The waiting checks ask for 2024-01-31, the fetch for 2024-01-30.

Each scenario runs in a fresh process (``--child``) against the ``metronome_default`` connection; the
simulator counts the requests. Peak RSS compares a 90-day split run with a one-day run.

``python -m tests.benchmarks.request_budget`` prints the markdown section; :func:`run` returns it with
the targets for ``tests/benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.benchmarks.common import airflow_env, emit, run_child
from tests.benchmarks.simulator_process import SimulatorProcess

CUSTOMERS = 1_000
LATENCY_MS = 50.0
# One listing of the active customers; the operator and the sensor also list the archived ones (one
# page here: the simulator's few, archived long before).
ACTIVE_LISTING_REQUESTS = math.ceil(CUSTOMERS / 100)
LISTING_REQUESTS = ACTIVE_LISTING_REQUESTS + 1
LAST_DAY = dt.date(2024, 1, 30)  # the newest day the frozen simulator has produced
MISSING_DAY = dt.date(2024, 1, 31)
RESTATEMENT_DAYS = 7
HISTORY_DAYS = 90
WAITING_CHECKS = 10
GATE_SAMPLE = 3
DAYS_PER_REQUEST = {"costs": 100, "invoice_breakdowns": 35}
TARGET_RSS_GROWTH_MB = 30.0
TARGET_GATE_RATIO = 1.05


# -- the child: one scenario in a fresh process ----------------------------------------------------------


def _window(last: dt.date, days: int) -> tuple[str, str]:
    first = last - dt.timedelta(days=days - 1)
    return f"{first}T00:00:00Z", f"{last + dt.timedelta(days=1)}T00:00:00Z"


def _fetch(out: Path, source: str, last: dt.date, days: int, *, split: bool) -> dict[str, Any]:
    from airflow_provider_metronome.operators.costs import MetronomeCostsOperator

    starting_on, ending_before = _window(last, days)
    manifest: dict[str, Any] = MetronomeCostsOperator(
        task_id="fetch",
        source=source,  # type: ignore[arg-type]
        record_format="line_items",
        starting_on=starting_on,
        ending_before=ending_before,
        split_by_day=split,
        output_uri=f"file://{out}/{source}/date={{date}}/costs.jsonl.gz",
    ).execute({})  # type: ignore[arg-type]
    return manifest


def _old_sensor_check(day: dt.date) -> bool:
    """What the sensor did before: list the customers, then ask every one of them."""
    from airflow_provider_metronome.engine.fetch import fetch_customers
    from airflow_provider_metronome.hooks.metronome import MetronomeHook
    from airflow_provider_metronome.window import DayWindow

    hook = MetronomeHook()
    try:
        ids = hook.list_active_customer_ids()
        window = DayWindow.of(day, day + dt.timedelta(days=1))
        # Every customer, as the old check did: it did not stop at the first one missing the day.
        results = list(
            fetch_customers(hook, ids, window, "invoice_breakdowns", lambda *_: None, max_workers=8)
        )
        return all(not result.missing_days for result in results)
    finally:
        hook.close()


def _new_sensor(day: dt.date) -> Any:
    from airflow_provider_metronome.sensors.costs import MetronomeCostsSensor

    starting_on, ending_before = _window(day, 1)
    return MetronomeCostsSensor(
        task_id="wait",
        source="invoice_breakdowns",
        starting_on=starting_on,
        ending_before=ending_before,
        sample_customers=GATE_SAMPLE,
        poke_interval=0,
    )


def _daily_before(out: Path) -> None:
    for _ in range(WAITING_CHECKS):
        if _old_sensor_check(MISSING_DAY):
            raise RuntimeError(f"{MISSING_DAY} should not be available yet")
    if not _old_sensor_check(LAST_DAY):
        raise RuntimeError(f"{LAST_DAY} should be available")
    _fetch(out, "invoice_breakdowns", LAST_DAY, 1, split=False)


def _daily_after(out: Path) -> None:
    waiting = _new_sensor(MISSING_DAY)
    if any(waiting.poke({}) for _ in range(WAITING_CHECKS)):
        raise RuntimeError(f"{MISSING_DAY} should not be available yet")
    if not _new_sensor(LAST_DAY).poke({}):
        raise RuntimeError(f"{LAST_DAY} should be available")
    _fetch(out, "invoice_breakdowns", LAST_DAY, 1, split=False)


def _restatement_before(out: Path) -> None:
    for back in range(RESTATEMENT_DAYS):
        _fetch(out, "invoice_breakdowns", LAST_DAY - dt.timedelta(days=back), 1, split=False)


SCENARIOS: dict[str, Callable[[Path], Any]] = {
    "restatement-before": _restatement_before,
    "restatement-after": lambda out: _fetch(
        out, "invoice_breakdowns", LAST_DAY, RESTATEMENT_DAYS, split=True
    ),
    "day-costs": lambda out: _fetch(out, "costs", LAST_DAY, 1, split=False),
    "day-invoice_breakdowns": lambda out: _fetch(out, "invoice_breakdowns", LAST_DAY, 1, split=False),
    "history-costs": lambda out: _fetch(out, "costs", LAST_DAY, HISTORY_DAYS, split=True),
    "history-invoice_breakdowns": lambda out: _fetch(
        out, "invoice_breakdowns", LAST_DAY, HISTORY_DAYS, split=True
    ),
    "daily-before": _daily_before,
    "daily-after": _daily_after,
}


def child(name: str, out: Path) -> None:
    # Imports and the first connection lookup, outside the measured peak.
    from airflow_provider_metronome.hooks.metronome import MetronomeHook
    from tests.benchmarks.memory_child import _peak_rss_kb, _reset_peak, _status_kb

    MetronomeHook().settings  # noqa: B018
    gc.collect()
    peak_reset = _reset_peak()
    before = (_status_kb("VmRSS") if peak_reset else None) or _peak_rss_kb()
    started = time.perf_counter()
    SCENARIOS[name](out)
    emit({"seconds": time.perf_counter() - started, "rss_before_kb": before, "peak_rss_kb": _peak_rss_kb()})


# -- the parent: scenarios against one simulator ---------------------------------------------------------


def _measure(sim: SimulatorProcess, env: dict[str, str], out: Path, name: str) -> dict[str, Any]:
    print(f"[request_budget {time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
    sim.reset()
    result = run_child("tests.benchmarks.request_budget", ["--child", name, "--out", str(out / name)], env)
    stats = sim.stats()
    result["requests"] = stats["requests"]
    result["by_endpoint"] = stats["by_endpoint"]
    return result


def _minimum(source: str, days: int) -> int:
    """The fewest requests the endpoint allows for every customer's window, plus the customer listing."""
    return CUSTOMERS * math.ceil(days / DAYS_PER_REQUEST[source]) + LISTING_REQUESTS


def _row(label: str, result: dict[str, Any], minimum: int, *, scale: int = 1, note: str = "") -> str:
    requests = result["requests"] * scale
    seconds = result["seconds"] * scale
    per_customer = (requests - LISTING_REQUESTS * scale) / CUSTOMERS
    min_per_customer = (minimum - LISTING_REQUESTS) / CUSTOMERS
    return (
        f"| {label}{note} | {requests:,} | {seconds:,.1f} s | {per_customer:.2f} | {min_per_customer:.2f} "
        f"| {requests / minimum:.2f}x |"
    )


def run() -> tuple[list[str], list[tuple[str, str, bool]]]:
    """Run every scenario; the markdown lines of the section and the targets (name, measured, met)."""
    options = ["--customers", str(CUSTOMERS), "--latency-ms", str(LATENCY_MS)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="metronome-budget-") as tmp:
        out = Path(tmp)
        for name in SCENARIOS:
            # A fresh simulator each: no scenario pays for (or profits from) another's generated days.
            with SimulatorProcess(options) as sim:
                results[name] = _measure(sim, airflow_env(out, sim.url, sim.token), out, name)
    return _section(results)


RATE_LIMIT = 8.0
# What the rate-limited part runs: the pipelines as they are now (the version before fails under a
# rate limit; its requests over the budget are its floor).
LIMITED_SCENARIOS = ("restatement-after", "history-costs", "history-invoice_breakdowns", "daily-after")
BEFORE_REQUESTS = {
    "restatement-after": RESTATEMENT_DAYS * (CUSTOMERS + ACTIVE_LISTING_REQUESTS),
    "history-costs": HISTORY_DAYS * (CUSTOMERS + ACTIVE_LISTING_REQUESTS),
    "history-invoice_breakdowns": HISTORY_DAYS * (CUSTOMERS + ACTIVE_LISTING_REQUESTS),
    "daily-after": (WAITING_CHECKS + 2) * (CUSTOMERS + ACTIVE_LISTING_REQUESTS),
}


def run_rate_limited() -> tuple[list[str], list[tuple[str, str, bool]]]:
    """The pipelines of today under an 8 requests/s budget (a bare 429 beyond it)."""
    options = [
        "--customers",
        str(CUSTOMERS),
        "--latency-ms",
        str(LATENCY_MS),
        "--rate-limit",
        str(RATE_LIMIT),
    ]
    lines = [
        f"### 5b. The same pipelines under a budget of {RATE_LIMIT:g} requests/s (bare 429)",
        "",
        "| Pipeline | Requests (429s) | Wall time | Floor: useful requests / budget | wall / floor "
        "| Before: its requests / budget |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="metronome-budget-") as tmp:
        out = Path(tmp)
        for name in LIMITED_SCENARIOS:
            with SimulatorProcess(options) as sim:
                result = _measure(sim, airflow_env(out, sim.url, sim.token), out, name)
                throttled = sim.stats()["throttled"]
            useful = result["requests"] - throttled
            floor = useful / RATE_LIMIT
            worst = max(worst, result["seconds"] / floor)
            lines.append(
                f"| {name} | {result['requests']:,} ({throttled:,}) | {result['seconds']:,.1f} s | {floor:,.1f} s "
                f"| {result['seconds'] / floor:.2f}x | {BEFORE_REQUESTS[name] / RATE_LIMIT / 60:,.0f} min |"
            )
    lines += [
        "",
        "The last column is the least time the version before could take for its requests at this budget "
        "(it failed on the first 429s: section 6).",
    ]
    return lines, [
        (
            f"Pipelines at {RATE_LIMIT:g} requests/s within 1.2x of their floor",
            f"worst {worst:.2f}x",
            worst <= 1.2,
        )
    ]


def _section(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[tuple[str, str, bool]]]:
    restatement_min = _minimum("invoice_breakdowns", RESTATEMENT_DAYS)
    one_day_fetch = results["day-invoice_breakdowns"]["requests"]
    lines = [
        f"### 5. Requests per pipeline ({CUSTOMERS:,} customers, {LATENCY_MS:.0f} ms per request)",
        "",
        "Minimum: one request per customer per 100 days of costs or 35 days of breakdowns, plus "
        f"{LISTING_REQUESTS} pages of customer listing. Wall time with the default 8 workers.",
        "",
        "| Pipeline | Requests | Wall time | Requests per customer | Minimum per customer | vs minimum |",
        "|---|---:|---:|---:|---:|---:|",
        _row("7-day restatement, before (7 one-day runs)", results["restatement-before"], restatement_min),
        _row("7-day restatement, after (one split run)", results["restatement-after"], restatement_min),
        _row(
            "90-day history of costs, before (90 one-day runs)",
            results["day-costs"],
            _minimum("costs", HISTORY_DAYS),
            scale=HISTORY_DAYS,
            note=" ¹",
        ),
        _row(
            "90-day history of costs, after (one split run)", results["history-costs"], _minimum("costs", 90)
        ),
        _row(
            "90-day history of breakdowns, before (90 one-day runs)",
            results["day-invoice_breakdowns"],
            _minimum("invoice_breakdowns", HISTORY_DAYS),
            scale=HISTORY_DAYS,
            note=" ¹",
        ),
        _row(
            "90-day history of breakdowns, after (one split run)",
            results["history-invoice_breakdowns"],
            _minimum("invoice_breakdowns", HISTORY_DAYS),
        ),
        _row(
            f"Daily DAG, {WAITING_CHECKS} waiting checks then the fetch, before",
            results["daily-before"],
            _minimum("invoice_breakdowns", 1),
        ),
        _row(
            f"Daily DAG, {WAITING_CHECKS} waiting checks then the fetch, after",
            results["daily-after"],
            _minimum("invoice_breakdowns", 1),
        ),
        "",
        "¹ One one-day run measured, times 90: the 90 runs are identical.",
        "",
    ]
    daily_after = results["daily-after"]["requests"]
    # The check that finds the day lists the customers and asks one: the first has the day, which
    # the whole account then has.
    waiting = results["daily-after"]["requests"] - 1 - LISTING_REQUESTS - one_day_fetch
    per_check = waiting / WAITING_CHECKS
    gate_ratio = (daily_after - waiting) / one_day_fetch
    one_day_rss = (
        results["day-invoice_breakdowns"]["peak_rss_kb"] - results["day-invoice_breakdowns"]["rss_before_kb"]
    )
    split_rss = (
        results["history-invoice_breakdowns"]["peak_rss_kb"]
        - results["history-invoice_breakdowns"]["rss_before_kb"]
    )
    growth_mb = (split_rss - one_day_rss) / 1024
    lines += [
        f"A waiting check: {per_check:.1f} requests on average over {WAITING_CHECKS} checks: the first "
        f"lists the customers ({LISTING_REQUESTS} pages) and asks one; each later check asks that "
        "customer again, and nothing else. "
        f"Peak RSS growth during the fetch: one day {one_day_rss / 1024:.1f} MB, 90-day split run of "
        f"breakdowns {split_rss / 1024:.1f} MB.",
        "",
    ]
    targets = [
        (
            "7-day restatement at the endpoint minimum",
            f"{results['restatement-after']['requests']:,} requests (minimum {restatement_min:,})",
            results["restatement-after"]["requests"] == restatement_min,
        ),
        (
            "90-day history at the endpoint minimum (costs, breakdowns)",
            f"{results['history-costs']['requests']:,}, {results['history-invoice_breakdowns']['requests']:,} "
            f"requests (minimum {_minimum('costs', 90):,}, {_minimum('invoice_breakdowns', 90):,})",
            results["history-costs"]["requests"] == _minimum("costs", 90)
            and results["history-invoice_breakdowns"]["requests"] == _minimum("invoice_breakdowns", 90),
        ),
        (
            "A waiting sensor check costs a few requests (plus the listing)",
            f"{per_check:.1f} requests per check",
            per_check <= LISTING_REQUESTS + 3,
        ),
        (
            f"Daily DAG with the day present within {TARGET_GATE_RATIO}x of the operator's fetch",
            f"{gate_ratio:.3f}x",
            gate_ratio <= TARGET_GATE_RATIO,
        ),
        (
            f"Peak RSS of a 90-day split run within {TARGET_RSS_GROWTH_MB:.0f} MB of a one-day run",
            f"{growth_mb:+.1f} MB",
            growth_mb <= TARGET_RSS_GROWTH_MB,
        ),
    ]
    return lines, targets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help="run one scenario in this process (used by run())")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.out)
        return 0
    lines, targets = run()
    print("\n".join(lines))
    print("| Target | Measured | Met |\n|---|---|---|")
    for name, measured, met in targets:
        print(f"| {name} | {measured} | {'yes' if met else 'NO'} |")
    return 0 if all(met for _, _, met in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
