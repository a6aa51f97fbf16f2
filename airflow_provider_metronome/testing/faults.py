"""Faults: the misbehaviours :meth:`MetronomeSimulator.inject` can make, and the registry that spends them.

Transport faults answer in place of the API (or shape its answer); page and window faults alter a page
the API was about to send (:class:`WindowedQuery` spoils a costs or breakdowns page).
"""

from __future__ import annotations

import copy
import math
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, TypeVar, get_args

from airflow_provider_metronome.testing import values as value_faults
from airflow_provider_metronome.testing.accounts import BilledSource
from airflow_provider_metronome.testing.data import (
    CREDIT_TYPES,
    WINDOW_LENGTHS,
    JsonObject,
    WindowSize,
    utc,
    window_index,
    window_start,
)
from airflow_provider_metronome.testing.messages import Response, json_response, reason
from airflow_provider_metronome.testing.values import WrongType

# Where Fault.out_of_range_window puts its window unless told otherwise: far from any realistic request.
OUT_OF_RANGE_DAY = date(2019, 1, 1)
# Fault.redirect sends clients here: same port, another loopback address, so a different host.
REDIRECT_HOST = "127.0.0.2"
# What Metronome's OpenAPI documents for the breakdowns endpoint's gateway.
GATEWAY_TIMEOUT_MILLIS = 59_000

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
    "hold_page",
]
# These alter a successful list page, so they only fire on requests that would produce one.
LIST_PAGE_FAULTS: frozenset[FaultKind] = frozenset({"empty_page", "repeating_cursor", "endless_cursor"})
# These replay or shift customers already listed, so they only fire on customer pages that follow another.
CUSTOMER_PAGE_FAULTS: frozenset[FaultKind] = frozenset(
    {"repeat_customers", "insert_customer", "seen_customers_page"}
)
# These alter a page's day (or hour) windows, so they only fire on successful costs and breakdowns pages.
WINDOW_PAGE_FAULTS: frozenset[FaultKind] = frozenset(
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
# This one holds a follow-up page (a request with a cursor) back, then lets it be answered as usual.
HOLD_FAULTS: frozenset[FaultKind] = frozenset({"hold_page"})
_PAGE_FAULTS = LIST_PAGE_FAULTS | CUSTOMER_PAGE_FAULTS | WINDOW_PAGE_FAULTS | HOLD_FAULTS
# The rest fire before authentication and routing, as a proxy or a network would.
TRANSPORT_FAULTS: frozenset[FaultKind] = frozenset(get_args(FaultKind)) - _PAGE_FAULTS
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

_T = TypeVar("_T")


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
    awaited: str = ""
    """The path substring of the request ``hold_page`` waits for."""

    @classmethod
    def status(cls, code: int, headers: Mapping[str, str] | None = None, message: str | None = None) -> Fault:
        """Answer ``code`` with ``{"message": message}`` (default: the status phrase) and extra ``headers``."""
        if not 100 <= code <= 599:
            raise ValueError(f"not an HTTP status code: {code}")
        text = reason(code) if message is None else message
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
        return cls("redirect", status_code=status, headers=headers, message=reason(status))

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
        ``unit_price`` (breakdowns), is written as the next of ``texts`` (cycling), e.g.
        ``"12.345678901234567890123"``,
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

    @classmethod
    def hold_page(cls, until: str, seconds: float = 10.0) -> Fault:
        """Hold back a follow-up list page until a request whose path contains ``until`` arrives.

        Waits for a request with a ``next_page`` cursor (the first page passes untouched), keeps its
        answer until such a request has arrived (at once if one did already) or ``seconds`` have passed,
        then answers it as usual. The request log then shows whether the client sent the awaited request
        while the page was held (:attr:`RequestRecord.arrived_before_answer`).
        """
        if not until:
            raise ValueError("until must name the path of the request to wait for")
        if not 0 < seconds < math.inf:
            raise ValueError("seconds must be positive and finite")
        return cls("hold_page", seconds=seconds, awaited=until)


@dataclass(frozen=True)
class GatewayTimeout:
    """The breakdowns endpoint's gateway timeout, as a cost model: too much work for one request is a 504.

    Metronome's gateway gives up on a breakdowns request after 59 s (``x-gateway-timeout-millis:
    59000``); how long a request takes grows with the days and the invoices it asks for. Here a request
    whose range holds more than ``max_line_items`` line items, over every invoice of every window of
    its ``[starting_on, ending_before)`` (each of its pages alike: the range is computed whole), waits
    ``seconds`` and answers 504 with that header. A client whose read timeout is shorter than
    ``seconds`` sees a timeout instead.

    :param max_line_items: The most line items one request may cover and still be answered.
    :param seconds: How long the gateway waits before its 504.
    """

    max_line_items: int
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.max_line_items < 0:
            raise ValueError(f"max_line_items must be at least 0, got {self.max_line_items}")
        if not 0 <= self.seconds < math.inf:
            raise ValueError(f"seconds must be 0 or more and finite, got {self.seconds}")

    def times_out(self, invoices: Iterable[list[JsonObject]]) -> bool:
        """Whether a request over windows holding ``invoices`` (one list per window) takes too long."""
        covered = 0
        for window in invoices:
            covered += sum(len(invoice.get("line_items", ())) for invoice in window)
            if covered > self.max_line_items:
                return True
        return False

    def response(self) -> Response:
        """The gateway's answer, after its wait."""
        return json_response(
            504,
            {"message": "Gateway Timeout: the request took longer than the gateway allows"},
            (("x-gateway-timeout-millis", str(GATEWAY_TIMEOUT_MILLIS)),),
        )


def transport_response(fault: Fault, target: str, redirect_origin: str) -> Response:
    """What a transport fault answers in place of the API (any but ``slow`` and ``trickle``).

    ``redirect_origin`` (scheme, :data:`REDIRECT_HOST` and port) is where a redirect without its own
    location sends the request ``target``.
    """
    if fault.kind == "drop":
        return Response(0, drop=True)
    if fault.kind == "malformed_json":
        return Response(200, _MALFORMED_BODY)
    if fault.kind == "bad_encoding":
        return Response(200, _NOT_GZIP_BODY, fault.headers)
    if fault.kind == "html_body":
        return Response(200, _MAINTENANCE_PAGE, content_type=_HTML_CONTENT_TYPE)
    if fault.kind == "empty_body":
        return Response(200)
    headers = fault.headers
    if fault.kind == "redirect" and not headers:
        headers = (("Location", f"{redirect_origin}{target}"),)
    return json_response(fault.status_code, {"message": fault.message}, headers)


@dataclass(frozen=True)
class InjectedFault:
    """A fault waiting in the simulator, as :attr:`MetronomeSimulator.faults` reports it."""

    fault: Fault
    path: str | None
    """The path substring it waits for (None: any path)."""
    remaining: int | None
    """Answers it has left to alter (None: until cleared)."""
    probability: float | None = None
    seed: int = 0


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


class FaultRegistry:
    """The faults injected and not spent yet, in the order injected; safe to share between threads."""

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

    def active(self) -> list[InjectedFault]:
        with self._lock:
            return [
                InjectedFault(rule.fault, rule.path, rule.remaining, rule.probability, rule.seed)
                for rule in self._rules
            ]

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


@dataclass(frozen=True)
class WindowedQuery:
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
            return utc(day)
        start = utc(OUT_OF_RANGE_DAY)
        if self.starting_on <= start and start + WINDOW_LENGTHS[self.size] <= self.ending_before:
            start = window_start(window_index(self.starting_on, self.size, ceil=True) - 1, self.size)
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
