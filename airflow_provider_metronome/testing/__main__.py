"""Serve the Metronome simulator until SIGINT or SIGTERM: ``python -m airflow_provider_metronome.testing``."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple, TypeVar

from airflow_provider_metronome.testing.accounts import CustomerSpec
from airflow_provider_metronome.testing.data import parse_timestamp
from airflow_provider_metronome.testing.simulator import (
    DEFAULT_TOKEN,
    Fault,
    MetronomeSimulator,
    RateLimit,
    RetryAfter,
)

_RETRY_AFTER: dict[str, RetryAfter | None] = {"none": None, "seconds": "seconds", "ms": "ms"}
_YES_NO = {"yes": True, "no": False}
_Value = TypeVar("_Value")
_CUSTOMER_KEYS = ("created_at", "archived_at", "plan", "contract", "billing_start", "billing_end", "name")
# The faults that can be made without an argument, so that a command line can name them.
FAULTS: dict[str, Callable[[], Fault]] = {
    "drop": Fault.drop,
    "malformed_json": Fault.malformed_json,
    "redirect": Fault.redirect,
    "bad_encoding": Fault.bad_encoding,
    "html_body": Fault.html_body,
    "empty_body": Fault.empty_body,
    "empty_page": Fault.empty_page,
    "repeating_cursor": Fault.repeating_cursor,
    "endless_cursor": Fault.endless_cursor,
    "repeat_customers": Fault.repeat_customers,
    "insert_customer": Fault.insert_customer,
    "seen_customers_page": Fault.seen_customers_page,
    "nan_body": Fault.nan_body,
    "duplicate_window": Fault.duplicate_window,
    "out_of_range_window": Fault.out_of_range_window,
    "duplicate_key": Fault.duplicate_key,
    "odd_text": Fault.odd_text,
    "foreign_customer": Fault.foreign_customer,
}


# The one fault that takes an argument on the command line: ``status=CODE``.
STATUS_FAULT = "status="
FAULT_FORM = "KIND[:PATH_SUBSTRING[:TIMES]][@PROBABILITY[,SEED]]"


class FaultArgument(NamedTuple):
    """A ``--fault`` option: what, where (None: any path), how many answers (None: forever), how likely."""

    fault: Fault
    path: str | None
    times: int | None
    probability: float | None = None
    seed: int = 0


def _timestamp(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError) as error:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 timestamp: {text!r}") from error


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from error


def _yes_no(key: str, text: str) -> bool:
    if text not in _YES_NO:
        raise argparse.ArgumentTypeError(f"{key} must be yes or no, got {text!r}")
    return _YES_NO[text]


def _optional(text: str | None, parse: Callable[[str], _Value]) -> _Value | None:
    return None if text is None else parse(text)


def customer_spec(text: str) -> CustomerSpec:
    """A ``--customer`` SPEC: comma-separated key=value pairs, ``created_at`` required."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, equals, value = part.partition("=")
        if not equals:
            raise argparse.ArgumentTypeError(f"expected key=value, got {part!r}")
        if key not in _CUSTOMER_KEYS:
            raise argparse.ArgumentTypeError(f"unknown key {key!r}; known keys: {', '.join(_CUSTOMER_KEYS)}")
        if key in fields:
            raise argparse.ArgumentTypeError(f"{key} is given twice")
        fields[key] = value
    if "created_at" not in fields:
        raise argparse.ArgumentTypeError("created_at=<RFC 3339 timestamp> is required")
    try:
        return CustomerSpec(
            created_at=_timestamp(fields["created_at"]),
            archived_at=_optional(fields.get("archived_at"), _timestamp),
            plan=_yes_no("plan", fields.get("plan", "yes")),
            contract=_yes_no("contract", fields.get("contract", "yes")),
            billing_start=_optional(fields.get("billing_start"), _day),
            billing_end=_optional(fields.get("billing_end"), _day),
            name=fields.get("name"),
        )
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _window(text: str) -> tuple[date, date]:
    """A ``--lifecycle-window`` FIRST_DAY:END_DAY."""
    first, colon, end = text.partition(":")
    if not colon:
        raise argparse.ArgumentTypeError(f"expected FIRST_DAY:END_DAY, got {text!r}")
    first_day, end_day = _day(first), _day(end)
    if end_day <= first_day:
        raise argparse.ArgumentTypeError(f"END_DAY must be after FIRST_DAY, got {text!r}")
    return first_day, end_day


