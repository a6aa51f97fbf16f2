"""A local fake of Metronome's HTTP API, for tests, demos and benchmarks.

It serves ``GET /v1/customers``, ``GET /v1/customers/{id}/costs`` and
``GET /v1/customers/{id}/invoices/breakdowns`` over real HTTP/1.1 keep-alive connections, with the
documented authentication, errors and cursor pagination, customers that are created and archived over
time (:mod:`~airflow_provider_metronome.testing.accounts`), a settable clock, injectable faults (on the
next requests, or on a seeded random share of them), an optional per-token rate limit, optional TLS and a
log of every request it received.
"""

from __future__ import annotations

import base64
import copy
import enum
import hashlib
import ipaddress
import itertools
import json
import math
import random
import re
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from types import TracebackType
from typing import Any, Literal, TypeVar, get_args
from urllib.parse import parse_qs, unquote, urlsplit

from airflow_provider_metronome.testing import values as value_faults
from airflow_provider_metronome.testing.accounts import (
    Account,
    Accounts,
    BilledSource,
    CustomerSpec,
    added_account,
    generated_account,
    lifecycle_specs,
)
from airflow_provider_metronome.testing.data import (
    CREDIT_TYPES,
    CREDIT_TYPES_BY_ID,
    EPOCH,
    WINDOW_LENGTHS,
    Dataset,
    JsonObject,
    WindowSize,
    invoice_status,
    parse_timestamp,
    plain_utc,
)
from airflow_provider_metronome.testing.values import WrongType

DEFAULT_TOKEN = "metronome-simulator-token"
MAX_LIMIT = 100
MAX_FILTER_VALUES = 100
# The SDK documents that one breakdowns page covers at most 35 days of daily or 24 hourly windows.
MAX_DAY_WINDOWS_PER_PAGE = 35
MAX_HOUR_WINDOWS_PER_PAGE = 24
# Bodies of unsupported methods are read and dropped so the keep-alive stream stays in step.
MAX_DISCARDED_BODY = 1 << 20

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DIGITS = re.compile(r"[0-9]+")
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("customers", re.compile(r"/v1/customers")),
    ("costs", re.compile(r"/v1/customers/([^/]+)/costs")),
    ("breakdowns", re.compile(r"/v1/customers/([^/]+)/invoices/breakdowns")),
)
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_STATUSES = frozenset({"DRAFT", "FINALIZED"})

# Bounds a TLS handshake, which runs in the connection's thread: a silent client must not pin it forever.
TLS_HANDSHAKE_TIMEOUT = 10.0
# How long the throw-away TLS certificates are valid: long enough for a simulator left running for days.
TLS_CERTIFICATE_LIFETIME = timedelta(days=30)
_CA_NAME = "Metronome simulator test CA"
# Threads serving a connection are named CONNECTION_THREAD_PREFIX + "<port>-<connection id>".
CONNECTION_THREAD_PREFIX = "metronome-simulator-connection-"
# Where Fault.out_of_range_window puts its window unless told otherwise: far from any realistic request.
OUT_OF_RANGE_DAY = date(2019, 1, 1)
# Fault.redirect sends clients here: same port, another loopback address, so a different host.
REDIRECT_HOST = "127.0.0.2"

