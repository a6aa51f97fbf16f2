"""The all-customers day fetch through ordinary turbulence: 503s and HTML pages under a rate limit.

The simulator (its own process, 1,000 customers, 20 ms per request) limits the token to
:data:`RATE` requests/s (a token bucket, bare 429s) and, past the limit as a gateway's errors would
be, answers :data:`SHARE_503` of the requests with a 503 and :data:`SHARE_HTML` with an HTML
maintenance page under status 200, each drawn from a seeded generator of its own: run ``r`` seeds
them with ``2r`` and ``2r + 1``, so each run meets other faults, the same ones for the same request
order. The operator runs with its defaults, ``customer_ids=None``, for one day, once per run; each
finished run's output is compared byte for byte with a calm run's (no limit, no faults).

``python -m tests.benchmarks.turbulence [--runs N]`` prints the markdown section; :func:`run` returns
it with its target for ``tests/benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.common import DAY, airflow_env, run_child
from tests.benchmarks.simulator_process import SimulatorProcess

RUNS = 10
CUSTOMERS = 1_000
LATENCY_MS = 20.0
RATE = 8.0
SHARE_503 = 0.10
SHARE_HTML = 0.01
TARGET_FLOOR_RATIO = 1.3


def seeds(number: int) -> tuple[int, int]:
    """The seeds of run ``number``'s HTML pages and 503s: every run, and every fault, its own."""
    return 2 * number, 2 * number + 1


@dataclass(frozen=True)
class Run:
    number: int
    seconds: float
    requests: int
    throttled: int
    faults: dict[str, int]
    failed: str | None
    identical: bool | None

    @property
    def admitted(self) -> int:
        """The requests the rate limit let through: each spent a token, whatever its answer."""
        return self.requests - self.throttled

    @property
    def floor(self) -> float:
        return self.admitted / RATE

    @property
    def ratio(self) -> float:
        return self.seconds / self.floor

    @property
    def met(self) -> bool:
        return not self.failed and bool(self.identical) and self.ratio <= TARGET_FLOOR_RATIO


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] turbulence: {message}", file=sys.stderr, flush=True)


def _options(run: int | None) -> list[str]:
    """The simulator's options: calm for None, else run ``run``'s limit and faults."""
    options = ["--customers", str(CUSTOMERS), "--latency-ms", str(LATENCY_MS), "--warm-day", DAY.isoformat()]
    if run is None:
        return options
    html_seed, status_seed = seeds(run)
    # The HTML page draws first; the 503 draws on the requests it left, so each is its share of all.
    status_probability = SHARE_503 / (1 - SHARE_HTML)
    faults = [f"html_body@{SHARE_HTML},{html_seed}", f"status=503@{status_probability},{status_seed}"]
    return [*options, "--rate-limit", str(RATE), *(part for fault in faults for part in ("--fault", fault))]


def _fetch(sim: SimulatorProcess, home: Path, name: str) -> dict[str, Any]:
    env = airflow_env(home, sim.url, sim.token)
    args = ["operator", "--url", sim.url, "--token", sim.token, "--out", str(home), "--name", name]
    result = run_child("tests.benchmarks.fetch_paths", args, env)
    result["stats"] = sim.stats()
    return result


def run(runs: int = RUNS) -> tuple[list[str], list[tuple[str, str, bool]]]:
    """A calm run, then ``runs`` turbulent ones; returns the markdown section and its target."""
    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="metronome-bench-turbulence-") as tmp:
        home = Path(tmp)
        progress("calm reference run")
        with SimulatorProcess(_options(None)) as sim:
            calm = _fetch(sim, home, "calm")
        if "failed" in calm:
            raise RuntimeError(f"the calm reference run failed: {calm['failed']}")
        reference = Path(calm["output"]).read_bytes()
        for number in range(runs):
            progress(f"run {number + 1}/{runs}")
            with SimulatorProcess(_options(number)) as sim:
                result = _fetch(sim, home, f"run-{number}")
            stats, failed = result["stats"], result.get("failed")
            results.append(
                Run(
                    number=number,
                    seconds=result["seconds"],
                    requests=stats["requests"],
                    throttled=stats["throttled"],
                    faults=stats["faults"],
                    failed=failed,
                    identical=None if failed else Path(result["output"]).read_bytes() == reference,
                )
            )
            progress(f"run {number + 1}/{runs}: {_outcome(results[-1])}")
    return _section(results, calm["stats"]["requests"]), _targets(results)


