"""The control endpoint's command-line client: ``python -m airflow_provider_metronome.testing control``.

Each command is one request to ``/_simulator/`` (:mod:`~airflow_provider_metronome.testing.control`);
the simulator's JSON answer is printed, and an error answer exits 1 with its message. The values are
checked by the simulator, with the same parsers as its own command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import requests

from airflow_provider_metronome.testing.arguments import FAULT_FORM, RETRY_AFTER
from airflow_provider_metronome.testing.messages import DEFAULT_TOKEN
from airflow_provider_metronome.testing.rate_limit import EVERY_CUSTOMER

COMMAND = "control"
PROG = f"python -m airflow_provider_metronome.testing {COMMAND}"
TIMEOUT_SECONDS = 30.0
_DAY_HELP = "YYYY-MM-DD, today or yesterday (by the simulator's clock, in UTC)"

ControlRequest = tuple[str, str, "dict[str, Any] | None"]
"""A method, a path under ``/_simulator/`` and the JSON body (None: no body)."""


def _withhold(args: argparse.Namespace) -> ControlRequest:
    body: dict[str, Any] = {"days": args.days}
    if args.customer is not None:
        body["customer_id"] = args.customer
    return "POST", "withhold", body


def _release(args: argparse.Namespace) -> ControlRequest:
    body: dict[str, Any] = {"all": True} if args.all else {"days": args.days}
    if args.customer is not None:
        body["customer_id"] = args.customer
    return "POST", "release", body


def _rate_limit(args: argparse.Namespace) -> ControlRequest:
    if args.rate == "off":
        return "DELETE", "rate-limit", None
    body: dict[str, Any] = {"rate": args.rate, "retry_after": args.retry_after}
    if args.burst is not None:
        body["burst"] = args.burst
    return "PUT", "rate-limit", body


def _gateway(args: argparse.Namespace) -> ControlRequest:
    if args.max_line_items == "off":
        return "DELETE", "gateway", None
    return "PUT", "gateway", {"max_line_items": args.max_line_items, "seconds": args.seconds}


def _line_items(text: str) -> int | str:
    if text == "off":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of line items or off") from None


def _customer_rate_limit(args: argparse.Namespace) -> ControlRequest:
    if args.rate == "off":
        return "DELETE", "customer-rate-limit", {"customer_id": args.customer}
    body: dict[str, Any] = {"customer_id": args.customer, "rate": args.rate, "retry_after": args.retry_after}
    if args.burst is not None:
        body["burst"] = args.burst
    return "PUT", "customer-rate-limit", body


def _clock(args: argparse.Namespace) -> ControlRequest:
    return "PUT", "clock", {"now": None if args.now == "wall" else args.now}


def _rate(text: str) -> float | str:
    if text == "off":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"RATE must be a number of requests per second or 'off', got {text!r}"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Steer a running Metronome simulator through its control endpoint."
    )
    parser.add_argument(
        "--url", required=True, help="the simulator's URL, as it printed on start-up (http://127.0.0.1:8080)"
    )
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="its bearer token (default: %(default)s)")
    parser.add_argument(
        "--ca-file", help="the certificate authority to trust, for a simulator run with --tls"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    withhold = commands.add_parser("withhold", help="leave days out of the answers, as not produced yet")
    withhold.add_argument("days", nargs="+", metavar="DAY", help=_DAY_HELP)
    withhold.add_argument(
        "--customer", metavar="ID", help="from this customer alone (default: every customer)"
    )
    withhold.set_defaults(request=_withhold)

    release = commands.add_parser("release", help="serve withheld days again")
    release.add_argument("days", nargs="*", metavar="DAY", help=_DAY_HELP)
    release.add_argument("--all", action="store_true", help="every withheld day (of --customer, if given)")
    release.add_argument("--customer", metavar="ID", help="to this customer alone (default: every customer)")
    release.set_defaults(request=_release)

    fault = commands.add_parser("fault", help="inject a fault, written as --fault is when starting")
    fault.add_argument("fault", metavar=FAULT_FORM, help="e.g. status=503:/costs:3 or drop@0.1,7")
    fault.set_defaults(request=lambda args: ("POST", "faults", {"fault": args.fault}))

    clear = commands.add_parser("clear-faults", help="remove every fault not spent yet")
    clear.set_defaults(request=lambda args: ("DELETE", "faults", None))

    clock = commands.add_parser("clock", help="freeze the clock at a time, or let it follow the wall clock")
    clock.add_argument("now", metavar="TIMESTAMP|wall", help="an RFC 3339 timestamp, or wall")
    clock.set_defaults(request=_clock)

    rate_limit = commands.add_parser(
        "rate-limit", help="limit each token's requests per second on each endpoint, or stop"
    )
    rate_limit.add_argument("rate", type=_rate, metavar="RATE|off", help="requests per second, or off")
    rate_limit.add_argument("--burst", type=float, help="requests a token may make at once (default: RATE)")
    rate_limit.add_argument(
        "--retry-after",
        choices=tuple(RETRY_AFTER),
        default="none",
        help="retry hint of a 429 (default: none)",
    )
    rate_limit.set_defaults(request=_rate_limit)

    gateway = commands.add_parser(
        "gateway", help="answer 504 to breakdowns requests of more line items than a limit, or stop"
    )
    gateway.add_argument(
        "max_line_items", type=_line_items, metavar="MAX_LINE_ITEMS|off", help="the limit, or off"
    )
    gateway.add_argument("--seconds", type=float, default=0.0, help="wait before the 504 (default: 0)")
    gateway.set_defaults(request=_gateway)
    customer_limit = commands.add_parser(
        "customer-rate-limit", help="limit one customer's requests per second (or every customer's), or stop"
    )
    customer_limit.add_argument("customer", metavar=f"CUSTOMER_ID|{EVERY_CUSTOMER}", help="whose requests")
    customer_limit.add_argument("rate", type=_rate, metavar="RATE|off", help="requests per second, or off")
    customer_limit.add_argument("--burst", type=float, help="requests it may get at once (default: RATE)")
    customer_limit.add_argument(
        "--retry-after",
        choices=tuple(RETRY_AFTER),
        default="none",
        help="retry hint of a 429 (default: none)",
    )
    customer_limit.set_defaults(request=_customer_rate_limit)

    customer = commands.add_parser("customer", help="add a customer, written as --customer is when starting")
    customer.add_argument("spec", metavar="SPEC", help="e.g. created_at=2024-01-05T00:00:00Z,contract=no")
    customer.set_defaults(request=lambda args: ("POST", "customers", {"spec": args.spec}))

    status = commands.add_parser("status", help="the clock, withheld days, faults, rate limit and requests")
    status.set_defaults(request=lambda args: ("GET", "status", None))
    return parser


def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ControlRequest:
    """The request of the command, once the arguments that depend on each other are checked."""
    if args.command == "release" and args.all == bool(args.days):
        parser.error("release takes DAY... or --all")
    if (
        args.command in ("rate-limit", "customer-rate-limit")
        and args.rate == "off"
        and (args.burst is not None or args.retry_after != "none")
    ):
        parser.error(f"{args.command} off takes no --burst or --retry-after")
    if args.command == "gateway" and args.max_line_items == "off" and args.seconds:
        parser.error("gateway off takes no --seconds")
    request: ControlRequest = args.request(args)
    return request


def main(argv: Sequence[str] | None = None) -> int:
    """Send one control request and print the answer; returns the exit status (1 when refused)."""
    parser = _parser()
    args = parser.parse_args(argv)
    method, name, body = _checked(parser, args)
    url = f"{args.url.rstrip('/')}/_simulator/{name}"
    try:
        response = requests.request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {args.token}"},
            timeout=TIMEOUT_SECONDS,
            verify=args.ca_file or True,
        )
    except requests.RequestException as error:
        print(f"error: no answer from {url}: {error}", file=sys.stderr)
        return 1
    try:
        answer = response.json()
    except ValueError:
        print(
            f"error: {url} answered {response.status_code} without JSON; is it a simulator?", file=sys.stderr
        )
        return 1
    if not response.ok:
        print(f"error: {answer.get('message', answer)} (HTTP {response.status_code})", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0
