"""The all-customers day fetch under a rate-limited Metronome, against the project before its rate controller.

For each budget (2, 8 and 25 requests/s, a token bucket per API token as Metronome applies it) and each
kind of 429 (bare, as Metronome sends it, or with ``Retry-After``), three paths fetch one day of 1,000
customers at 20 ms per request:

- the operator with its defaults (this version);
- the operator of the project before the rate controller (commit :data:`BASELINE_COMMIT`), with its
  defaults, taken from git into a temporary folder;
- a sequential ``requests`` loop with ``tenacity`` retries of 429 and 5xx, as a user would write it
  (at 8 and 25 requests/s: at 2 requests/s it takes as long as the floor and shows nothing new).

Then four operator processes at once (four mapped tasks on one worker), each with a quarter of the
customers, share one 8 requests/s budget. floor = useful requests / rate; every finished run's output is
compared byte for byte with an unthrottled run of the same operator.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.common import REPO_ROOT, airflow_env, package_at, run_child
from tests.benchmarks.simulator_process import SimulatorProcess

BASELINE_COMMIT = "ed850a0d10ceda02718ad42d9544643bbb42eed0"
CUSTOMERS = 1_000
LATENCY_MS = 20.0
RATES = (2.0, 8.0, 25.0)
RETRY_AFTER = (None, "seconds")
PLAIN_LOOP_RATES = (8.0, 25.0)
SHARED_RATE = 8.0
PROCESSES = 4
TARGET_FLOOR_RATIO = 1.2
TARGET_THROTTLED_SHARE = 0.10
TARGET_SHARED_RATIO = 1.3


@dataclass(frozen=True)
class Run:
    label: str
    rate: float
    retry_after: str | None
    seconds: float
    requests: int
    throttled: int
    failed: str | None
    identical: bool | None

    @property
    def useful(self) -> int:
        return self.requests - self.throttled

    @property
    def floor(self) -> float:
        return self.useful / self.rate

    @property
    def share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] rate limit: {message}", file=sys.stderr, flush=True)


def baseline_tree(folder: Path, commit: str = BASELINE_COMMIT) -> Path:
    """The package as it was at ``commit`` (default: before the rate controller), unpacked from git."""
    return package_at(commit, folder)


def _options(rate: float | None, retry_after: str | None) -> list[str]:
    options = ["--customers", str(CUSTOMERS), "--latency-ms", str(LATENCY_MS), "--warm-day", "2024-01-05"]
    if rate is not None:
        options += ["--rate-limit", str(rate)]
    if retry_after is not None:
        options += ["--retry-after", retry_after]
    return options


def _fetch(
    sim: SimulatorProcess, env: dict[str, str], out: Path, path: str, name: str, *, package: Path = REPO_ROOT
) -> dict[str, Any]:
    """One path's run; ``package`` is the folder whose ``airflow_provider_metronome`` it imports."""
    sim.reset()
    args = [path, "--url", sim.url, "--token", sim.token, "--out", str(out), "--name", name]
    result = run_child("tests.benchmarks.fetch_paths", args, env, cwd=package)
    result["stats"] = sim.stats()
    return result


def _run(label: str, rate: float, retry_after: str | None, result: dict[str, Any], reference: bytes) -> Run:
    stats = result["stats"]
    failed = result.get("failed")
    output = None if failed else Path(result["output"]).read_bytes()
    return Run(
        label=label,
        rate=rate,
        retry_after=retry_after,
        seconds=result["seconds"],
        requests=stats["requests"],
        throttled=stats["throttled"],
        failed=failed,
        # The plain loop writes the same records in the same order as the operator's raw format.
        identical=None if output is None else output == reference,
    )


def _reference(env_home: Path) -> bytes:
    """The operator's output for the day, unthrottled."""
    with SimulatorProcess(_options(None, None)) as sim:
        env = airflow_env(env_home, sim.url, sim.token)
        result = _fetch(sim, env, env_home, "operator", "reference")
    if "failed" in result:
        raise RuntimeError(f"the unthrottled reference run failed: {result['failed']}")
    return Path(result["output"]).read_bytes()


