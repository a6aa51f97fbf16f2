"""Client CPU per request: the hook's ``get`` now, against the version that let ``requests`` re-read the
environment on every request.

``python -m tests.benchmarks.request_cpu --child`` runs in a fresh process: it sends
:data:`REQUESTS` sequential ``GET /v1/customers?limit=1`` through one hook and prints the process CPU
time per request. The parent runs it for this version and for the version before (commit
:data:`~tests.benchmarks.rate_limit.BASELINE_COMMIT`), each with the plain environment and with 200
more ``AIRFLOW_*`` variables, as Airflow deployments carry; the simulator runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.common import REPO_ROOT, airflow_env, emit, run_child

REQUESTS = 2_000
EXTRA_VARIABLES = 200
REPEATS = 3


def _child() -> dict[str, Any]:
    from airflow_provider_metronome.hooks.metronome import MetronomeHook

    hook = MetronomeHook()
    hook.get("/v1/customers", {"limit": 1})  # warm up: connection read, session, pool
    started = time.process_time()
    for _ in range(REQUESTS):
        hook.get("/v1/customers", {"limit": 1})
    return {"cpu_us_per_request": (time.process_time() - started) / REQUESTS * 1e6}


def run() -> tuple[list[str], list[tuple[str, str, bool]]]:
    # Imported here: the child runs with another version of the package, which these would not fit.
    from tests.benchmarks.rate_limit import baseline_tree
    from tests.benchmarks.simulator_process import SimulatorProcess

    rows: dict[tuple[str, bool], float] = {}
    with tempfile.TemporaryDirectory(prefix="metronome-bench-cpu-") as tmp:
        home = Path(tmp)
        baseline = baseline_tree(home / "baseline")
        with SimulatorProcess(["--customers", "1"]) as sim:
            env = airflow_env(home, sim.url, sim.token)
            crowded = env | {f"AIRFLOW_VAR_BENCH_{index}": "x" * 40 for index in range(EXTRA_VARIABLES)}
            for version, package in (("this version", REPO_ROOT), ("before", baseline)):
                for crowded_env in (False, True):
                    child_env = crowded if crowded_env else env
                    figures = [
                        run_child("tests.benchmarks.request_cpu", ["--child"], child_env, cwd=package)[
                            "cpu_us_per_request"
                        ]
                        for _ in range(REPEATS)
                    ]
                    rows[(version, crowded_env)] = statistics.median(figures)
    lines = [
        "### 7. Client CPU per request",
        "",
        f"| version | plain environment (µs) | {EXTRA_VARIABLES} more variables (µs) |",
        "|---|---:|---:|",
    ]
    for version in ("before", "this version"):
        lines.append(f"| {version} | {rows[(version, False)]:,.0f} | {rows[(version, True)]:,.0f} |")
    lines += [
        "",
        f"Process CPU time of {REQUESTS:,} sequential `hook.get('/v1/customers', {{'limit': 1}})` calls "
        f"against the simulator in another process, divided by {REQUESTS:,}; median of {REPEATS} fresh "
        "processes. The version before let `requests` merge proxies, `NO_PROXY` and the CA bundle from "
        "the environment into every request; this one reads them once, when the session is made.",
    ]
    saved = rows[("before", True)] - rows[("this version", True)]
    target = (
        "Less client CPU per request than before, with a crowded environment",
        f"{rows[('this version', True)]:,.0f} µs vs {rows[('before', True)]:,.0f} µs ({saved:,.0f} µs saved)",
        saved > 0,
    )
    return lines, [target]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", action="store_true")
    if parser.parse_args().child:
        emit(_child())
    else:
        section, targets = run()
        print("\n".join(section))
        print(json.dumps(targets))