def _outcome(run: Run) -> str:
    if run.failed:
        return f"FAILED after {run.seconds:.1f} s: {run.failed[:120]}"
    return f"{run.seconds:.1f} s"


def _row(run: Run) -> str:
    wall = f"FAILED after {run.seconds:.1f} s: {run.failed[:120]}" if run.failed else f"{run.seconds:.1f}"
    ratio = "" if run.failed else f"{run.ratio:.2f}x"
    identical = "" if run.identical is None else ("yes" if run.identical else "NO")
    return (
        f"| {run.number + 1} | {', '.join(map(str, seeds(run.number)))} | {wall} | {run.floor:.1f} | {ratio} | "
        f"{run.requests:,} | {run.throttled:,} | {run.faults.get('status', 0):,} | "
        f"{run.faults.get('html_body', 0):,} | {identical} |"
    )


def _section(results: list[Run], calm_requests: int) -> list[str]:
    finished = [run for run in results if not run.failed]
    return [
        f"### 9. Ordinary turbulence: {CUSTOMERS:,} customers, {SHARE_503:.0%} 503s and {SHARE_HTML:.0%} "
        f"HTML pages under {RATE:g} requests/s",
        "",
        "| run | seeds (HTML, 503) | wall (s) | floor (s) | wall / floor | requests | 429s | 503s "
        "| HTML pages | same bytes |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *(_row(run) for run in results),
        "",
        f"{len(finished)} of {len(results)} runs finished. Each run fetches {DAY.isoformat()} for every "
        "customer with the operator's defaults (8 workers; the hook's 2 retries, then up to 3 tries again "
        "per customer within the run's budget) and `customer_ids=None`, against a fresh simulator whose "
        f"token bucket allows {RATE:g} requests/s (burst {RATE:g}, bare 429). Past the limit, each request "
        f"is an HTML maintenance page (status 200) with probability {SHARE_HTML:g}, else a 503 with "
        f"probability {SHARE_503:g}/{1 - SHARE_HTML:g}: {SHARE_503:.0%} and {SHARE_HTML:.0%} of all the "
        "answers the limit let through, from generators seeded as shown. floor = (requests - 429s) / "
        f"{RATE:g}: the time the budget takes to let through every request the run sent, its 503s, HTML "
        "pages and retries included (a 429 spends no budget). The calm minimum, the "
        f"{calm_requests:,} requests of a run without faults, would take {calm_requests / RATE:.1f} s. "
        "requests, 429s, 503s and HTML pages are counted by the simulator. same bytes = the output equals "
        "a calm run's (no limit, no faults) byte for byte.",
    ]


def _targets(results: list[Run]) -> list[tuple[str, str, bool]]:
    finished = [run for run in results if not run.failed]
    worst = max((run.ratio for run in finished), default=float("nan"))
    identical = sum(bool(run.identical) for run in finished)
    return [
        (
            f"Turbulence: {len(results)} of {len(results)} runs finish within {TARGET_FLOOR_RATIO}x of the "
            "floor, byte-identical",
            f"{sum(run.met for run in results)} of {len(results)} (finished {len(finished)}, byte-identical "
            f"{identical}, worst {worst:.2f}x)",
            all(run.met for run in results),
        )
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=RUNS, help="turbulent runs (default: %(default)s)")
    section, targets = run(parser.parse_args().runs)
    print("\n".join(section))
    for name, measured, met in targets:
        print(f"- {'PASS' if met else 'MISS'} {name}: {measured}")