FaultKind = Literal[
    "status",
    "drop",
    "slow",
    "malformed_json",
    "redirect",
    "bad_encoding",
    "trickle",
    "empty_page",
    "repeating_cursor",
    "endless_cursor",
    "nan_body",
    "duplicate_window",
    "out_of_range_window",
    "repeat_customers",
    "insert_customer",
    "seen_customers_page",
    "exact_numbers",
    "wrong_type",
    "duplicate_key",
    "odd_text",
    "foreign_customer",
    "html_body",
    "empty_body",
]
# These alter a successful list page, so they only fire on requests that would produce one.
_LIST_PAGE_FAULTS: frozenset[FaultKind] = frozenset({"empty_page", "repeating_cursor", "endless_cursor"})
# These replay or shift customers already listed, so they only fire on customer pages that follow another.
_CUSTOMER_PAGE_FAULTS: frozenset[FaultKind] = frozenset(
    {"repeat_customers", "insert_customer", "seen_customers_page"}
)
# These alter a page's day (or hour) windows, so they only fire on successful costs and breakdowns pages.
_WINDOW_PAGE_FAULTS: frozenset[FaultKind] = frozenset(
    {
        "nan_body",
        "duplicate_window",
        "out_of_range_window",
        "exact_numbers",
        "wrong_type",
        "duplicate_key",
        "odd_text",
        "foreign_customer",
    }
)
_PAGE_FAULTS = _LIST_PAGE_FAULTS | _CUSTOMER_PAGE_FAULTS | _WINDOW_PAGE_FAULTS
# The rest fire before authentication and routing, as a proxy or a network would.
_TRANSPORT_FAULTS: frozenset[FaultKind] = frozenset(get_args(FaultKind)) - _PAGE_FAULTS
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MALFORMED_BODY = b'{"data": [{"start_timestamp": "2024-01-01T00:00:00Z", "credit_ty'
# Plain JSON, sent under ``Content-Encoding: gzip``: any client that honours the header fails to decode it.
_NOT_GZIP_BODY = b'{"data":[],"next_page":null}'
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# What a load balancer or CDN answers in front of an API under maintenance: a 200 of HTML.
_HTML_CONTENT_TYPE = "text/html; charset=utf-8"
_MAINTENANCE_PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Scheduled maintenance</title></head>
<body>
<h1>We&rsquo;ll be back soon</h1>
<p>The service is undergoing scheduled maintenance. Please try again in a few minutes.</p>
</body>
</html>
"""
# How many request paths Simulator.last_body remembers: enough for a test, bounded for long benchmarks.
BODY_PATHS_KEPT = 64

RetryAfter = Literal["seconds", "ms"]
"""How a throttled answer says when to come back: ``Retry-After`` in whole seconds, or ``retry-after-ms``."""

Position = tuple[int, int]
"""Where a page starts: (index of the item or window, items of that window already returned)."""

_T = TypeVar("_T")


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


@dataclass(frozen=True)
class Fault:
    """A misbehaviour for :meth:`MetronomeSimulator.inject`; build one with the classmethods."""

    kind: FaultKind
    status_code: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    message: str = ""
    seconds: float = 0.0
    """Pause of ``slow`` (in all), or of ``trickle`` (before each byte of the body)."""
    number: float | None = None
    """The non-finite number ``nan_body`` puts in a page."""
    day: date | None = None
    """The day ``out_of_range_window`` adds (None: :data:`OUT_OF_RANGE_DAY`, or a day before the range)."""
    count: int = 0
    """How many customers ``repeat_customers`` lists again."""
    texts: tuple[str, ...] = ()
    """The number texts ``exact_numbers`` writes, in turn."""
    value_type: WrongType | None = None
    """What ``wrong_type`` writes instead of a number."""

    @classmethod
    def status(cls, code: int, headers: Mapping[str, str] | None = None, message: str | None = None) -> Fault:
        """Answer ``code`` with ``{"message": message}`` (default: the status phrase) and extra ``headers``."""
        if not 100 <= code <= 599:
            raise ValueError(f"not an HTTP status code: {code}")
        text = _reason(code) if message is None else message
        return cls("status", status_code=code, headers=tuple((headers or {}).items()), message=text)

    @classmethod
    def drop(cls) -> Fault:
        """Close the TCP connection without answering."""
        return cls("drop")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Wait ``seconds`` (on top of the simulator's latency), then answer normally."""
        return cls("slow", seconds=seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        """Answer 200 with a truncated JSON body."""
        return cls("malformed_json")

    @classmethod
    def empty_page(cls) -> Fault:
        """Answer a list request with no data and a cursor that resumes where the request started."""
        return cls("empty_page")

    @classmethod
    def repeating_cursor(cls) -> Fault:
        """Answer the normal page, but with the request's own cursor as ``next_page`` (a start cursor if none)."""
        return cls("repeating_cursor")

    @classmethod
    def trickle(
        cls, bytes_per_second: float | None = None, *, seconds_per_byte: float | None = None
    ) -> Fault:
        """Answer normally, but send the body one byte at a time with a pause before each.

        Give exactly one of ``bytes_per_second`` or ``seconds_per_byte``. The headers leave at once and
        bytes keep coming, so a per-read timeout longer than the pause never fires although the whole
        answer takes ``len(body) * seconds_per_byte``. Sending stops as soon as the client hangs up or
        the simulator stops.
        """
        if (bytes_per_second is None) == (seconds_per_byte is None):
            raise ValueError("give exactly one of bytes_per_second or seconds_per_byte")
        pause = 1 / bytes_per_second if bytes_per_second is not None else seconds_per_byte
        if pause is None or not 0 < pause < math.inf:
            raise ValueError("the trickle rate must be positive and finite")
        return cls("trickle", seconds=pause)

    @classmethod
    def endless_cursor(cls) -> Fault:
        """Answer a list page with data and a ``next_page`` cursor never sent before.

        Past the last page the listing starts over from the first item, so pages never run empty (unless
        the query matches nothing at all). Inject it with ``times=None`` for a listing that never ends.
        """
        return cls("endless_cursor")

    @classmethod
    def redirect(cls, location: str | None = None, *, status: int = 302) -> Fault:
        """Answer ``status`` with a ``Location`` to another host.

        ``location`` is sent as given; None points at the same port and request target on
        ``127.0.0.2`` (:data:`REDIRECT_HOST`), a different host that the simulator does not serve.
        """
        if status not in _REDIRECT_STATUSES:
            raise ValueError(f"not a redirect status: {status}")
        headers = () if location is None else (("Location", location),)
        return cls("redirect", status_code=status, headers=headers, message=_reason(status))

    @classmethod
    def bad_encoding(cls) -> Fault:
        """Answer 200 with ``Content-Encoding: gzip`` over a body that is plain JSON, not gzip."""
        return cls("bad_encoding", headers=(("Content-Encoding", "gzip"),))

    @classmethod
    def nan_body(cls, token: Literal["NaN", "Infinity", "-Infinity"] = "NaN") -> Fault:
        """Answer a costs or breakdowns page whose first cost (or invoice total) is the bare JSON ``token``.

        Python's ``json`` module reads such a page without complaint; strict JSON parsers refuse it.
        Waits for a costs or breakdowns page with data.
        """
        if token not in _NON_FINITE:
            raise ValueError(f"token must be one of {', '.join(_NON_FINITE)}, got {token!r}")
        return cls("nan_body", number=_NON_FINITE[token])

    @classmethod
    def duplicate_window(cls) -> Fault:
        """Answer a costs or breakdowns page whose first window appears again at its end.

        The page then holds one window's items more than ``limit``. Waits for a page with data.
        """
        return cls("duplicate_window")

    @classmethod
    def out_of_range_window(cls, day: date | None = None) -> Fault:
        """Answer a costs or breakdowns page with one more window, of ``day``, outside the requested range.

        None means :data:`OUT_OF_RANGE_DAY` (2019-01-01), or the window just before ``starting_on`` when
        the request covers that day. Waits for a page with data.
        """
        return cls("out_of_range_window", day=day)

    @classmethod
    def repeat_customers(cls, count: int = 1) -> Fault:
        """Answer a customers page starting ``count`` customers before its cursor, with the cursor that follows.

        The previous page's last ``count`` customers show again. Waits for a ``/v1/customers`` request
        whose cursor points past the first customer.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        return cls("repeat_customers", count=count)

    @classmethod
    def insert_customer(cls) -> Fault:
        """Create an active customer just before a customers page is served, ahead of the page's cursor.

        It is created when the listing's first customer was (its id starts with zeros, so it sorts before
        that one), so every customer after it moves one place: the previous page's last customer shows
        again on this page, and the new one is missed unless the listing is read again. Waits for a
        ``/v1/customers`` request whose cursor points past the first customer, in an active listing.
        """
        return cls("insert_customer")

    @classmethod
    def seen_customers_page(cls) -> Fault:
        """Answer a customers page with the first page's customers again and a cursor never sent before.

        The cursor resumes where the request pointed, so one such page only repeats customers; injected with
        ``times=None`` the listing never ends for a client that does not notice. Waits for a
        ``/v1/customers`` request whose cursor points past the first customer.
        """
        return cls("seen_customers_page")

    @classmethod
    def exact_numbers(cls, texts: Sequence[str]) -> Fault:
        """Answer a costs or breakdowns page whose money and quantity numbers are ``texts``, verbatim.

        In document order each ``cost`` (costs), or each ``total`` and line item ``quantity`` and
        ``unit_price`` (breakdowns), is written as the next of ``texts`` (cycling), e.g. ``"12.345678901234567890123"``,
        ``"9007199254740993"``, ``"1e5"``, ``"-0.0"``; each must be a JSON number. Compare with
        :meth:`MetronomeSimulator.last_body`. Waits for a page with such a number.
        """
        return cls("exact_numbers", texts=value_faults.number_texts(texts))

    @classmethod
    def wrong_type(cls, kind: WrongType) -> Fault:
        """Answer a costs or breakdowns page whose first money number is a JSON string of its text, or ``true``.

        The first in document order: a credit type's ``cost`` (costs), a line item's ``total`` (breakdowns,
        whose line items come before their invoice's total). Waits for a page with a money number.
        """
        if kind not in get_args(WrongType):
            raise ValueError(f"kind must be 'string' or 'boolean', got {kind!r}")
        return cls("wrong_type", value_type=kind)

    @classmethod
    def duplicate_key(cls) -> Fault:
        """Answer a costs or breakdowns page whose first object with a money field has that key twice.

        The first value is the real one, the second differs by 1 (``"cost":1.25,"cost":2.25``): Python's
        ``json`` keeps the last, other parsers the first. Waits for a page with a money number.
        """
        return cls("duplicate_key")

    @classmethod
    def odd_text(cls) -> Fault:
        """Answer a costs or breakdowns page whose first line item name holds U+2028, U+2029 and U+0085.

        They are written as raw UTF-8 in the middle of the name (``values.ODD_TEXT``): valid JSON, yet line
        breaks to many tools. Waits for a page with a line item.
        """
        return cls("odd_text")

    @classmethod
    def foreign_customer(cls) -> Fault:
        """Answer a breakdowns page whose first invoice names another existing customer as its ``customer_id``.

        Waits for a breakdowns page with data (costs pages name no customer).
        """
        return cls("foreign_customer")

    @classmethod
    def html_body(cls) -> Fault:
        """Answer 200 with an HTML maintenance page (``text/html; charset=utf-8``), as a proxy in front would."""
        return cls("html_body")

    @classmethod
    def empty_body(cls) -> Fault:
        """Answer 200 with ``Content-Type: application/json`` and an empty body."""
        return cls("empty_body")


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per API (bearer) token: ``rate`` requests per second, up to ``burst`` at once.

    Requests beyond it are answered 429 ``{"message": "Too Many Requests"}``, with no retry header (as
    Metronome does: the default) or with ``Retry-After`` (whole seconds, rounded up) or ``retry-after-ms``
    giving the time until the bucket holds a request again. ``burst`` defaults to ``rate`` (at least 1).
    """

    rate: float
    burst: float | None = None
    retry_after: RetryAfter | None = None

    def __post_init__(self) -> None:
        if not 0 < self.rate < math.inf:
            raise ValueError(f"rate must be positive and finite, got {self.rate}")
        if self.burst is None:
            object.__setattr__(self, "burst", max(1.0, float(self.rate)))
        elif not 1 <= self.burst < math.inf:
            raise ValueError(f"burst must be at least 1 and finite, got {self.burst}")
        if self.retry_after not in (None, *get_args(RetryAfter)):
            raise ValueError(f"retry_after must be None, 'seconds' or 'ms', got {self.retry_after!r}")

    @property
    def capacity(self) -> float:
        """The bucket size: ``burst`` once defaulted."""
        return float(self.rate if self.burst is None else self.burst)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator received it; the Authorization header is never kept."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool
    started_at: float
    """``time.monotonic()`` when the request was read."""
    connection_id: int
    """Counts TCP connections from 1, so tests can see keep-alive reuse."""
    in_flight: int
    """Requests being handled when this one started, itself included."""
    status: int | None = None
    """The answer's status code; None while it is being handled, or when the connection closed unanswered."""
    throttled: bool = False
    """Whether the rate limit refused it (a 429 from :meth:`Fault.status` is not throttled)."""
    fault: FaultKind | None = None
    """The transport fault that answered it or shaped its answer (``status``, ``drop``, ``html_body``,
    ``slow``...), if any; page and window faults are not noted."""


class _Unset(enum.Enum):
    """The default of :meth:`MetronomeSimulator.inject`'s ``times``, which depends on ``probability``."""

    UNSET = enum.auto()


@dataclass
class _FaultRule:
    fault: Fault
    path: str | None
    remaining: int | None
    probability: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        # The rule's own generator: its draws depend on the requests it could alter alone.
        self._draws = random.Random(self.seed)

    def fires(self) -> bool:
        """Whether this request gets the fault: always without a probability, else a draw."""
        return self.probability is None or self._draws.random() < self.probability


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False
    throttled: bool = False
    seconds_per_byte: float = 0.0
    """Above zero, the body is trickled out a byte at a time (Fault.trickle)."""
    content_type: str = "application/json"
    fault: FaultKind | None = None
    """The transport fault behind this answer, for the request log."""


@dataclass(frozen=True)
class _Incoming:
    method: str
    target: str
    """The request target as sent: path and query, still quoted."""
    path: str
    query: dict[str, list[str]]
    token: str | None
    """The bearer token when it is an accepted one, else None (never logged)."""

    @property
    def authorized(self) -> bool:
        return self.token is not None


@dataclass(frozen=True)
class _PageRequest:
    path: str
    digest: str
    limit: int
    position: Position
    raw_cursor: str | None


class _ApiError(Exception):
    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _json_response(
    status: int, payload: object, headers: tuple[tuple[str, str], ...] = (), *, throttled: bool = False
) -> _Response:
    return _Response(status, value_faults.dumps(payload), headers, throttled=throttled)


class _FaultRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_FaultRule] = []

    def add(
        self, fault: Fault, path: str | None, times: int | None, probability: float | None, seed: int
    ) -> None:
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for a fault that never runs out")
        if probability is not None and not 0 <= probability <= 1:
            raise ValueError(f"probability must be between 0 and 1, got {probability}")
        with self._lock:
            self._rules.append(_FaultRule(fault, path, times, probability, seed))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, path: str, kinds: frozenset[FaultKind]) -> Fault | None:
        """The first active fault of one of ``kinds`` matching ``path``, spending one of its uses."""
        return self.apply(path, kinds, lambda fault: fault)

    def apply(self, path: str, kinds: frozenset[FaultKind], use: Callable[[Fault], _T | None]) -> _T | None:
        """``use(fault)`` for the first active fault of ``kinds`` matching ``path`` that it can use (not None).

        Spends one use of that fault only: a fault waits for a request it has something to alter in.
        A fault with a probability draws only then, under the lock, so that its draws follow the order
        of the requests it could alter.
        """
        with self._lock:
            for rule in self._rules:
                if rule.fault.kind not in kinds or (rule.path is not None and rule.path not in path):
                    continue
                result = use(rule.fault)
                if result is None or not rule.fires():
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                return result
        return None


