"""Serve the Metronome simulator until SIGINT or SIGTERM: ``python -m airflow_provider_metronome.testing``.

``python -m airflow_provider_metronome.testing control ...`` steers a running one (:mod:`.control_client`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from airflow_provider_metronome.testing import control_client
from airflow_provider_metronome.testing.arguments import (
    CUSTOMER_RATE_LIMIT_FORM,
    FAULT_FORM,
    FAULTS,
    GATEWAY_TIMEOUT_FORM,
    RETRY_AFTER,
    STATUS_FAULT,
    CustomerRateLimit,
    FaultArgument,
    customer_rate_limit,
    customer_spec,
    fault_argument,
    gateway_timeout,
    lifecycle_window,
    timestamp,
)
from airflow_provider_metronome.testing.simulator import DEFAULT_TOKEN, MetronomeSimulator, RateLimit

# The parsers' names, re-exported: tests and benchmarks read them from here.
__all__ = ["FAULTS", "FAULT_FORM", "STATUS_FAULT", "FaultArgument", "customer_spec", "fault_argument", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_metronome.testing",
        description="Serve a local fake of Metronome's API.",
        epilog=f"Steer a running simulator with: {control_client.PROG} --help",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default)")
    parser.add_argument(
        "--token", default=DEFAULT_TOKEN, help="bearer token to accept (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the generated data (default: %(default)s)"
    )
    parser.add_argument("--customers", type=int, default=25, help="active customers (default: %(default)s)")
    parser.add_argument(
        "--archived-customers", type=int, default=3, help="archived customers (default: %(default)s)"
    )
    parser.add_argument(
        "--unique-metric-customers",
        type=int,
        default=2,
        help="active customers whose plan has a UNIQUE-type metric, refused by /costs (default: %(default)s)",
    )
    parser.add_argument(
        "--line-items-per-credit-type",
        type=int,
        default=4,
        help="line items in each credit type's breakdown (default: %(default)s)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every answer")
    parser.add_argument(
        "--availability-delay-hours",
        type=float,
        default=2.0,
        help="hours after a window ends before it is served (default: %(default)s)",
    )
    parser.add_argument("--now", type=timestamp, help="freeze the clock at this RFC 3339 timestamp")
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file once listening")
    parser.add_argument(
        "--extra-token",
        action="append",
        default=[],
        help="another bearer token to accept, with its own rate-limit budget (repeatable)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        metavar="RATE",
        help=(
            "the organisation's limit: requests per second allowed to each token on each endpoint, beyond "
            "which answers are 429 with X-Metronome-Rate-Limit-Type: client (default: no limit)"
        ),
    )
    parser.add_argument(
        "--customer-rate-limit",
        type=customer_rate_limit,
        action="append",
        default=[],
        metavar=CUSTOMER_RATE_LIMIT_FORM,
        help=(
            "a customer's own limit (repeatable; * for every customer without one): requests per second "
            "to that customer's endpoints, beyond which answers are 429 with X-Metronome-Rate-Limit-Type: "
            "customer; BURST defaults to the rate, at least 1"
        ),
    )
    parser.add_argument(
        "--burst", type=float, help="requests a token may make at once (default: the rate, at least 1)"
    )
    parser.add_argument(
        "--retry-after",
        choices=tuple(RETRY_AFTER),
        default="none",
        help=(
            "retry hint of a 429, of either limit: none (as Metronome), Retry-After seconds or "
            "retry-after-ms (default: none)"
        ),
    )
    parser.add_argument(
        "--gateway-timeout",
        type=gateway_timeout,
        metavar=GATEWAY_TIMEOUT_FORM,
        help=(
            "answer 504 (x-gateway-timeout-millis: 59000), after SECONDS (default 0), to a breakdowns "
            "request whose range holds more than MAX_LINE_ITEMS line items (default: no gateway timeout)"
        ),
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a throw-away certificate; prints the CA file to trust",
    )
    parser.add_argument(
        "--customer",
        type=customer_spec,
        action="append",
        default=[],
        metavar="SPEC",
        help=(
            "add a customer (repeatable); SPEC is comma-separated key=value: created_at=<RFC 3339> "
            "(required), archived_at=<RFC 3339>, plan=yes|no, contract=yes|no, billing_start=YYYY-MM-DD, "
            "billing_end=YYYY-MM-DD, name=TEXT; prints its id on start-up"
        ),
    )
    parser.add_argument(
        "--lifecycle-window",
        type=lifecycle_window,
        metavar="FIRST_DAY:END_DAY",
        help=(
            "add one customer per lifecycle role around the days [FIRST_DAY, END_DAY) (created inside, "
            "archived inside, no contract, ...); prints each id with its role on start-up"
        ),
    )
    parser.add_argument(
        "--fault",
        type=fault_argument,
        action="append",
        default=[],
        metavar=FAULT_FORM,
        help=(
            "inject a fault (repeatable) into the next TIMES requests (a positive count, default 1, or "
            "'forever') whose path contains PATH_SUBSTRING (default: any path). With @PROBABILITY (0 to "
            "1) each such request gets it with that probability, drawn from its own generator seeded "
            "with SEED (default 0), so a run is reproducible for a given request order; TIMES then counts "
            "the faulted answers and defaults to 'forever' (e.g. status=503@0.1,7). KIND is one of "
            f"{STATUS_FAULT}CODE (answer that HTTP status), " + ", ".join(FAULTS)
        ),
    )
    return parser


def _rate_limit(parser: argparse.ArgumentParser, args: argparse.Namespace) -> RateLimit | None:
    if args.rate_limit is None:
        if args.burst is not None:
            parser.error("--burst needs --rate-limit")
        if args.retry_after != "none" and not args.customer_rate_limit:
            parser.error("--retry-after needs --rate-limit or --customer-rate-limit")
        return None
    try:
        return RateLimit(rate=args.rate_limit, burst=args.burst, retry_after=RETRY_AFTER[args.retry_after])
    except ValueError as error:
        parser.error(str(error))


def _customer_rate_limits(args: argparse.Namespace) -> dict[str, RateLimit]:
    limits: list[CustomerRateLimit] = args.customer_rate_limit
    retry_after = RETRY_AFTER[args.retry_after]
    return {limit.customer_id: RateLimit(limit.rate, limit.burst, retry_after) for limit in limits}


def _write_port_file(path: Path, port: int) -> None:
    # Written aside then renamed, so a watcher never reads a half-written file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT or SIGTERM, or steer a running one (``control ...``); the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == [control_client.COMMAND]:
        return control_client.main(arguments[1:])
    parser = _parser()
    args = parser.parse_args(arguments)
    rate_limit = _rate_limit(parser, args)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    simulator = MetronomeSimulator(
        token=args.token,
        seed=args.seed,
        customers=args.customers,
        archived_customers=args.archived_customers,
        unique_metric_customers=args.unique_metric_customers,
        line_items_per_credit_type=args.line_items_per_credit_type,
        port=args.port,
        host=args.host,
        latency=args.latency_ms / 1000,
        availability_delay=timedelta(hours=args.availability_delay_hours),
        now=args.now,
        extra_tokens=args.extra_token,
        rate_limit=rate_limit,
        customer_rate_limits=_customer_rate_limits(args),
        tls=args.tls,
        gateway_timeout=args.gateway_timeout,
    )
    added = [
        (simulator.add_customer(**dataclasses.asdict(spec)), f"--customer {number}")
        for number, spec in enumerate(args.customer, 1)
    ]
    if args.lifecycle_window is not None:
        roles = simulator.add_lifecycle_customers(*args.lifecycle_window)
        added += [(customer_id, role) for role, customer_id in roles.items()]
    for injected in args.fault:
        simulator.inject(
            injected.fault,
            injected.path,
            injected.times,
            probability=injected.probability,
            seed=injected.seed,
        )
    with simulator:
        if args.port_file is not None:
            _write_port_file(args.port_file, simulator.port)
        print(f"Metronome simulator listening on {simulator.url} (token: {simulator.token})", flush=True)
        if args.tls:
            print(f"TLS certificate authority: {simulator.certificate_path}", flush=True)
        for customer_id, role in added:
            print(f"Customer {customer_id}: {role}", flush=True)
        # A timeout keeps the main thread waking up, so signal handlers run promptly everywhere.
        while not stopping.wait(timeout=0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
