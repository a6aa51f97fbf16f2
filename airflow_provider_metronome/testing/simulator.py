"""A local fake of Metronome's HTTP API, for tests, demos and benchmarks.

It serves ``GET /v1/customers``, ``GET /v1/customers/{id}/costs`` and
``GET /v1/customers/{id}/invoices/breakdowns`` over real HTTP/1.1 keep-alive connections, with the
documented authentication, errors and cursor pagination, a settable clock, injectable faults and a log of
every request it received.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from airflow_provider_metronome.testing.data import (
    CREDIT_TYPES_BY_ID,
    EPOCH,
    WINDOW_LENGTHS,
    Dataset,
    JsonObject,
    WindowSize,
    invoice_status,
    parse_timestamp,
)

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

FaultKind = Literal["status", "drop", "slow", "malformed_json", "empty_page", "repeating_cursor"]
# These alter a successful list page, so they only fire on requests that would produce one.
_PAGE_FAULTS = frozenset({"empty_page", "repeating_cursor"})
_MALFORMED_BODY = b'{"data": [{"start_timestamp": "2024-01-01T00:00:00Z", "credit_ty'

Position = tuple[int, int]
"""Where a page starts: (index of the item or window, items of that window already returned)."""


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


@dataclass
class _FaultRule:
    fault: Fault
    path: str | None
    remaining: int | None


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False


@dataclass(frozen=True)
class _Incoming:
    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool


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


def _json_response(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _Response(status, json.dumps(payload, separators=(",", ":")).encode(), headers)


class _FaultRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_FaultRule] = []

    def add(self, fault: Fault, path: str | None, times: int | None) -> None:
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for a fault that never runs out")
        with self._lock:
            self._rules.append(_FaultRule(fault, path, times))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, path: str, *, page: bool) -> Fault | None:
        """The first active fault of the given family matching ``path``, spending one of its uses."""
        with self._lock:
            for rule in self._rules:
                if (rule.fault.kind in _PAGE_FAULTS) != page or (
                    rule.path is not None and rule.path not in path
                ):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                return rule.fault
        return None


class _RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._in_flight = 0
        self.max_in_flight = 0

    def begin(self, incoming: _Incoming, connection_id: int) -> None:
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

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self.max_in_flight = self._in_flight

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)


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


def _plain_utc(value: datetime) -> datetime:
    """A stdlib UTC datetime: subclasses such as pendulum's compare differently with the data's times."""
    utc = value.astimezone(timezone.utc)
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=timezone.utc
    )


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


def _collect(
    count: int, position: Position, limit: int, max_windows: int, items_at: Callable[[int], list[JsonObject]]
) -> tuple[list[JsonObject], Position | None]:
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

    Args:
        token: The only bearer token accepted.
        seed: Root of all generated data; the same seed gives the same ids and costs in every process.
        customers: Active customers.
        archived_customers: Archived customers, listed only with ``only_archived=true``.
        unique_metric_customers: Active customers whose ``/costs`` answers 400 (UNIQUE-type billable metric).
        port: Port to listen on; 0 picks a free one.
        host: Interface to listen on (IPv4).
        latency: Seconds every request waits before it is answered.
        availability_delay: How long after a window ends it becomes visible.
        now: A frozen clock (aware datetime); None follows the wall clock.
        line_items_per_credit_type: Line items each credit type has on a day with usage.
        default_page_size: Page size when a request gives no ``limit``.

    ``latency``, ``availability_delay``, ``now``, ``default_page_size`` and the breakdown page spans
    ``max_day_windows_per_page`` (35) and ``max_hour_windows_per_page`` (24) may be changed while running.
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
    ) -> None:
        if not 1 <= default_page_size <= MAX_LIMIT:
            raise ValueError(f"default_page_size must be between 1 and {MAX_LIMIT}")
        self.token = token
        self.host = host
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
        self._frozen_now: datetime | None = None
        self.now = now
        self._faults = _FaultRegistry()
        self._log = _RequestLog()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> MetronomeSimulator:
        """Bind and start serving in a background thread; returns self."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        server = _Server((self.host, self._requested_port), self)
        # A short poll interval keeps stop() quick; the idle cost is negligible.
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="metronome-simulator",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (idempotent)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        # Idle keep-alive connections would otherwise keep being served by their threads.
        server.close_connections()
        thread.join()

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
        """Base URL without ``/v1`` or a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        host = "127.0.0.1" if self.host in {"", "0.0.0.0"} else self.host
        return f"http://{host}:{self.port}"

    # -- clock -------------------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The simulator's current time (UTC): the frozen value if one was set, else the wall clock."""
        return self._frozen_now if self._frozen_now is not None else datetime.now(timezone.utc)

    @now.setter
    def now(self, value: datetime | None) -> None:
        if value is not None and value.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")
        self._frozen_now = None if value is None else _plain_utc(value)

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
        """Regenerate the data with ``customers`` active customers (same seed and other settings)."""
        self._data = self._dataset(customers)

    @property
    def customers(self) -> list[JsonObject]:
        """Every customer, archived ones included, in creation order (the API's listing order)."""
        return copy.deepcopy(list(self._data.customers))

    @property
    def active_customer_ids(self) -> list[str]:
        return [customer["id"] for customer in self._data.active]

    @property
    def archived_customer_ids(self) -> list[str]:
        return [customer["id"] for customer in self._data.archived]

    @property
    def unique_metric_customer_ids(self) -> list[str]:
        """Active customers whose ``/costs`` requests are refused with 400."""
        return list(self._data.unique_metric_ids)

    def costs_for(self, customer_id: str, day: date) -> JsonObject:
        """The ``/costs`` window of ``day`` (a UTC date), whether or not it is available yet.

        Also answers for UNIQUE-metric customers, whose ``/costs`` requests the API refuses.
        """
        data = self._data
        if customer_id not in data.by_id:
            raise KeyError(f"unknown customer {customer_id}")
        return copy.deepcopy(data.costs_window(customer_id, _utc(day).date()))

    def breakdowns_for(
        self, customer_id: str, window_start: date, window_end: date, *, window_size: WindowSize = "day"
    ) -> list[JsonObject]:
        """Every breakdown the API would list, over all pages, for an unfiltered ``date_asc`` query.

        ``window_start``/``window_end`` are the ``starting_on``/``ending_before`` bounds (a date means its
        midnight UTC, a naive datetime is read as UTC); windows not yet available are left out and statuses
        follow :attr:`now`, exactly as served.
        """
        data = self._data
        if customer_id not in data.by_id:
            raise KeyError(f"unknown customer {customer_id}")
        now = self.now
        breakdowns = []
        for index in self._available_windows(_utc(window_start), _utc(window_end), window_size, now):
            start = _window_start(index, window_size)
            status = invoice_status(start, now)
            breakdowns.extend(data.window_invoices(customer_id, start, window_size, status=status))
        return breakdowns

    def _available_windows(self, start: datetime, end: datetime, size: WindowSize, now: datetime) -> range:
        """Windows lying wholly inside ``[start, end)`` that ended at least ``availability_delay`` ago."""
        last = min(
            _window_index(end, size, ceil=False),
            _window_index(now - self.availability_delay, size, ceil=False),
        )
        return range(_window_index(start, size, ceil=True), last)

    # -- faults and request log --------------------------------------------------------------------------

    def inject(self, fault: Fault, path: str | None = None, times: int | None = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests (None: forever) whose path contains ``path``.

        Transport faults (status, drop, slow, malformed_json) fire before authentication and routing; page
        faults (empty_page, repeating_cursor) fire only on requests that would get a successful list page.
        """
        self._faults.add(fault, path, times)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received since the last :meth:`clear_requests`, in arrival order."""
        return self._log.snapshot()

    def requests_for(self, path_substring: str) -> list[RequestRecord]:
        return [record for record in self._log.snapshot() if path_substring in record.path]

    def clear_requests(self) -> None:
        """Forget logged requests and reset :attr:`max_in_flight`."""
        self._log.clear()

    @property
    def max_in_flight(self) -> int:
        """The most requests handled at the same time since the last :meth:`clear_requests`."""
        return self._log.max_in_flight

    # -- request handling --------------------------------------------------------------------------------

    @contextmanager
    def _track(
        self, method: str, target: str, authorization: str | None, connection_id: int
    ) -> Iterator[_Incoming]:
        """Log the request before anything is answered, and count it as in flight until the block ends."""
        split = urlsplit(target)
        scheme, _, credentials = (authorization or "").partition(" ")
        incoming = _Incoming(
            method=method,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            authorized=scheme.lower() == "bearer" and credentials.strip() == self.token,
        )
        self._log.begin(incoming, connection_id)
        try:
            yield incoming
        finally:
            self._log.end()

    def _respond(self, incoming: _Incoming) -> _Response:
        if self.latency > 0:
            time.sleep(self.latency)
        fault = self._faults.take(incoming.path, page=False)
        if fault is not None and fault.kind != "slow":
            return _transport_fault_response(fault)
        if fault is not None:
            time.sleep(fault.seconds)
        try:
            return self._dispatch(incoming)
        except _ApiError as error:
            return _json_response(error.status, {"message": error.message}, error.headers)

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

    def _page(self, page: _PageRequest, items: list[JsonObject], next_position: Position | None) -> _Response:
        next_page = None if next_position is None else _encode_cursor(next_position, page.digest)
        fault = self._faults.take(page.path, page=True)
        if fault is not None and fault.kind == "empty_page":
            items, next_page = [], _encode_cursor(page.position, page.digest, nonce=uuid.uuid4().hex)
        elif fault is not None:
            next_page = page.raw_cursor or _encode_cursor((0, 0), page.digest)
        return _json_response(200, {"data": items, "next_page": next_page})

    def _list_customers(self, path: str, query: _Query) -> _Response:
        page = _page_request(path, query, self.default_page_size)
        only_archived = _flag(query, "only_archived")
        ids = [_uuid(value, "customer_ids") for value in _filter_values(query, "customer_ids")]
        salesforce_ids = _filter_values(query, "salesforce_account_ids")
        alias = query.first("ingest_alias")
        data = self._data
        pool = data.archived if only_archived else data.active
        matches = [customer for customer in pool if _customer_matches(customer, ids, alias, salesforce_ids)]
        items, next_position = _collect(
            len(matches), page.position, page.limit, page.limit, lambda i: [matches[i]]
        )
        return self._page(page, items, next_position)

    def _list_costs(self, path: str, query: _Query, customer_id: str) -> _Response:
        page = _page_request(path, query, self.default_page_size)
        starting_on, ending_before = _time_range(query)
        data = self._data
        _require_customer(data, customer_id)
        if customer_id in data.unique_metric_ids:
            raise _bad_request(
                "Costs are not supported for customers whose plan includes a UNIQUE-type billable metric"
            )
        windows = self._available_windows(starting_on, ending_before, "day", self.now)

        def window_at(position: int) -> list[JsonObject]:
            return [data.costs_window(customer_id, _window_start(windows[position], "day").date())]

        items, next_position = _collect(len(windows), page.position, page.limit, page.limit, window_at)
        return self._page(page, items, next_position)

    def _list_breakdowns(self, path: str, query: _Query, customer_id: str) -> _Response:
        page = _page_request(path, query, self.default_page_size)
        starting_on, ending_before = _time_range(query)
        size: WindowSize = "hour" if _choice(query, "window_size", ("day", "hour")) == "hour" else "day"
        descending = _choice(query, "sort", ("date_asc", "date_desc")) == "date_desc"
        statuses = _statuses(query)
        credit_type_id = _credit_type_id(query)
        skip_zero = _flag(query, "skip_zero_qty_line_items")
        data = self._data
        _require_customer(data, customer_id)
        now = self.now
        windows = self._available_windows(starting_on, ending_before, size, now)
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

        max_windows = self.max_hour_windows_per_page if size == "hour" else self.max_day_windows_per_page
        items, next_position = _collect(len(windows), page.position, page.limit, max_windows, invoices_at)
        return self._page(page, items, next_position)


def _require_customer(data: Dataset, customer_id: str) -> None:
    if customer_id not in data.by_id:
        raise _ApiError(404, "Customer not found")


def _route(path: str) -> tuple[str, str]:
    """The endpoint name and the raw customer id in the path ("" for the customer list)."""
    for name, pattern in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return name, match.group(1) if match.groups() else ""
    raise _ApiError(404, "Not found")


def _transport_fault_response(fault: Fault) -> _Response:
    if fault.kind == "drop":
        return _Response(0, drop=True)
    if fault.kind == "malformed_json":
        return _Response(200, _MALFORMED_BODY)
    return _json_response(fault.status_code, {"message": fault.message}, fault.headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive connections may idle forever: stop() closes them instead of waiting for them.
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], simulator: MetronomeSimulator) -> None:
        self.simulator = simulator
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
        with self._lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer is routine (timeouts, dropped pools), not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def next_connection_id(self) -> int:
        with self._lock:
            return next(self._connection_ids)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection_id = self.server.next_connection_id()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: a line per request would flood test output and slow benchmarks."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (bad request line, unknown method) in the API's JSON error shape."""
        self.close_connection = True
        self._write(_json_response(code, {"message": message or _reason(code)}))

    def do_GET(self) -> None:
        simulator = self.server.simulator
        self._discard_body()
        with simulator._track(
            self.command, self.path, self.headers.get("Authorization"), self.connection_id
        ) as incoming:
            response = simulator._respond(incoming)
        # Out of flight before the answer leaves: a client that reacts at once must not be counted twice.
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
            "Content-Type: application/json",
            f"Content-Length: {len(response.body)}",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + response.body)