class _BodyLog:
    """The last 200 body sent for each of the most recently answered paths."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: OrderedDict[str, bytes] = OrderedDict()

    def record(self, path: str, body: bytes) -> None:
        with self._lock:
            self._bodies[path] = body
            self._bodies.move_to_end(path)
            if len(self._bodies) > BODY_PATHS_KEPT:
                self._bodies.popitem(last=False)

    def last(self, path_substring: str) -> bytes | None:
        with self._lock:
            return next(
                (body for path, body in reversed(self._bodies.items()) if path_substring in path), None
            )

    def clear(self) -> None:
        with self._lock:
            self._bodies.clear()


_LogSlot = tuple[int, int]
"""Where a request's record lies: (log generation, index); a clear starts a new generation."""


class _RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._generation = 0
        self._in_flight = 0
        self.max_in_flight = 0
        self.throttled_count = 0

    def begin(self, incoming: _Incoming, connection_id: int) -> _LogSlot:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._records.append(
                RequestRecord(
                    incoming.method,
                    incoming.path,
                    incoming.query,
                    incoming.authorized,
                    time.monotonic(),
                    connection_id,
                    self._in_flight,
                )
            )
            return self._generation, len(self._records) - 1

    def end(self, slot: _LogSlot, response: _Response | None) -> None:
        """Count the request out of flight and note its answer (None: it failed before one was made)."""
        with self._lock:
            self._in_flight -= 1
            generation, index = slot
            # A record forgotten by clear() while its request was in flight stays forgotten.
            if response is None or generation != self._generation:
                return
            status = None if response.drop else response.status
            self._records[index] = replace(
                self._records[index], status=status, throttled=response.throttled, fault=response.fault
            )
            self.throttled_count += response.throttled

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._generation += 1
            self.max_in_flight = self._in_flight
            self.throttled_count = 0

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)


