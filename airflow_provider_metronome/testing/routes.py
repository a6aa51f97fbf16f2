"""The ``/v1`` endpoints: customers, costs and invoice breakdowns, paged with opaque cursors.

Each request is answered from a :class:`Context`, the simulator's data and settings as the request
reaches its endpoint; page and window faults waiting in the context's registry alter the page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from airflow_provider_metronome.testing.accounts import Account, Accounts, CustomerSpec
from airflow_provider_metronome.testing.availability import Availability
from airflow_provider_metronome.testing.data import (
    CREDIT_TYPES_BY_ID,
    Dataset,
    JsonObject,
    WindowSize,
    invoice_status,
    parse_timestamp,
    window_start,
)
from airflow_provider_metronome.testing.faults import (
    CUSTOMER_PAGE_FAULTS,
    LIST_PAGE_FAULTS,
    WINDOW_PAGE_FAULTS,
    Fault,
    FaultRegistry,
    GatewayTimeout,
    WindowedQuery,
)
from airflow_provider_metronome.testing.messages import DIGITS, ApiError, Incoming, Response, json_response

MAX_LIMIT = 100
MAX_FILTER_VALUES = 100
# The SDK documents that one breakdowns page covers at most 35 days of daily or 24 hourly windows.
MAX_DAY_WINDOWS_PER_PAGE = 35
MAX_HOUR_WINDOWS_PER_PAGE = 24

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("customers", re.compile(r"/v1/customers")),
    ("costs", re.compile(r"/v1/customers/([^/]+)/costs")),
    ("breakdowns", re.compile(r"/v1/customers/([^/]+)/invoices/breakdowns")),
)
PATH_KINDS = (*(name for name, _ in _ROUTES), "other")
"""What :func:`path_kind` calls a path: one of the endpoints, or ``other``."""
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_STATUSES = frozenset({"DRAFT", "FINALIZED"})

Position = tuple[int, int]
"""Where a page starts: (index of the item or window, items of that window already returned)."""


@dataclass(frozen=True)
class Context:
    """What a request is answered from: the simulator's data and settings when it reaches its endpoint."""

    data: Dataset
    accounts: Accounts
    availability: Availability
    faults: FaultRegistry
    default_page_size: int
    max_day_windows_per_page: int
    max_hour_windows_per_page: int
    insert_customer: Callable[[CustomerSpec], Account]
    """Adds a customer that lists before the others created with it (for Fault.insert_customer)."""
    gateway_timeout: GatewayTimeout | None = None
    """The breakdowns endpoint's gateway timeout (None: every request is answered)."""


@dataclass(frozen=True)
class _PageRequest:
    path: str
    digest: str
    limit: int
    position: Position
    raw_cursor: str | None


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


def _bad_request(message: str) -> ApiError:
    return ApiError(400, message)


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
        if not DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
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


def _customer_matches(
    customer: JsonObject, ids: list[str], alias: str | None, salesforce_ids: list[str]
) -> bool:
    return (
        (not ids or customer["id"] in ids)
        and (alias is None or alias in customer["ingest_aliases"])
        and (not salesforce_ids or customer["customer_config"]["salesforce_account_id"] in salesforce_ids)
    )


def _match(path: str) -> tuple[str, str] | None:
    """The endpoint name and the raw customer id in the path ("" for the customer list); None: no endpoint."""
    for name, pattern in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            return name, match.group(1) if match.groups() else ""
    return None


def path_kind(path: str) -> str:
    """The endpoint ``path`` names (``customers``, ``costs`` or ``breakdowns``), else ``other``."""
    matched = _match(path)
    return "other" if matched is None else matched[0]


def path_customer(path: str) -> str | None:
    """The customer a per-customer endpoint's ``path`` names, lowercased; None for any other path."""
    matched = _match(path)
    return matched[1].lower() if matched is not None and matched[1] else None


def answer(context: Context, incoming: Incoming) -> Response:
    """The endpoint's answer to ``incoming``; raises ApiError when it refuses the request."""
    if not incoming.authorized:
        raise ApiError(401, "Unauthorized")
    matched = _match(incoming.path)
    if matched is None:
        raise ApiError(404, "Not found")
    endpoint, customer_id = matched
    if incoming.method != "GET":
        raise ApiError(
            405, f"Method {incoming.method} is not allowed on {incoming.path}", (("Allow", "GET"),)
        )
    query = _Query(incoming.query)
    if endpoint == "customers":
        return _list_customers(context, incoming.path, query)
    customer_id = _uuid(customer_id, "customer_id")
    if endpoint == "costs":
        return _list_costs(context, incoming.path, query, customer_id)
    return _list_breakdowns(context, incoming.path, query, customer_id)


