"""The text forms of the simulator's settings, read the same way by its command line and its control endpoint.

Each parser raises ``argparse.ArgumentTypeError`` with a message that says what to fix, which argparse
prints as a usage error and the control endpoint answers as a 400.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import date, datetime
from typing import NamedTuple, TypeVar

from airflow_provider_metronome.testing.accounts import CustomerSpec
from airflow_provider_metronome.testing.data import parse_timestamp
from airflow_provider_metronome.testing.faults import Fault, GatewayTimeout
from airflow_provider_metronome.testing.rate_limit import EVERY_CUSTOMER, RateLimit, RetryAfter

RETRY_AFTER: dict[str, RetryAfter | None] = {"none": None, "seconds": "seconds", "ms": "ms"}
"""The ``--retry-after`` choices and the :class:`RateLimit` retry hint each stands for."""
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


GATEWAY_TIMEOUT_FORM = "MAX_LINE_ITEMS[:SECONDS]"


def gateway_timeout(text: str) -> GatewayTimeout:
    """A ``--gateway-timeout`` MAX_LINE_ITEMS[:SECONDS]: a whole number, and a wait before the 504 (default 0)."""
    raw_items, colon, raw_seconds = text.partition(":")
    if not raw_items.isdigit():
        raise argparse.ArgumentTypeError(f"MAX_LINE_ITEMS must be a whole number, got {raw_items!r}")
    try:
        seconds = float(raw_seconds) if colon else 0.0
        return GatewayTimeout(int(raw_items), seconds)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected {GATEWAY_TIMEOUT_FORM}, got {text!r}: {error}") from error


CUSTOMER_RATE_LIMIT_FORM = f"CUSTOMER_ID|{EVERY_CUSTOMER}=RATE[:BURST]"


class CustomerRateLimit(NamedTuple):
    """A ``--customer-rate-limit`` option: whose requests (a customer id, or every customer), how many."""

    customer_id: str
    rate: float
    burst: float | None


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


def timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp with its offset, e.g. ``2024-01-10T06:00:00Z``."""
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError) as error:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 timestamp: {text!r}") from error


def day(text: str) -> date:
    """A ``YYYY-MM-DD`` date."""
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
            created_at=timestamp(fields["created_at"]),
            archived_at=_optional(fields.get("archived_at"), timestamp),
            plan=_yes_no("plan", fields.get("plan", "yes")),
            contract=_yes_no("contract", fields.get("contract", "yes")),
            billing_start=_optional(fields.get("billing_start"), day),
            billing_end=_optional(fields.get("billing_end"), day),
            name=fields.get("name"),
        )
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def customer_rate_limit(text: str) -> CustomerRateLimit:
    """A ``--customer-rate-limit`` CUSTOMER_ID|*=RATE[:BURST], checked as :class:`RateLimit` checks it."""
    customer_id, equals, numbers = text.partition("=")
    raw_rate, colon, raw_burst = numbers.partition(":")
    if not equals or not customer_id:
        raise argparse.ArgumentTypeError(f"expected {CUSTOMER_RATE_LIMIT_FORM}, got {text!r}")
    try:
        rate, burst = float(raw_rate), float(raw_burst) if colon else None
        RateLimit(rate, burst)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return CustomerRateLimit(customer_id, rate, burst)


def lifecycle_window(text: str) -> tuple[date, date]:
    """A ``--lifecycle-window`` FIRST_DAY:END_DAY."""
    first, colon, end = text.partition(":")
    if not colon:
        raise argparse.ArgumentTypeError(f"expected FIRST_DAY:END_DAY, got {text!r}")
    first_day, end_day = day(first), day(end)
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
