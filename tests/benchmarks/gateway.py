"""A 100-day breakdowns window against the simulator's gateway timeout, before and after windows are split.

The simulator (its own process, :data:`CUSTOMERS` customers, 20 ms per request) answers 504 after
:data:`GATEWAY_SECONDS` (Metronome's 59 s, scaled down a hundredfold) to a breakdowns request whose
range holds more than :data:`MAX_LINE_ITEMS` line items: every customer's 100 days (about 680 line
items) and 50 days time out, 25 days do not. The operator fetches the window with its defaults and
``customer_ids=None``; ``before`` is the package at :data:`BASELINE_COMMIT`, the version before
windows were split. A finished run's output is compared byte for byte with a run without the gateway
timeout.

``python -m tests.benchmarks.gateway`` prints the markdown section; :func:`run` returns it with its
target for ``tests/benchmarks/run.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.common import REPO_ROOT, airflow_env, package_at, run_child
from tests.benchmarks.simulator_process import SimulatorProcess

BASELINE_COMMIT = "5eb00cf"
CUSTOMERS = 20
LATENCY_MS = 20.0
MAX_LINE_ITEMS = 200
GATEWAY_SECONDS = 0.59
STARTING_ON, ENDING_BEFORE = "2023-10-20", "2024-01-28"  # 100 days, all produced by the frozen clock
DAYS = 100


@dataclass(frozen=True)
class Run:
    label: str
    seconds: float
    requests: int
    timeouts: int
    failed: str | None
    identical: bool | None


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] gateway: {message}", file=sys.stderr, flush=True)


def _options(gateway: bool) -> list[str]:
    options = ["--customers", str(CUSTOMERS), "--latency-ms", str(LATENCY_MS)]
    return [*options, "--gateway-timeout", f"{MAX_LINE_ITEMS}:{GATEWAY_SECONDS}"] if gateway else options


def _fetch(sim: SimulatorProcess, home: Path, name: str, package: Path) -> dict[str, Any]:
    env = airflow_env(home, sim.url, sim.token)
    args = ["operator", "--url", sim.url, "--token", sim.token, "--out", str(home), "--name", name]
    args += ["--source", "invoice_breakdowns", "--starting-on", STARTING_ON, "--ending-before", ENDING_BEFORE]
    sim.reset()
    result = run_child("tests.benchmarks.fetch_paths", args, env, cwd=package)
    result["stats"] = sim.stats()
    return result


def run() -> tuple[list[str], list[tuple[str, str, bool]]]:
    """An unsplit reference run, then before and after against the gateway timeout."""
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="metronome-bench-gateway-") as tmp:
        home = Path(tmp)
        before = package_at(BASELINE_COMMIT, home / "before")
        progress("reference run, no gateway timeout")
        with SimulatorProcess(_options(gateway=False)) as sim:
            calm = _fetch(sim, home, "calm", REPO_ROOT)
        if "failed" in calm:
            raise RuntimeError(f"the reference run failed: {calm['failed']}")
        reference = Path(calm["output"]).read_bytes()
        for label, package in (("before (retried whole)", before), ("after (split in halves)", REPO_ROOT)):
            progress(label)
            with SimulatorProcess(_options(gateway=True)) as sim:
                result = _fetch(sim, home, label.split()[0], package)
            failed, stats = result.get("failed"), result["stats"]
            runs.append(
                Run(
                    label=label,
                    seconds=result["seconds"],
                    requests=stats["requests"],
                    timeouts=_timeouts(stats),
                    failed=failed,
                    identical=None if failed else Path(result["output"]).read_bytes() == reference,
                )
            )
            progress(f"{label}: {'FAILED' if failed else 'finished'} in {result['seconds']:.1f} s")
    return _section(runs, calm["stats"]["requests"]), _targets(runs)


def _timeouts(stats: dict[str, Any]) -> int:
    return int(stats.get("by_status", {}).get("504", 0))


def _row(run: Run) -> str:
    finished = "no" if run.failed else "yes"
    identical = "" if run.identical is None else ("yes" if run.identical else "NO")
    note = f" ({run.failed.split(':')[0]})" if run.failed else ""
    return f"| {run.label} | {finished}{note} | {run.requests:,} | {run.timeouts:,} | {run.seconds:.1f} | {identical} |"


def _section(runs: list[Run], calm_requests: int) -> list[str]:
    return [
        f"### 10. Gateway timeouts: a {DAYS}-day breakdowns window of {CUSTOMERS} customers",
        "",
        "| version | finished | requests | 504s | wall (s) | same bytes |",
        "|---|---|---:|---:|---:|---|",
        *(_row(run) for run in runs),
        "",
        f"The simulator (its own process, {LATENCY_MS:.0f} ms per request) answers 504, after "
        f"{GATEWAY_SECONDS:g} s (Metronome's 59 s scaled down a hundredfold), to a breakdowns request whose "
        f"range holds more than {MAX_LINE_ITEMS} line items: each customer's {DAYS} days (about 680) and 50 "
        "days time out, 25 days do not. The operator fetches "
        f"{STARTING_ON}..{ENDING_BEFORE} (exclusive) for every customer with its defaults (8 workers, "
        "2 retries) and `customer_ids=None`. requests and 504s are counted by the simulator (the 2 listing "
        f"pages included); a run without the gateway timeout takes {calm_requests} requests. same bytes = "
        f"the output equals that run's byte for byte. before = commit `{BASELINE_COMMIT}`, which sent a "
        "timed-out window again whole (3 attempts, then up to 3 tries again per customer within the run's "
        "budget), and failed once that budget was spent; after, a window that times out is never sent "
        "again whole but as two halves, and those in turn, down to one day: "
        f"{_per_customer(runs[-1])} requests per customer on average, where an unsplit 100-day window "
        "takes 3 pages.",
    ]


def _per_customer(run: Run) -> str:
    return f"{(run.requests - 2) / CUSTOMERS:.1f}"


def _targets(runs: list[Run]) -> list[tuple[str, str, bool]]:
    after = runs[-1]
    return [
        (
            f"A {DAYS}-day breakdowns window past the gateway timeout finishes, byte-identical",
            f"finished: {'no' if after.failed else 'yes'}, same bytes: {after.identical}, "
            f"{after.requests:,} requests in {after.seconds:.1f} s (before: "
            f"{'failed' if runs[0].failed else 'finished'})",
            not after.failed and bool(after.identical),
        )
    ]


if __name__ == "__main__":
    section, targets = run()
    print("\n".join(section))
    for name, measured, met in targets:
        print(f"- {'PASS' if met else 'MISS'} {name}: {measured}")