def _page(
    context: Context, page: _PageRequest, collect: Collector, windowed: WindowedQuery | None = None
) -> Response:
    """The page ``page`` asks for, as altered by a page fault if one is pending.

    Window faults are only taken for a page with data: they have nothing to spoil on an empty one.
    """
    fault = context.faults.take(page.path, LIST_PAGE_FAULTS)
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
        spoiled = context.faults.apply(
            page.path, WINDOW_PAGE_FAULTS, lambda spoiler: windowed.spoil(spoiler, shown)
        )
        items = shown if spoiled is None else spoiled
    return json_response(200, {"data": items, "next_page": next_page})


def _list_customers(context: Context, path: str, query: _Query) -> Response:
    page = _page_request(path, query, context.default_page_size)
    only_archived = _flag(query, "only_archived")
    ids = [_uuid(value, "customer_ids") for value in _filter_values(query, "customer_ids")]
    salesforce_ids = _filter_values(query, "salesforce_account_ids")
    alias = query.first("ingest_alias")
    now = context.availability.now

    def listing() -> list[JsonObject]:
        listed = (
            account
            for account in context.accounts.ordered
            if account.listed(now, only_archived=only_archived)
        )
        customers = (account.as_listed(now) for account in listed)
        return [customer for customer in customers if _customer_matches(customer, ids, alias, salesforce_ids)]

    def fits(fault: Fault) -> Fault | None:
        # Only a page that follows another has customers already listed to replay or shift.
        if page.position[0] == 0 or (fault.kind == "insert_customer" and only_archived):
            return None
        return fault

    fault = context.faults.apply(path, CUSTOMER_PAGE_FAULTS, fits)
    matches = listing()
    if fault is not None and fault.kind == "insert_customer":
        created_at = parse_timestamp(matches[0]["created_at"]) if matches else now
        context.insert_customer(CustomerSpec(created_at))
        matches = listing()

    def collect(position: Position) -> Page:
        return _collect(len(matches), position, page.limit, page.limit, lambda i: [matches[i]])

    if fault is None:
        return _page(context, page, collect)
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
    return json_response(200, {"data": items, "next_page": next_page})


def _list_costs(context: Context, path: str, query: _Query, customer_id: str) -> Response:
    page = _page_request(path, query, context.default_page_size)
    starting_on, ending_before = _time_range(query)
    data = context.data
    account = _require_customer(context, customer_id)
    if customer_id in data.unique_metric_ids:
        raise _bad_request(
            "Costs are not supported for customers whose plan includes a UNIQUE-type billable metric"
        )
    windows = context.availability.windows(
        starting_on, ending_before, "day", context.availability.now, account=account, source="costs"
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
            lambda i: window_items(window_start(windows[i], "day")),
        )

    windowed = WindowedQuery("costs", "day", starting_on, ending_before, "start_timestamp", window_items)
    return _page(context, page, collect, windowed)


def _list_breakdowns(context: Context, path: str, query: _Query, customer_id: str) -> Response:
    page = _page_request(path, query, context.default_page_size)
    starting_on, ending_before = _time_range(query)
    size: WindowSize = "hour" if _choice(query, "window_size", ("day", "hour")) == "hour" else "day"
    descending = _choice(query, "sort", ("date_asc", "date_desc")) == "date_desc"
    statuses = _statuses(query)
    credit_type_id = _credit_type_id(query)
    skip_zero = _flag(query, "skip_zero_qty_line_items")
    data = context.data
    account = _require_customer(context, customer_id)
    now = context.availability.now
    windows = context.availability.windows(
        starting_on, ending_before, size, now, account=account, source="invoice_breakdowns"
    )
    if credit_type_id is not None and credit_type_id not in CREDIT_TYPES_BY_ID:
        # Nothing can match, so answer at once instead of paging through empty windows.
        windows = range(0)
    windows = windows[::-1] if descending else windows

    def invoices_at(position: int) -> list[JsonObject]:
        start = window_start(windows[position], size)
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

    gateway = context.gateway_timeout
    if gateway is not None and gateway.times_out(invoices_at(index) for index in range(len(windows))):
        time.sleep(gateway.seconds)
        return gateway.response()

    # A page spans at most 35 daily (24 hourly) windows whatever ``limit`` says, as documented.
    max_windows = context.max_hour_windows_per_page if size == "hour" else context.max_day_windows_per_page

    def collect(position: Position) -> Page:
        return _collect(len(windows), position, page.limit, max_windows, invoices_at)

    other_customer_id = next(
        (other.id for other in context.accounts.ordered if other.id != customer_id), None
    )
    windowed = WindowedQuery(
        "invoice_breakdowns",
        size,
        starting_on,
        ending_before,
        "breakdown_start_timestamp",
        window_items,
        other_customer_id,
    )
    return _page(context, page, collect, windowed)


def _require_customer(context: Context, customer_id: str) -> Account:
    account = context.accounts.get(customer_id)
    if account is None:
        raise ApiError(404, "Customer not found")
    return account
