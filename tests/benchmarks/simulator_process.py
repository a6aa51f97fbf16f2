"""The simulator in its own process, so that client and server do not share a GIL.

``python -m tests.benchmarks.simulator_process --customers 1000 --latency-ms 50`` prints one JSON line
with the URL, then answers commands on stdin, one per line, each with one JSON line on stdout:

- ``stats``: requests received since the last reset, by endpoint and by status, the 429s of the rate limit, the
  answers of each injected transport fault, and the most handled at once;
- ``reset``: forget the logged requests;
- ``timeline``: every request since the last reset: when it arrived (seconds after the first request), the
  customer it was for (none for the listing) and its status;
- ``customers``: the active customer ids, in listing order (without a request, so outside any rate limit);
- ``model SOURCE FIRST_DAY END_DAY``: the simulator's own model of the days ``[FIRST_DAY, END_DAY)``
  for ``costs`` or ``invoice_breakdowns``: each customer billed on some of them, with those days and
  the records the API serves for them, and how many customers each listing holds.

It stops when stdin closes. Unlike ``python -m airflow_provider_metronome.testing``, it sets the size
of line-item breakdowns and the number of UNIQUE-metric customers, and reports the exact request count.
``--customer``, ``--fault`` and ``--gateway-timeout`` take the forms of that command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from airflow_provider_metronome.testing import DEFAULT_TOKEN, MetronomeSimulator, RateLimit
from airflow_provider_metronome.testing.__main__ import FAULT_FORM, customer_spec, fault_argument
from airflow_provider_metronome.testing.accounts import BilledSource
from airflow_provider_metronome.testing.arguments import (
    CUSTOMER_RATE_LIMIT_FORM,
    GATEWAY_TIMEOUT_FORM,
    customer_rate_limit,
    gateway_timeout,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FROZEN_NOW = "2024-02-01T00:00:00+00:00"
_SOURCES: dict[str, BilledSource] = {"costs": "costs", "invoice_breakdowns": "invoice_breakdowns"}


class Arrival(NamedTuple):
    """One request the simulator received (see the ``timeline`` command)."""

    seconds: float
    """After the first request since the last reset."""
    customer_id: str | None
    status: int | None


def _endpoint(path: str) -> str:
    if path == "/v1/customers":
        return "customers"
    return path.rsplit("/", 1)[-1] if path.startswith("/v1/customers/") else "other"


def _stats(sim: MetronomeSimulator) -> dict[str, Any]:
    records = sim.requests
    return {
        "requests": len(records),
        "by_endpoint": dict(Counter(_endpoint(record.path) for record in records)),
        "by_status": dict(Counter(str(record.status) for record in records if record.status is not None)),
        "unauthorized": sum(not record.authorized for record in records),
        "throttled": sim.throttled_count,
        "faults": dict(Counter(record.fault for record in records if record.fault is not None)),
        "max_in_flight": sim.max_in_flight,
    }


def _customer_of(path: str) -> str | None:
    return path.split("/")[3] if path.startswith("/v1/customers/") else None


def _timeline(sim: MetronomeSimulator) -> dict[str, Any]:
    """The ``timeline`` command: when each request arrived, the customer it was for, and its status."""
    records = sim.requests
    first = min((record.started_at for record in records), default=0.0)
    return {
        "requests": [
            [round(record.started_at - first, 3), _customer_of(record.path), record.status]
            for record in records
        ]
    }


def _model(sim: MetronomeSimulator, source: str, first: str, end: str) -> dict[str, Any]:
    """The ``model`` command: what the simulator itself says the days ``[first, end)`` hold."""
    billed_source = _SOURCES.get(source)
    if billed_source is None:
        return {"error": f"unknown source {source!r}"}
    first_day, end_day = dt.date.fromisoformat(first), dt.date.fromisoformat(end)
    customers = {}
    for customer in sim.customers:
        days = sim.billed_days(customer["id"], billed_source, first_day, end_day)
        if not days:
            continue
        if billed_source == "costs":
            records = len(days)  # one window a day
        else:
            records = len(sim.breakdowns_for(customer["id"], first_day, end_day))
        customers[customer["id"]] = {"days": [day.isoformat() for day in days], "records": records}
    return {
        "customers": customers,
        "active": len(sim.active_customer_ids),
        "archived": len(sim.archived_customer_ids),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--line-items", type=int, default=4, help="line items per credit type")
    parser.add_argument("--unique-metric-customers", type=int, default=0)
    parser.add_argument(
        "--day-windows-per-page", type=int, help="daily windows per breakdowns page (default: 35)"
    )
    parser.add_argument(
        "--warm-day",
        type=dt.date.fromisoformat,
        action="append",
        default=[],
        help="generate this day's costs up front (repeatable)",
    )
    parser.add_argument("--rate-limit", type=float, help="requests per second for the token (a token bucket)")
    parser.add_argument(
        "--retry-after", choices=("seconds", "ms"), help="what a 429 carries; default nothing"
    )
    parser.add_argument(
        "--customer-rate-limit",
        type=customer_rate_limit,
        action="append",
        default=[],
        metavar=CUSTOMER_RATE_LIMIT_FORM,
        help="a customer's own limit (repeatable), as the simulator's command line takes it",
    )
    parser.add_argument(
        "--customer", type=customer_spec, action="append", default=[], metavar="SPEC", help="add a customer"
    )
    parser.add_argument(
        "--fault", type=fault_argument, action="append", default=[], metavar=FAULT_FORM, help="inject a fault"
    )
    parser.add_argument(
        "--gateway-timeout", type=gateway_timeout, metavar=GATEWAY_TIMEOUT_FORM, help="the breakdowns gateway"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rate_limit = None if args.rate_limit is None else RateLimit(args.rate_limit, retry_after=args.retry_after)
    customer_limits = {
        limit.customer_id: RateLimit(limit.rate, limit.burst, args.retry_after)
        for limit in args.customer_rate_limit
    }
    sim = MetronomeSimulator(
        rate_limit=rate_limit,
        customer_rate_limits=customer_limits,
        customers=args.customers,
        unique_metric_customers=args.unique_metric_customers,
        latency=args.latency_ms / 1000,
        line_items_per_credit_type=args.line_items,
        now=dt.datetime.fromisoformat(FROZEN_NOW),
        gateway_timeout=args.gateway_timeout,
    )
    if args.day_windows_per_page is not None:
        sim.max_day_windows_per_page = args.day_windows_per_page
    for spec in args.customer:
        sim.add_customer(**dataclasses.asdict(spec))
    for injected in args.fault:
        sim.inject(
            injected.fault,
            injected.path,
            injected.times,
            probability=injected.probability,
            seed=injected.seed,
        )
    # The simulator caches generated days: warm it so that no measured path pays for generating them.
    for day in args.warm_day:
        for customer in sim.customers:
            sim.costs_for(customer["id"], day)
    with sim:
        print(json.dumps({"url": sim.url, "token": sim.token}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                print(json.dumps(_stats(sim)), flush=True)
            elif command == "reset":
                sim.clear_requests()
                print("{}", flush=True)
            elif command == "customers":
                print(json.dumps({"ids": sim.active_customer_ids}), flush=True)
            elif command == "timeline":
                print(json.dumps(_timeline(sim)), flush=True)
            elif command.startswith("model ") and len(command.split()) == 4:
                print(json.dumps(_model(sim, *command.split()[1:])), flush=True)
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    return 0


class SimulatorProcess:
    """Start :func:`main` in a subprocess; use as a context manager.

    :param options: Command-line options of :func:`main`, e.g. ``["--customers", "1000"]``.
    """

    def __init__(self, options: Sequence[str]) -> None:
        self.options = list(options)
        self.url = ""
        self.token = DEFAULT_TOKEN
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> SimulatorProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmarks.simulator_process", *self.options],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = json.loads(self._readline())
        self.url, self.token = hello["url"], hello["token"]
        return self

    def _readline(self) -> str:
        assert self._process is not None
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator process exited ({self._process.wait()}) without answering")
        return line

    def _command(self, command: str) -> dict[str, Any]:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        answer: dict[str, Any] = json.loads(self._readline())
        return answer

    def stats(self) -> dict[str, Any]:
        """Requests received since the last :meth:`reset`, as counted by the simulator."""
        return self._command("stats")

    def reset(self) -> None:
        self._command("reset")

    def customer_ids(self) -> list[str]:
        """The active customers, asked without a request (outside any rate limit)."""
        ids: list[str] = self._command("customers")["ids"]
        return ids

    def timeline(self) -> list[Arrival]:
        """Every request since the last :meth:`reset`, in the order they arrived."""
        return [Arrival(*request) for request in self._command("timeline")["requests"]]

    def model(self, source: str, first_day: dt.date, end_day: dt.date) -> dict[str, Any]:
        """The simulator's own model of ``[first_day, end_day)`` for ``source`` (see the ``model`` command)."""
        return self._command(f"model {source} {first_day.isoformat()} {end_day.isoformat()}")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