def fault_argument(text: str) -> FaultArgument:
    """A ``--fault`` KIND[:PATH_SUBSTRING[:TIMES]][@PROBABILITY[,SEED]].

    TIMES defaults to 1, or to forever with a PROBABILITY (then it counts the faulted answers).
    """
    where, at, chance = text.partition("@")
    parts = where.split(":")
    if len(parts) > 3:
        raise argparse.ArgumentTypeError(f"expected {FAULT_FORM}, got {text!r}")
    kind, path, times = (*parts, "", "")[:3]
    fault = _fault_of(kind)
    probability, seed = _chance(chance) if at else (None, 0)
    if times == "forever" or (not times and probability is not None):
        count = None
    elif not times or (times.isdigit() and int(times) >= 1):
        count = int(times or 1)
    else:
        raise argparse.ArgumentTypeError(f"TIMES must be a positive count or 'forever', got {times!r}")
    return FaultArgument(fault, path or None, count, probability, seed)


def _fault_of(kind: str) -> Fault:
    if kind.startswith(STATUS_FAULT):
        code = kind.removeprefix(STATUS_FAULT)
        if not (code.isdigit() and 100 <= int(code) <= 599):
            raise argparse.ArgumentTypeError(f"status=CODE needs an HTTP status code, got {code!r}")
        return Fault.status(int(code))
    if kind not in FAULTS:
        known = ", ".join((f"{STATUS_FAULT}CODE", *FAULTS))
        raise argparse.ArgumentTypeError(f"unknown fault {kind!r}; known faults: {known}")
    return FAULTS[kind]()


def _chance(text: str) -> tuple[float, int]:
    """PROBABILITY[,SEED]: a number from 0 to 1, and an integer seed (default 0)."""
    raw_probability, comma, raw_seed = text.partition(",")
    try:
        probability = float(raw_probability)
    except ValueError:
        probability = math.nan
    if not 0 <= probability <= 1:
        raise argparse.ArgumentTypeError(f"PROBABILITY must be a number from 0 to 1, got {raw_probability!r}")
    try:
        seed = int(raw_seed) if comma else 0
    except ValueError:
        raise argparse.ArgumentTypeError(f"SEED must be an integer, got {raw_seed!r}") from None
    return probability, seed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_metronome.testing",
        description="Serve a local fake of Metronome's API.",
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
    parser.add_argument("--now", type=_timestamp, help="freeze the clock at this RFC 3339 timestamp")
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
        help="requests per second allowed to each token, beyond which answers are 429 (default: no limit)",
    )
    parser.add_argument(
        "--burst", type=float, help="requests a token may make at once (default: the rate, at least 1)"
    )
    parser.add_argument(
        "--retry-after",
        choices=tuple(_RETRY_AFTER),
        default="none",
        help="retry hint of a 429: none (as Metronome), Retry-After seconds or retry-after-ms (default: none)",
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
        type=_window,
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
        if args.burst is not None or args.retry_after != "none":
            parser.error("--burst and --retry-after need --rate-limit")
        return None
    try:
        return RateLimit(rate=args.rate_limit, burst=args.burst, retry_after=_RETRY_AFTER[args.retry_after])
    except ValueError as error:
        parser.error(str(error))


def _write_port_file(path: Path, port: int) -> None:
    # Written aside then renamed, so a watcher never reads a half-written file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n")
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until SIGINT or SIGTERM; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
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
        tls=args.tls,
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