class _RateLimiter:
    """Token buckets keyed by API token, on the monotonic clock; safe to share between threads."""

    def __init__(self, limit: RateLimit | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._limit = limit
        self._buckets: dict[str, tuple[float, float]] = {}
        """Per token: (requests left, when that was last worked out)."""

    @property
    def limit(self) -> RateLimit | None:
        return self._limit

    def configure(self, limit: RateLimit | None) -> None:
        """Apply ``limit`` from now on; buckets keep what they hold (capped), or restart full after None."""
        with self._lock:
            now, old = self._clock(), self._limit
            if limit is None or old is None:
                self._buckets.clear()
            else:
                # What was earned so far was earned at the old rate; the new one only counts from now.
                self._buckets = {
                    token: (min(limit.capacity, _refilled(old, left, since, now)), now)
                    for token, (left, since) in self._buckets.items()
                }
            self._limit = limit

    def admit(self, token: str) -> _Response | None:
        """None when ``token`` may make a request (spending one), else the 429 answer to send instead."""
        with self._lock:
            limit = self._limit
            if limit is None:
                return None
            now = self._clock()
            left, since = self._buckets.get(token, (limit.capacity, now))
            left = _refilled(limit, left, since, now)
            if left >= 1:
                self._buckets[token] = (left - 1, now)
                return None
            # A refused request spends nothing, so a client that keeps knocking is not starved forever.
            self._buckets[token] = (left, now)
        wait = (1 - left) / limit.rate
        return _json_response(
            429, {"message": "Too Many Requests"}, _retry_headers(wait, limit.retry_after), throttled=True
        )


def _refilled(limit: RateLimit, left: float, since: float, now: float) -> float:
    return min(limit.capacity, left + (now - since) * limit.rate)


def _retry_headers(wait: float, style: RetryAfter | None) -> tuple[tuple[str, str], ...]:
    """The retry hint of a throttled answer: rounded up, so a client that obeys it always finds a request."""
    if style == "seconds":
        return (("Retry-After", str(math.ceil(wait))),)
    if style == "ms":
        return (("retry-after-ms", str(math.ceil(wait * 1000))),)
    return ()


class _Query:
    """Query parameters; lists may come as ``name=a&name=b``, ``name[]=a`` or ``name=a,b`` (the SDK's form)."""

    def __init__(self, raw: dict[str, list[str]]) -> None:
        self.values: dict[str, list[str]] = {}
        for key, values in raw.items():
            self.values.setdefault(key.removesuffix("[]"), []).extend(values)

    def first(self, name: str) -> str | None:
        """The first value, with an empty value read as absent."""
        values = self.values.get(name)
        return values[0] if values and values[0] else None

    def every(self, name: str) -> list[str]:
        return [part for value in self.values.get(name, []) for part in value.split(",") if part]

    def digest(self, path: str) -> str:
        """Identifies the query a cursor belongs to; ``limit`` may change between pages, nothing else may."""
        kept = sorted(
            (key, sorted(values)) for key, values in self.values.items() if key not in {"next_page", "limit"}
        )
        return hashlib.sha256(json.dumps([path, kept]).encode()).hexdigest()[:16]


def _bad_request(message: str) -> _ApiError:
    return _ApiError(400, message)


def _encode_cursor(position: Position, digest: str, nonce: str | None = None) -> str:
    """An opaque cursor; a nonce makes a cursor for the same position distinct (as on an empty page)."""
    fields: dict[str, object] = {"p": list(position), "q": digest}
    if nonce is not None:
        fields["n"] = nonce
    payload = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _decode_cursor(raw: str, digest: str) -> Position:
    try:
        payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        first, second = payload["p"]
        cursor_digest = payload["q"]
    except (ValueError, TypeError, KeyError) as error:
        raise _bad_request("next_page is not a valid cursor") from error
    if not all(type(part) is int and part >= 0 for part in (first, second)):
        raise _bad_request("next_page is not a valid cursor")
    if cursor_digest != digest:
        raise _bad_request("next_page cursor does not match the query")
    return first, second


def _page_request(path: str, query: _Query, default_limit: int) -> _PageRequest:
    raw_limit = query.first("limit")
    limit = default_limit
    if raw_limit is not None:
        if not _DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise _bad_request(f"limit must be an integer between 1 and {MAX_LIMIT}, got {raw_limit!r}")
        limit = int(raw_limit)
    digest = query.digest(path)
    raw_cursor = query.first("next_page")
    position = (0, 0) if raw_cursor is None else _decode_cursor(raw_cursor, digest)
    return _PageRequest(path, digest, limit, position, raw_cursor)


def _timestamp(query: _Query, name: str) -> datetime:
    raw = query.first(name)
    if raw is None:
        raise _bad_request(f"{name} is required")
    try:
        return parse_timestamp(raw)
    except OverflowError as error:
        raise _bad_request(f"{name} is out of range, got {raw!r}") from error
    except ValueError as error:
        raise _bad_request(
            f"{name} must be an RFC 3339 timestamp such as 2024-01-01T00:00:00Z, got {raw!r}"
        ) from error


def _time_range(query: _Query) -> tuple[datetime, datetime]:
    starting_on, ending_before = _timestamp(query, "starting_on"), _timestamp(query, "ending_before")
    if starting_on >= ending_before:
        raise _bad_request("starting_on must be before ending_before")
    return starting_on, ending_before


def _choice(query: _Query, name: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed`` (case-insensitive); the first is the default."""
    raw = query.first(name)
    if raw is None:
        return allowed[0]
    if raw.lower() not in allowed:
        raise _bad_request(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw.lower()


def _flag(query: _Query, name: str) -> bool:
    raw = query.first(name)
    if raw is None or raw.lower() in _FALSE:
        return False
    if raw.lower() in _TRUE:
        return True
    raise _bad_request(f"{name} must be true or false, got {raw!r}")


def _uuid(raw: str, name: str) -> str:
    if not _UUID.fullmatch(raw):
        raise _bad_request(f"{name} must be a UUID, got {raw!r}")
    return raw.lower()


def _filter_values(query: _Query, name: str) -> list[str]:
    values = query.every(name)
    if len(values) > MAX_FILTER_VALUES:
        raise _bad_request(f"at most {MAX_FILTER_VALUES} {name} may be given, got {len(values)}")
    return values


def _statuses(query: _Query) -> frozenset[str]:
    wanted = frozenset(value.upper() for value in query.every("status"))
    if not wanted <= _STATUSES:
        raise _bad_request(f"status must be DRAFT or FINALIZED, got {', '.join(sorted(wanted - _STATUSES))}")
    return wanted


def _credit_type_id(query: _Query) -> str | None:
    raw = query.first("credit_type_id")
    return None if raw is None else _uuid(raw, "credit_type_id")


def _utc(moment: date) -> datetime:
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day, tzinfo=timezone.utc)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _window_index(moment: datetime, size: WindowSize, *, ceil: bool) -> int:
    """Index of the window (counted from the Unix epoch) at or after / before ``moment``."""
    length = WINDOW_LENGTHS[size]
    return -((EPOCH - moment) // length) if ceil else (moment - EPOCH) // length


def _window_start(index: int, size: WindowSize) -> datetime:
    return EPOCH + index * WINDOW_LENGTHS[size]


Page = tuple[list[JsonObject], Position | None]
"""A page's items and where the next page starts (None: this was the last)."""
Collector = Callable[[Position], Page]
"""Builds the page starting at a position, for one query."""


def _collect(
    count: int, position: Position, limit: int, max_windows: int, items_at: Callable[[int], list[JsonObject]]
) -> Page:
    """One page of items from ``count`` windows, each holding ``items_at(window)`` items.

    Scans at most ``max_windows`` windows; returns the page and where the next one starts (None at the end).
    """
    first, skip = position
    stop = min(count, first + max_windows)
    page: list[JsonObject] = []
    for window in range(first, stop):
        items = items_at(window)[skip:]
        room = limit - len(page)
        if len(items) > room:
            page.extend(items[:room])
            return page, (window, skip + room)
        page.extend(items)
        skip = 0
    return page, ((stop, 0) if stop < count else None)


def _endless_page(page: _PageRequest, collect: Collector) -> tuple[list[JsonObject], str]:
    """A page with data, if anything matches at all, and a cursor never sent before.

    Past the end it starts over from the first item; a fresh nonce keeps every cursor distinct.
    """
    position, restarts = page.position, 0
    while True:
        items, next_position = collect(position)
        if next_position is None:
            next_position, restarts = (0, 0), restarts + 1
        # A second restart means the whole listing was scanned without finding anything.
        if items or restarts > 1:
            return items, _encode_cursor(next_position, page.digest, nonce=uuid.uuid4().hex)
        position = next_position


@dataclass(frozen=True)
class _WindowedQuery:
    """A costs or breakdowns request, as the window faults need to know it."""

    source: BilledSource
    size: WindowSize
    starting_on: datetime
    ending_before: datetime
    start_key: str
    """The item key holding its window's start."""
    items_at: Callable[[datetime], list[JsonObject]]
    """The items of the window starting at a time, whatever the range, the clock and the customer's lifecycle."""
    other_customer_id: str | None = None
    """Another existing customer, for Fault.foreign_customer (None: there is none)."""

    def spoil(self, fault: Fault, items: list[JsonObject]) -> list[JsonObject] | None:
        """``items`` (not empty) as altered by a window fault; None when it finds nothing to alter there."""
        if fault.kind == "nan_body":
            return _with_number(items, math.nan if fault.number is None else fault.number)
        if fault.kind == "duplicate_window":
            first = items[0][self.start_key]
            return items + [item for item in items if item[self.start_key] == first]
        if fault.kind == "out_of_range_window":
            return items + self.items_at(self._outside(fault.day))
        if fault.kind == "exact_numbers":
            return value_faults.exact_numbers(items, self.source, fault.texts)
        if fault.kind == "wrong_type":
            return value_faults.wrong_type(items, self.source, fault.value_type or "string")
        if fault.kind == "duplicate_key":
            return value_faults.duplicate_key(items, self.source)
        if fault.kind == "odd_text":
            return value_faults.odd_text(items)
        return value_faults.foreign_customer(items, self.other_customer_id)

    def _outside(self, day: date | None) -> datetime:
        """The start of a window outside the range: ``day``'s, by default 2019-01-01 or the one before it."""
        if day is not None:
            return _utc(day)
        start = _utc(OUT_OF_RANGE_DAY)
        if self.starting_on <= start and start + WINDOW_LENGTHS[self.size] <= self.ending_before:
            start = _window_start(_window_index(self.starting_on, self.size, ceil=True) - 1, self.size)
        return start


def _with_number(items: list[JsonObject], number: float) -> list[JsonObject]:
    """``items`` with one cost (costs) or invoice total (breakdowns) replaced by ``number``.

    Items may be shared with the data's caches, so the one altered is copied first.
    """
    # Prefer a costs window that has a cost to spoil over inventing one.
    index = next((i for i, item in enumerate(items) if item.get("credit_types")), 0)
    spoiled = copy.deepcopy(items[index])
    if "credit_types" not in spoiled:
        spoiled["total"] = number
    elif spoiled["credit_types"]:
        next(iter(spoiled["credit_types"].values()))["cost"] = number
    else:
        primary = CREDIT_TYPES[0]
        spoiled["credit_types"][primary.id] = {"name": primary.name, "cost": number}
    return [*items[:index], spoiled, *items[index + 1 :]]


def _customer_matches(
    customer: JsonObject, ids: list[str], alias: str | None, salesforce_ids: list[str]
) -> bool:
    return (
        (not ids or customer["id"] in ids)
        and (alias is None or alias in customer["ingest_aliases"])
        and (not salesforce_ids or customer["customer_config"]["salesforce_account_id"] in salesforce_ids)
    )


class MetronomeSimulator:
    """A local Metronome API on a real HTTP server, with deterministic data.

    Use it as a context manager (``with MetronomeSimulator() as sim:``) or call :meth:`start` and
    :meth:`stop`. Clients point at :attr:`url` and send ``Authorization: Bearer <token>``.

    Every customer has a lifecycle (:mod:`~airflow_provider_metronome.testing.accounts`): it is listed
    once created, as archived once archived, and has costs (breakdowns) only on the days that overlap its
    lifetime and billing period while it has a plan (a contract). Generated customers are created hourly
    from 2020-01-01 and have a plan and a contract; more come from :meth:`add_customer`.

    Args:
        token: The bearer token accepted (with ``extra_tokens``).
        seed: Root of all generated data; the same seed gives the same ids and costs in every process.
        customers: Generated active customers, created an hour apart from 2020-01-01 and never archived.
        archived_customers: Generated customers archived 90 days after their creation (in 2020), listed
            only with ``only_archived=true``; they have no costs after that.
        unique_metric_customers: Active customers whose ``/costs`` answers 400 (UNIQUE-type billable metric).
        port: Port to listen on; 0 picks a free one.
        host: Interface to listen on (IPv4).
        latency: Seconds every request waits before it is answered.
        availability_delay: How long after a window ends it becomes visible.
        now: A frozen clock (aware datetime); None follows the wall clock.
        line_items_per_credit_type: Line items each credit type has on a day with usage.
        default_page_size: Page size when a request gives no ``limit``.
        extra_tokens: More accepted bearer tokens, each with its own rate-limit budget (same data).
        rate_limit: A token bucket per API token; None (the default) serves everything.
        tls: Serve HTTPS with a certificate made at :meth:`start`; trust :attr:`certificate_path`.

    ``latency``, ``availability_delay``, ``now``, ``default_page_size``, ``rate_limit`` and the breakdown
    page spans ``max_day_windows_per_page`` (35) and ``max_hour_windows_per_page`` (24) may be changed,
    and customers added, while running.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        seed: int = 0,
        customers: int = 25,
        archived_customers: int = 3,
        unique_metric_customers: int = 2,
        port: int = 0,
        host: str = "127.0.0.1",
        latency: float = 0.0,
        availability_delay: timedelta = timedelta(hours=2),
        now: datetime | None = None,
        line_items_per_credit_type: int = 4,
        default_page_size: int = 25,
        extra_tokens: Collection[str] = (),
        rate_limit: RateLimit | None = None,
        tls: bool = False,
    ) -> None:
        if not 1 <= default_page_size <= MAX_LIMIT:
            raise ValueError(f"default_page_size must be between 1 and {MAX_LIMIT}")
        self.token = token
        self.extra_tokens = frozenset(extra_tokens)
        self.host = host
        self.tls = tls
        self.latency = latency
        self.availability_delay = availability_delay
        self.default_page_size = default_page_size
        self.max_day_windows_per_page = MAX_DAY_WINDOWS_PER_PAGE
        self.max_hour_windows_per_page = MAX_HOUR_WINDOWS_PER_PAGE
        self._requested_port = port
        self._seed = seed
        self._archived_customers = archived_customers
        self._unique_metric_customers = unique_metric_customers
        self._line_items_per_credit_type = line_items_per_credit_type
        self._data = self._dataset(customers)
        self._accounts = Accounts(map(generated_account, self._data.customers))
        self._frozen_now: datetime | None = None
        self.now = now
        self._faults = _FaultRegistry()
        self._log = _RequestLog()
        self._bodies = _BodyLog()
        self._limiter = _RateLimiter(rate_limit)
        self._withheld_lock = threading.Lock()
        self._withheld: dict[str, frozenset[date]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._certificates: _Certificates | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> MetronomeSimulator:
        """Bind and start serving in a background thread; returns self."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        certificates = _Certificates(self.host) if self.tls else None
        try:
            server = _Server(
                (self.host, self._requested_port),
                self,
                None if certificates is None else certificates.context,
            )
        except BaseException:
            if certificates is not None:
                certificates.remove()
            raise
        # A short poll interval keeps stop() quick; the idle cost is negligible.
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="metronome-simulator",
            daemon=True,
        )
        thread.start()
        self._server, self._thread, self._certificates = server, thread, certificates
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and remove TLS files (idempotent)."""
        server, thread, certificates = self._server, self._thread, self._certificates
        if server is None or thread is None:
            return
        self._server = self._thread = self._certificates = None
        # Wakes answers that are being trickled out, so they end now rather than byte by byte.
        server.stopping.set()
        server.shutdown()
        server.server_close()
        # Idle keep-alive connections would otherwise keep being served by their threads.
        server.close_connections()
        thread.join()
        if certificates is not None:
            certificates.remove()

    def __enter__(self) -> MetronomeSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port; only while running."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without ``/v1`` or a trailing slash, e.g. ``http://127.0.0.1:54321`` (``https`` with TLS)."""
        host = "127.0.0.1" if self.host in {"", "0.0.0.0"} else self.host
        scheme = "https" if self._certificates is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def certificate_path(self) -> str:
        """PEM file of the certificate authority that signed the TLS certificate; only while running with TLS.

        Pass it to clients as their CA bundle, e.g. ``requests.get(url, verify=sim.certificate_path)``.
        """
        if self._certificates is None:
            raise RuntimeError("the simulator is not running with TLS")
        return str(self._certificates.ca_path)

    @property
    def open_connections(self) -> int:
        """TCP connections currently open (0 when stopped): shows when a client has hung up."""
        server = self._server
        return 0 if server is None else server.connection_count()

    # -- rate limit --------------------------------------------------------------------------------------

    @property
    def rate_limit(self) -> RateLimit | None:
        """The per-token rate limit, None when there is none.

        Setting a new limit keeps what each token's bucket holds (capped to the new burst) and refills
        it at the new rate from then on; setting None forgets every bucket, so the next limit starts full.
        """
        return self._limiter.limit

    @rate_limit.setter
    def rate_limit(self, value: RateLimit | None) -> None:
        self._limiter.configure(value)

    @property
    def throttled_count(self) -> int:
        """Requests the rate limit refused since the last :meth:`clear_requests`."""
        return self._log.throttled_count

    # -- clock -------------------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The simulator's current time (UTC): the frozen value if one was set, else the wall clock."""
        return self._frozen_now if self._frozen_now is not None else datetime.now(timezone.utc)

    @now.setter
    def now(self, value: datetime | None) -> None:
        if value is not None and value.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")
        self._frozen_now = None if value is None else plain_utc(value)

    # -- data --------------------------------------------------------------------------------------------

    def _dataset(self, customers: int) -> Dataset:
        return Dataset(
            seed=self._seed,
            customers=customers,
            archived_customers=self._archived_customers,
            unique_metric_customers=min(self._unique_metric_customers, customers),
            line_items_per_credit_type=self._line_items_per_credit_type,
        )

    def set_customer_count(self, customers: int) -> None:
        """Regenerate the data with ``customers`` active customers (same seed and other settings).

        Customers added with :meth:`add_customer` stay.
        """
        self._data = self._dataset(customers)
        self._accounts.replace_generated(map(generated_account, self._data.customers))

    def add_customer(
        self,
        *,
        created_at: datetime,
        archived_at: datetime | None = None,
        plan: bool = True,
        contract: bool = True,
        billing_start: date | None = None,
        billing_end: date | None = None,
        name: str | None = None,
    ) -> str:
        """Add a customer with usage generated like the others'; returns its id. Safe while serving.

        Its id depends only on the seed and how many customers were added before it. It is listed from
        ``created_at`` on, as archived from ``archived_at`` on; it has costs only with a ``plan`` and
        breakdowns only with a ``contract``, on the days overlapping both its lifetime and its billing
        period ``[billing_start, billing_end)`` (None: open). Datetimes must be timezone-aware.
        """
        spec = CustomerSpec(created_at, archived_at, plan, contract, billing_start, billing_end, name)
        return self._add(spec).id

    def _add(self, spec: CustomerSpec, *, sorts_first: bool = False) -> Account:
        return self._accounts.add(
            lambda number: added_account(self._seed, number, spec, sorts_first=sorts_first)
        )

    def add_lifecycle_customers(self, first_day: date, end_day: date) -> dict[str, str]:
        """Add one customer per lifecycle role around the window ``[first_day, end_day)``; returns role -> id.

        With M the window's middle day and "long before" 400 days before ``first_day``:

        - ``created_inside``: created at 09:30 UTC on M;
        - ``archived_inside``: created long before, archived at 15:00 on M;
        - ``archived_after``: created long before, archived at 12:00 the day after ``end_day``;
        - ``archived_before``: created long before, archived at 08:00 the day before ``first_day``;
        - ``created_after``: created at 06:00 the day after ``end_day``;
        - ``no_contract`` / ``no_plan``: created long before, without a contract (no breakdowns) / a plan
          (no costs);
        - ``plan_ends_inside`` / ``plan_starts_inside``: created long before, billed until / from M.
        """
        return {role: self._add(spec).id for role, spec in lifecycle_specs(first_day, end_day).items()}

    def _account(self, customer_id: str) -> Account:
        account = self._accounts.get(customer_id.lower())
        if account is None:
            raise KeyError(f"unknown customer {customer_id}")
        return account

    def customer(self, customer_id: str) -> JsonObject:
        """The customer as ``GET /v1/customers`` lists it now (``archived_at`` null until archived).

        Raises KeyError for an unknown id; answers for customers not created yet too.
        """
        return copy.deepcopy(self._account(customer_id).as_listed(self.now))

    def billed_days(self, customer_id: str, source: BilledSource, start: date, end: date) -> list[date]:
        """The days of ``[start, end)`` on which the customer has (or will have) ``/costs`` windows or breakdowns.

        The simulator's own model, to compare answers with: it follows the customer's lifecycle, plan and
        contract, but ignores :attr:`availability_delay`, :attr:`now` and withheld days (and whether
        ``/costs`` refuses the customer for a UNIQUE-type metric).
        """
        return self._account(customer_id).billed_days(source, _utc(start).date(), _utc(end).date())

    @property
    def customers(self) -> list[JsonObject]:
        """Every customer, archived and not yet created ones included, in listing order, as listed now."""
        now = self.now
        return copy.deepcopy([account.as_listed(now) for account in self._accounts.ordered])

    def _listed(self, *, only_archived: bool) -> list[Account]:
        now = self.now
        return [
            account for account in self._accounts.ordered if account.listed(now, only_archived=only_archived)
        ]

    @property
    def active_customer_ids(self) -> list[str]:
        """The customers ``GET /v1/customers`` lists now, in its order: created and not archived."""
        return [account.id for account in self._listed(only_archived=False)]

    @property
    def archived_customer_ids(self) -> list[str]:
        """The customers ``GET /v1/customers?only_archived=true`` lists now, in its order."""
        return [account.id for account in self._listed(only_archived=True)]

    @property
    def unique_metric_customer_ids(self) -> list[str]:
        """Active customers whose ``/costs`` requests are refused with 400."""
        return list(self._data.unique_metric_ids)

    @property
    def costs_customer_ids(self) -> list[str]:
        """Active customers whose ``/costs`` is served (no UNIQUE-type metric), in listing order."""
        refused = set(self._data.unique_metric_ids)
        return [account.id for account in self._listed(only_archived=False) if account.id not in refused]

    def withhold(self, customer_id: str, days: Iterable[date]) -> None:
        """Leave ``days`` (UTC dates) out of one customer's costs and breakdowns, as if not yet available.

        Adds to the days already withheld; other customers, and the clock's :attr:`availability_delay`,
        are unaffected. :meth:`costs_for` still answers for these days; :meth:`breakdowns_for` leaves
        them out, as served.
        """
        customer_id = self._account(customer_id).id
        withheld = {_utc(day).date() for day in days}
        with self._withheld_lock:
            self._withheld[customer_id] = self._withheld.get(customer_id, frozenset()) | withheld

    def clear_withheld(self, customer_id: str | None = None) -> None:
        """Serve again the days withheld from ``customer_id`` (None: from every customer)."""
        with self._withheld_lock:
            if customer_id is None:
                self._withheld.clear()
            else:
                self._withheld.pop(customer_id.lower(), None)

    def costs_for(self, customer_id: str, day: date) -> JsonObject | None:
        """The ``/costs`` window of ``day`` (a UTC date), whether or not it is available yet.

        None when the customer has no window that day (see :meth:`billed_days`). Also answers for
        UNIQUE-metric customers, whose ``/costs`` requests the API refuses.
        """
        account, day = self._account(customer_id), _utc(day).date()
        if not account.billed_days("costs", day, day + timedelta(days=1)):
            return None
        return copy.deepcopy(self._data.costs_window(account.id, day))

    def breakdowns_for(
        self, customer_id: str, window_start: date, window_end: date, *, window_size: WindowSize = "day"
    ) -> list[JsonObject]:
        """Every breakdown the API would list, over all pages, for an unfiltered ``date_asc`` query.

        ``window_start``/``window_end`` are the ``starting_on``/``ending_before`` bounds (a date means its
        midnight UTC, a naive datetime is read as UTC); windows not yet available, and days without
        breakdowns for the customer (see :meth:`billed_days`), are left out and statuses follow
        :attr:`now`, exactly as served.
        """
        data, account, now = self._data, self._account(customer_id), self.now
        breakdowns = []
        windows = self._available_windows(
            _utc(window_start),
            _utc(window_end),
            window_size,
            now,
            account=account,
            source="invoice_breakdowns",
        )
        for index in windows:
            start = _window_start(index, window_size)
            status = invoice_status(start, now)
            breakdowns.extend(data.window_invoices(account.id, start, window_size, status=status))
        return breakdowns

    def _available_windows(
        self,
        start: datetime,
        end: datetime,
        size: WindowSize,
        now: datetime,
        *,
        account: Account,
        source: BilledSource,
    ) -> Sequence[int]:
        """Windows lying wholly inside ``[start, end)`` that ended at least ``availability_delay`` ago.

        Only windows of the days the customer is billed for by ``source`` count, and days withheld from
        it are left out.
        """
        span = account.billed_span(source)
        if span is None:
            return range(0)
        first_day, end_day = span
        last = min(
            _window_index(end, size, ceil=False),
            _window_index(now - self.availability_delay, size, ceil=False),
            *(() if end_day is None else (_window_index(_utc(end_day), size, ceil=False),)),
        )
        first = max(_window_index(start, size, ceil=True), _window_index(_utc(first_day), size, ceil=True))
        windows = range(first, last)
        # No lock needed to read: withhold() replaces a customer's set whole, never edits it.
        withheld = self._withheld.get(account.id)
        if not withheld:
            # A range, not a list: requests may span decades of hourly windows.
            return windows
        return [index for index in windows if _window_start(index, size).date() not in withheld]

    # -- faults and request log --------------------------------------------------------------------------

    def inject(
        self,
        fault: Fault,
        path: str | None = None,
        times: int | _Unset | None = _Unset.UNSET,
        *,
        probability: float | None = None,
        seed: int = 0,
    ) -> None:
        """Apply ``fault`` to the next ``times`` requests (None: forever) whose path contains ``path``.

        Without ``probability``, ``times`` defaults to 1. With it, each request the fault could alter
        gets it with that ``probability`` (0 to 1), drawn from a ``random.Random(seed)`` of this
        injection alone, so the same requests in the same order get the same faults; ``times`` then
        counts the faulted answers and defaults to None (a share of every request from then on).

        - Transport faults (status, drop, slow, malformed_json, redirect, bad_encoding, trickle, html_body,
          empty_body) fire before authentication and routing, but after the rate limit.
        - Page faults (empty_page, repeating_cursor, endless_cursor) fire only on requests that would get a
          successful list page.
        - Customer page faults (repeat_customers, insert_customer, seen_customers_page) fire only on
          successful ``/v1/customers`` pages whose cursor points past the first customer.
        - Window faults (nan_body, duplicate_window, out_of_range_window, exact_numbers, wrong_type,
          duplicate_key, odd_text, foreign_customer) fire only on successful costs and breakdowns pages
          with data, and only once the page has what they alter (a number, a line item, an invoice).

        A fault waiting for its kind of request lets every other request pass untouched, and draws
        nothing for it. Faults are tried in the order injected: one that does not fire (or waits)
        lets the next have the request.
        """
        if isinstance(times, _Unset):
            times = 1 if probability is None else None
        self._faults.add(fault, path, times, probability, seed)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received since the last :meth:`clear_requests`, in arrival order."""
        return self._log.snapshot()

    def requests_for(self, path_substring: str) -> list[RequestRecord]:
        return [record for record in self._log.snapshot() if path_substring in record.path]

    def clear_requests(self) -> None:
        """Forget logged requests and their bodies, and reset :attr:`max_in_flight` and :attr:`throttled_count`."""
        self._log.clear()
        self._bodies.clear()

    def last_body(self, path_substring: str) -> bytes:
        """The exact body of the last 200 answer to a request whose path contains ``path_substring``.

        Kept for the :data:`BODY_PATHS_KEPT` paths answered most recently; raises KeyError when there is none.
        """
        body = self._bodies.last(path_substring)
        if body is None:
            raise KeyError(f"no 200 answer kept for a path containing {path_substring!r}")
        return body

    @property
    def max_in_flight(self) -> int:
        """The most requests handled at the same time since the last :meth:`clear_requests`."""
        return self._log.max_in_flight

    # -- request handling --------------------------------------------------------------------------------

    def _handle(self, method: str, target: str, authorization: str | None, connection_id: int) -> _Response:
        """Log the request before anything is answered, and count it as in flight until its answer is made.

        The answer is out of flight before it leaves: a client that reacts at once must not be counted twice.
        """
        incoming = self._incoming(method, target, authorization)
        slot = self._log.begin(incoming, connection_id)
        response: _Response | None = None
        try:
            response = self._respond(incoming)
            if response.status == 200 and not response.drop:
                self._bodies.record(incoming.path, response.body)
        finally:
            self._log.end(slot, response)
        return response

    def _incoming(self, method: str, target: str, authorization: str | None) -> _Incoming:
        split = urlsplit(target)
        scheme, _, credentials = (authorization or "").partition(" ")
        credentials = credentials.strip()
        accepted = scheme.lower() == "bearer" and (
            credentials == self.token or credentials in self.extra_tokens
        )
        return _Incoming(
            method=method,
            target=target,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            token=credentials if accepted else None,
        )

    def _respond(self, incoming: _Incoming) -> _Response:
        # The budget comes first, as at an API gateway; requests with an unknown token never spend it.
        if incoming.token is not None:
            throttled = self._limiter.admit(incoming.token)
            if throttled is not None:
                return throttled
        if self.latency > 0:
            time.sleep(self.latency)
        fault = self._faults.take(incoming.path, _TRANSPORT_FAULTS)
        if fault is not None and fault.kind not in {"slow", "trickle"}:
            return replace(self._transport_fault_response(fault, incoming), fault=fault.kind)
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.seconds)
        try:
            response = self._dispatch(incoming)
        except _ApiError as error:
            response = _json_response(error.status, {"message": error.message}, error.headers)
        if fault is not None:
            seconds_per_byte = fault.seconds if fault.kind == "trickle" else 0.0
            response = replace(response, seconds_per_byte=seconds_per_byte, fault=fault.kind)
        return response

    def _transport_fault_response(self, fault: Fault, incoming: _Incoming) -> _Response:
        if fault.kind == "drop":
            return _Response(0, drop=True)
        if fault.kind == "malformed_json":
            return _Response(200, _MALFORMED_BODY)
        if fault.kind == "bad_encoding":
            return _Response(200, _NOT_GZIP_BODY, fault.headers)
        if fault.kind == "html_body":
            return _Response(200, _MAINTENANCE_PAGE, content_type=_HTML_CONTENT_TYPE)
        if fault.kind == "empty_body":
            return _Response(200)
        headers = fault.headers
        if fault.kind == "redirect" and not headers:
            scheme = "https" if self._certificates is not None else "http"
            headers = (("Location", f"{scheme}://{REDIRECT_HOST}:{self.port}{incoming.target}"),)
        return _json_response(fault.status_code, {"message": fault.message}, headers)

    def _dispatch(self, incoming: _Incoming) -> _Response:
        if not incoming.authorized:
            raise _ApiError(401, "Unauthorized")
        endpoint, customer_id = _route(incoming.path)
        if incoming.method != "GET":
            raise _ApiError(
                405, f"Method {incoming.method} is not allowed on {incoming.path}", (("Allow", "GET"),)
            )
        query = _Query(incoming.query)
        if endpoint == "customers":
            return self._list_customers(incoming.path, query)
        customer_id = _uuid(customer_id, "customer_id")
        if endpoint == "costs":
            return self._list_costs(incoming.path, query, customer_id)
        return self._list_breakdowns(incoming.path, query, customer_id)

    def _page(
        self, page: _PageRequest, collect: Collector, windowed: _WindowedQuery | None = None
    ) -> _Response:
        """The page ``page`` asks for, as altered by a page fault if one is pending.

        Window faults are only taken for a page with data: they have nothing to spoil on an empty one.
        """
        fault = self._faults.take(page.path, _LIST_PAGE_FAULTS)
        kind = None if fault is None else fault.kind
        items: list[JsonObject]
        next_page: str | None
        if kind == "empty_page":
            items, next_page = [], _encode_cursor(page.position, page.digest, nonce=uuid.uuid4().hex)
        elif kind == "endless_cursor":
            items, next_page = _endless_page(page, collect)
        else:
            items, next_position = collect(page.position)
            next_page = None if next_position is None else _encode_cursor(next_position, page.digest)
        if kind == "repeating_cursor":
            next_page = page.raw_cursor or _encode_cursor((0, 0), page.digest)
        if fault is None and windowed is not None and items:
            shown = items
            spoiled = self._faults.apply(
                page.path, _WINDOW_PAGE_FAULTS, lambda spoiler: windowed.spoil(spoiler, shown)
            )
            items = shown if spoiled is None else spoiled
        return _json_response(200, {"data": items, "next_page": next_page})

    def _list_customers(self, path: str, query: _Query) -> _Response:
        page = _page_request(path, query, self.default_page_size)
        only_archived = _flag(query, "only_archived")
        ids = [_uuid(value, "customer_ids") for value in _filter_values(query, "customer_ids")]
        salesforce_ids = _filter_values(query, "salesforce_account_ids")
        alias = query.first("ingest_alias")
        now = self.now

        def listing() -> list[JsonObject]:
            listed = (
                account
                for account in self._accounts.ordered
                if account.listed(now, only_archived=only_archived)
            )
            customers = (account.as_listed(now) for account in listed)
            return [
                customer for customer in customers if _customer_matches(customer, ids, alias, salesforce_ids)
            ]

        def fits(fault: Fault) -> Fault | None:
            # Only a page that follows another has customers already listed to replay or shift.
            if page.position[0] == 0 or (fault.kind == "insert_customer" and only_archived):
                return None
            return fault

        fault = self._faults.apply(path, _CUSTOMER_PAGE_FAULTS, fits)
        matches = listing()
        if fault is not None and fault.kind == "insert_customer":
            created_at = parse_timestamp(matches[0]["created_at"]) if matches else now
            self._add(CustomerSpec(created_at), sorts_first=True)
            matches = listing()

        def collect(position: Position) -> Page:
            return _collect(len(matches), position, page.limit, page.limit, lambda i: [matches[i]])

        if fault is None:
            return self._page(page, collect)
        if fault.kind == "seen_customers_page":
            # Every customer before the cursor was served already, the first page's first of all.
            items = matches[: min(page.limit, page.position[0])]
            next_page: str | None = _encode_cursor(page.position, page.digest, nonce=uuid.uuid4().hex)
        else:
            start = page.position
            if fault.kind == "repeat_customers":
                start = (max(0, start[0] - fault.count), 0)
            items, next_position = collect(start)
            next_page = None if next_position is None else _encode_cursor(next_position, page.digest)
        return _json_response(200, {"data": items, "next_page": next_page})

    def _list_costs(self, path: str, query: _Query, customer_id: str) -> _Response:
        page = _page_request(path, query, self.default_page_size)
        starting_on, ending_before = _time_range(query)
        data = self._data
        account = self._require_customer(customer_id)
        if customer_id in data.unique_metric_ids:
            raise _bad_request(
                "Costs are not supported for customers whose plan includes a UNIQUE-type billable metric"
            )
        windows = self._available_windows(
            starting_on, ending_before, "day", self.now, account=account, source="costs"
        )

        def window_items(start: datetime) -> list[JsonObject]:
            return [data.costs_window(customer_id, start.date())]

        def collect(position: Position) -> Page:
            # Each window is one item, so ``limit`` (at most 100) bounds the windows of a page.
            return _collect(
                len(windows),
                position,
                page.limit,
                page.limit,
                lambda i: window_items(_window_start(windows[i], "day")),
            )

        windowed = _WindowedQuery("costs", "day", starting_on, ending_before, "start_timestamp", window_items)
        return self._page(page, collect, windowed)

    def _list_breakdowns(self, path: str, query: _Query, customer_id: str) -> _Response:
        page = _page_request(path, query, self.default_page_size)
        starting_on, ending_before = _time_range(query)
        size: WindowSize = "hour" if _choice(query, "window_size", ("day", "hour")) == "hour" else "day"
        descending = _choice(query, "sort", ("date_asc", "date_desc")) == "date_desc"
        statuses = _statuses(query)
        credit_type_id = _credit_type_id(query)
        skip_zero = _flag(query, "skip_zero_qty_line_items")
        data = self._data
        account = self._require_customer(customer_id)
        now = self.now
        windows = self._available_windows(
            starting_on, ending_before, size, now, account=account, source="invoice_breakdowns"
        )
        if credit_type_id is not None and credit_type_id not in CREDIT_TYPES_BY_ID:
            # Nothing can match, so answer at once instead of paging through empty windows.
            windows = range(0)
        windows = windows[::-1] if descending else windows

        def invoices_at(position: int) -> list[JsonObject]:
            start = _window_start(windows[position], size)
            status = invoice_status(start, now)
            if statuses and status not in statuses:
                return []
            return data.window_invoices(
                customer_id,
                start,
                size,
                status=status,
                credit_type_id=credit_type_id,
                skip_zero_qty_line_items=skip_zero,
            )

        def window_items(start: datetime) -> list[JsonObject]:
            # Unfiltered, so an out-of-range window always shows up with at least one invoice.
            return data.window_invoices(customer_id, start, size, status=invoice_status(start, now))

        # A page spans at most 35 daily (24 hourly) windows whatever ``limit`` says, as documented.
        max_windows = self.max_hour_windows_per_page if size == "hour" else self.max_day_windows_per_page

        def collect(position: Position) -> Page:
            return _collect(len(windows), position, page.limit, max_windows, invoices_at)

        other_customer_id = next(
            (other.id for other in self._accounts.ordered if other.id != customer_id), None
        )
        windowed = _WindowedQuery(
            "invoice_breakdowns",
            size,
            starting_on,
            ending_before,
            "breakdown_start_timestamp",
            window_items,
            other_customer_id,
        )
        return self._page(page, collect, windowed)

    def _require_customer(self, customer_id: str) -> Account:
        account = self._accounts.get(customer_id)
        if account is None:
            raise _ApiError(404, "Customer not found")
        return account


def _route(path: str) -> tuple[str, str]:
    """The endpoint name and the raw customer id in the path ("" for the customer list)."""
    for name, pattern in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return name, match.group(1) if match.groups() else ""
    raise _ApiError(404, "Not found")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive connections may idle forever: stop() closes them instead of waiting for them.
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], simulator: MetronomeSimulator, tls: ssl.SSLContext | None = None
    ) -> None:
        self.simulator = simulator
        self.tls = tls
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._connection_ids = itertools.count(1)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can stall for seconds.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        # Without TCP_NODELAY a small answer can wait ~40 ms for the client's delayed ACK.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            # The handshake waits for the connection's own thread (_Handler.setup): done here, in the one
            # thread that accepts, a client that never speaks would stall every other connection.
            connection = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer is routine (timeouts, dropped pools), and so is one refusing the
        # certificate or speaking plain HTTP to the TLS port: socket and TLS errors are not worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def next_connection_id(self) -> int:
        with self._lock:
            return next(self._connection_ids)

    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                # The plain socket's shutdown: SSLSocket.shutdown also drops its TLS state under the feet
                # of the thread still reading from it.
                socket.socket.shutdown(connection, socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(TLS_HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        self.connection_id = self.server.next_connection_id()
        # Named after the simulator's port, so a test can tell whether this simulator's connections are gone.
        port = self.server.server_address[1]
        threading.current_thread().name = f"{CONNECTION_THREAD_PREFIX}{port}-{self.connection_id}"

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: a line per request would flood test output and slow benchmarks."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (bad request line, unknown method) in the API's JSON error shape."""
        self.close_connection = True
        self._write(_json_response(code, {"message": message or _reason(code)}))

    def do_GET(self) -> None:
        self._discard_body()
        response = self.server.simulator._handle(
            self.command, self.path, self.headers.get("Authorization"), self.connection_id
        )
        if response.drop:
            self.close_connection = True
        else:
            self._write(response)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if (
            self.headers.get("Transfer-Encoding")
            or not _DIGITS.fullmatch(length)
            or int(length) > MAX_DISCARDED_BODY
        ):
            self.close_connection = True
        elif int(length):
            self.rfile.read(int(length))

    def _write(self, response: _Response) -> None:
        # One write per answer: separate writes for the status line, headers and body interact badly
        # with delayed ACKs and cost tens of milliseconds per request.
        lines = [
            f"HTTP/1.1 {response.status} {_reason(response.status)}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.command == "HEAD":
            self.wfile.write(head)
        elif response.seconds_per_byte > 0:
            self.wfile.write(head)
            self._trickle(response.body, response.seconds_per_byte)
        else:
            self.wfile.write(head + response.body)

    def _trickle(self, body: bytes, pause: float) -> None:
        """Send ``body`` a byte at a time, ``pause`` seconds apart, until done, the client leaves or we stop."""
        for offset in range(len(body)):
            # Waiting on the stop event rather than sleeping lets stop() end a long trickle at once.
            if self.server.stopping.wait(pause):
                self.close_connection = True
                return
            try:
                self.wfile.write(body[offset : offset + 1])
            except OSError:
                # The client hung up: the rest of the body has nowhere to go.
                self.close_connection = True
                return


class _Certificates:
    """A throw-away certificate authority and a server certificate it signed, in a private temporary directory.

    A separate CA (rather than one self-signed server certificate) keeps strict verifiers happy, such as
    Python 3.13's default ``VERIFY_X509_STRICT``.
    """

    def __init__(self, host: str) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="metronome-simulator-tls-"))
        try:
            self.ca_path = self.directory / "ca.pem"
            chain_path, key_path = self.directory / "server.pem", self.directory / "server-key.pem"
            _write_certificates(self.ca_path, chain_path, key_path, host)
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(chain_path, key_path)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _write_certificates(ca_path: Path, chain_path: Path, key_path: Path, host: str) -> None:
    """Write a new CA's certificate, a server certificate for ``host`` and localhost, and the server's key."""
    # Imported here: only TLS needs it, and it is slow to import next to the rest of the simulator.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_certificate = _ca_certificate(ca_key)
    server_certificate = _server_certificate(server_key, ca_key, ca_certificate, host)
    pem = serialization.Encoding.PEM
    ca_path.write_bytes(ca_certificate.public_bytes(pem))
    chain_path.write_bytes(server_certificate.public_bytes(pem) + ca_certificate.public_bytes(pem))
    key_path.write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _certificate_builder(subject: Any, issuer: Any, public_key: Any) -> Any:
    """A certificate builder valid from an hour ago (for clients whose clock lags) for the lifetime."""
    from cryptography import x509

    now = datetime.now(timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + TLS_CERTIFICATE_LIFETIME)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, signs_certificates: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_certificate(ca_key: Any) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME)])
    return (
        _certificate_builder(name, name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def _server_certificate(server_key: Any, ca_key: Any, ca_certificate: Any, host: str) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    return (
        _certificate_builder(subject, ca_certificate.subject, server_key.public_key())
        .add_extension(x509.SubjectAlternativeName(_subject_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _subject_names(host: str) -> list[Any]:
    """localhost and the loopback addresses, plus the host the simulator listens on when it is specific."""
    from cryptography import x509

    names: list[Any] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    if host in {"", "0.0.0.0", "::", "localhost", "127.0.0.1", "::1"}:
        return names
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    return names