def _shared_budget(home: Path, reference: bytes) -> Run:
    """Four operator processes at once, each with a quarter of the customers, one budget."""
    with SimulatorProcess(_options(SHARED_RATE, None)) as sim:
        env = airflow_env(home, sim.url, sim.token)
        ids = sorted(sim.customer_ids())
        quarter = -(-len(ids) // PROCESSES)
        children = []
        started = time.monotonic()
        for index in range(PROCESSES):
            batch = home / f"batch-{index}.json"
            batch.write_text(json.dumps(ids[index * quarter : (index + 1) * quarter]))
            args = ["operator", "--url", sim.url, "--token", sim.token, "--out", str(home)]
            args += ["--customers-file", str(batch), "--name", f"batch-{index}"]
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.benchmarks.fetch_paths", *args],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        results = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
        seconds = time.monotonic() - started
        stats = sim.stats()
    failed = next((result["failed"] for result in results if "failed" in result), None)
    output = b"" if failed else b"".join(Path(result["output"]).read_bytes() for result in results)
    return Run(
        label=f"{PROCESSES} operator processes, one budget",
        rate=SHARED_RATE,
        retry_after=None,
        seconds=seconds,
        requests=stats["requests"],
        throttled=stats["throttled"],
        failed=failed,
        identical=None if failed else output == reference,
    )


def run() -> tuple[list[str], list[tuple[str, str, bool]]]:
    """Every case; returns the markdown section and its targets."""
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="metronome-bench-rate-") as tmp:
        home = Path(tmp)
        baseline = baseline_tree(home / "baseline")
        progress("unthrottled reference run")
        reference = _reference(home)
        for rate in RATES:
            for retry_after in RETRY_AFTER:
                with SimulatorProcess(_options(rate, retry_after)) as sim:
                    env = airflow_env(home, sim.url, sim.token)
                    plans = [
                        ("operator (this version)", "operator", REPO_ROOT),
                        ("operator (before)", "operator", baseline),
                    ]
                    if rate in PLAIN_LOOP_RATES:
                        plans.append(("requests + tenacity loop", "requests-tenacity", REPO_ROOT))
                    for label, path, package in plans:
                        progress(f"{label}, {rate:g} requests/s, Retry-After: {retry_after or 'none'}")
                        result = _fetch(sim, env, home, path, "operator", package=package)
                        runs.append(_run(label, rate, retry_after, result, reference))
        progress(f"{PROCESSES} processes sharing {SHARED_RATE:g} requests/s")
        shared = _shared_budget(home, reference)
    return _section(runs, shared), _targets(runs, shared)


def _row(run: Run) -> str:
    outcome = f"FAILED after {run.seconds:.1f} s: {run.failed[:90]}" if run.failed else f"{run.seconds:.1f}"
    ratio = "" if run.failed else f"{run.seconds / run.floor:.2f}x"
    identical = "" if run.identical is None else ("yes" if run.identical else "NO")
    return (
        f"| {run.label} | {run.rate:g} | {run.retry_after or 'bare 429'} | {outcome} | {run.floor:.1f} | "
        f"{ratio} | {run.requests:,} | {run.throttled:,} ({run.share:.0%}) | {identical} |"
    )


def _section(runs: list[Run], shared: Run) -> list[str]:
    lines = [
        f"### 6. Under Metronome's rate limit: {CUSTOMERS:,} customers, {LATENCY_MS:.0f} ms per request",
        "",
        "| path | budget (req/s) | 429 | wall (s) | floor (s) | wall / floor | requests | throttled "
        "| same bytes |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
        *(_row(run) for run in runs),
        _row(shared),
        "",
        "The simulator limits the token to a token bucket (burst = one second of budget) and answers a bare "
        "429 beyond it, or one with `Retry-After` in whole seconds. Each path fetches one day of every "
        "customer with its defaults (the operator: 8 workers, 2 retries; the plain loop: tenacity, "
        "exponential waits from 0.5 s, 6 attempts). floor = useful requests / budget; requests and 429s "
        "are counted by the simulator. same bytes = the output equals an unthrottled run of this version "
        "byte for byte. `before` is the operator at commit "
        f"`{BASELINE_COMMIT[:7]}`, the version before the rate controller. The last row runs "
        f"{PROCESSES} processes at once, a quarter of the customers each, against one "
        f"{SHARED_RATE:g} requests/s budget; its wall time is the slowest process's.",
    ]
    return lines


def _targets(runs: list[Run], shared: Run) -> list[tuple[str, str, bool]]:
    ours = [run for run in runs if run.label == "operator (this version)"]
    worst = max(ours, key=lambda run: run.seconds / run.floor if not run.failed else float("inf"))
    most = max(ours, key=lambda run: run.share)
    all_ok = all(not run.failed and run.identical for run in ours)
    return [
        (
            "Defaults finish every rate-limited case with byte-identical output",
            f"{sum(not run.failed and bool(run.identical) for run in ours)} of {len(ours)}",
            all_ok,
        ),
        (
            f"Wall within {TARGET_FLOOR_RATIO}x of useful requests / budget",
            f"worst {worst.seconds / worst.floor:.2f}x ({worst.rate:g} req/s, {worst.retry_after or 'bare'})",
            all_ok and worst.seconds / worst.floor <= TARGET_FLOOR_RATIO,
        ),
        (
            f"At most {TARGET_THROTTLED_SHARE:.0%} of requests throttled",
            f"worst {most.share:.1%} ({most.rate:g} req/s, {most.retry_after or 'bare'})",
            most.share <= TARGET_THROTTLED_SHARE,
        ),
        (
            f"{PROCESSES} processes sharing one budget all finish within {TARGET_SHARED_RATIO}x of the floor",
            "failed"
            if shared.failed
            else f"{shared.seconds / shared.floor:.2f}x, same bytes: {shared.identical}",
            not shared.failed
            and bool(shared.identical)
            and shared.seconds / shared.floor <= TARGET_SHARED_RATIO,
        ),
    ]


if __name__ == "__main__":
    section, targets = run()
    print("\n".join(section))
    for name, measured, met in targets:
        print(f"- {'PASS' if met else 'MISS'} {name}: {measured}")
