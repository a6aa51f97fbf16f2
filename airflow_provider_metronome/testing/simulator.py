"""A local fake of Metronome's HTTP API, for tests, demos and benchmarks: :class:`MetronomeSimulator`.

It serves ``GET /v1/customers``, ``GET /v1/customers/{id}/costs`` and
``GET /v1/customers/{id}/invoices/breakdowns`` over real HTTP/1.1 keep-alive connections, with the
documented authentication, errors and cursor pagination, customers that are created and archived over
time (:mod:`~airflow_provider_metronome.testing.accounts`), a settable clock, withheld days, injectable
faults (on the next requests, or on a seeded random share of them), an optional per-token rate limit,
optional TLS, a log of every request it received, and a control endpoint under ``/_simulator/`` that
steers it while it runs (:mod:`~airflow_provider_metronome.testing.control`).

This module is the facade: the parts live in :mod:`.routes` (the endpoints), :mod:`.faults`,
:mod:`.rate_limit`, :mod:`.availability` (clock and withheld days), :mod:`.request_log`,
:mod:`.server` and :mod:`.tls`; the names they make public are re-exported here.
"""

from __future__ import annotations

import copy
import enum
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta
from types import TracebackType

from airflow_provider_metronome.testing import control
from airflow_provider_metronome.testing.accounts import (
    Account,
    Accounts,
    BilledSource,
    CustomerSpec,
    added_account,
    generated_account,
    lifecycle_specs,
)
from airflow_provider_metronome.testing.availability import Availability, WithheldDays
from airflow_provider_metronome.testing.data import (
    Dataset,
    JsonObject,
    WindowSize,
    invoice_status,
    utc,
)
from airflow_provider_metronome.testing.data import window_start as start_of_window
from airflow_provider_metronome.testing.faults import (
    GATEWAY_TIMEOUT_MILLIS,
    HOLD_FAULTS,
    OUT_OF_RANGE_DAY,
    REDIRECT_HOST,
    TRANSPORT_FAULTS,
    Fault,
    FaultKind,
    FaultRegistry,
    GatewayTimeout,
    InjectedFault,
    transport_response,
)
from airflow_provider_metronome.testing.messages import (
    DEFAULT_TOKEN,
    ApiError,
    Incoming,
    Request,
    Response,
    json_response,
)
from airflow_provider_metronome.testing.rate_limit import (
    EVERY_CUSTOMER,
    LIMIT_TYPE_HEADER,
    LimitType,
    RateLimit,
    RateLimiter,
    RetryAfter,
)
from airflow_provider_metronome.testing.request_log import (
    BODY_PATHS_KEPT,
    BodyLog,
    RequestCounts,
    RequestLog,
    RequestRecord,
)
from airflow_provider_metronome.testing.routes import (
    MAX_DAY_WINDOWS_PER_PAGE,
    MAX_FILTER_VALUES,
    MAX_HOUR_WINDOWS_PER_PAGE,
    MAX_LIMIT,
    PATH_KINDS,
    Collector,
    Context,
    Page,
    Position,
    answer,
    path_customer,
    path_kind,
)
from airflow_provider_metronome.testing.server import (
    CONNECTION_THREAD_PREFIX,
    MAX_DISCARDED_BODY,
    TLS_HANDSHAKE_TIMEOUT,
    Server,
)
from airflow_provider_metronome.testing.tls import TLS_CERTIFICATE_LIFETIME, Certificates

__all__ = [
    "BODY_PATHS_KEPT",
    "CONNECTION_THREAD_PREFIX",
    "DEFAULT_TOKEN",
    "EVERY_CUSTOMER",
    "GATEWAY_TIMEOUT_MILLIS",
    "LIMIT_TYPE_HEADER",
    "MAX_DAY_WINDOWS_PER_PAGE",
    "MAX_DISCARDED_BODY",
    "MAX_FILTER_VALUES",
    "MAX_HOUR_WINDOWS_PER_PAGE",
    "MAX_LIMIT",
    "OUT_OF_RANGE_DAY",
    "REDIRECT_HOST",
    "TLS_CERTIFICATE_LIFETIME",
    "TLS_HANDSHAKE_TIMEOUT",
    "Collector",
    "Fault",
    "FaultKind",
    "GatewayTimeout",
    "InjectedFault",
    "LimitType",
    "MetronomeSimulator",
    "Page",
    "Position",
    "RateLimit",
    "RequestCounts",
    "RequestRecord",
    "RetryAfter",
    "WithheldDays",
]


class _Unset(enum.Enum):
    """The default of :meth:`MetronomeSimulator.inject`'s ``times``, which depends on ``probability``."""

    UNSET = enum.auto()


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
        rate_limit: The organisation's limit, a token bucket per API token and endpoint; None (the
            default) serves everything.
        customer_rate_limits: Each customer's own limit by customer id (:data:`EVERY_CUSTOMER` for
            every customer without one), a token bucket per API token and customer; default none.
        tls: Serve HTTPS with a certificate made at :meth:`start`; trust :attr:`certificate_path`.
        gateway_timeout: The breakdowns endpoint's gateway timeout, a cost model of the days and line
            items one request asks for (:class:`GatewayTimeout`); None (the default) answers every request.

    ``latency``, ``availability_delay``, ``now``, ``default_page_size``, ``rate_limit``,
    ``gateway_timeout`` and the breakdown
    page spans ``max_day_windows_per_page`` (35) and ``max_hour_windows_per_page`` (24) may be changed,
    and customers added, while running; the control endpoint (``/_simulator/``, same token) does the
    same from another process.
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
        customer_rate_limits: Mapping[str, RateLimit] | None = None,
        tls: bool = False,
        gateway_timeout: GatewayTimeout | None = None,
    ) -> None:
        if not 1 <= default_page_size <= MAX_LIMIT:
            raise ValueError(f"default_page_size must be between 1 and {MAX_LIMIT}")
        self.token = token
        self.extra_tokens = frozenset(extra_tokens)
        self.host = host
        self.tls = tls
        self.latency = latency
        self.gateway_timeout = gateway_timeout
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
        self._availability = Availability(availability_delay, now)
        self._faults = FaultRegistry()
        self._log = RequestLog()
        self._bodies = BodyLog()
        self._limiter = RateLimiter(rate_limit, customer_limits=customer_rate_limits)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._certificates: Certificates | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> MetronomeSimulator:
        """Bind and start serving in a background thread; returns self."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        certificates = Certificates(self.host) if self.tls else None
        try:
            server = Server(
                (self.host, self._requested_port),
                self._handle,
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
        return f"{self._scheme}://{host}:{self.port}"

    @property
    def _scheme(self) -> str:
        return "https" if self._certificates is not None else "http"

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

    @property
    def accepted_tokens(self) -> frozenset[str]:
        """The bearer tokens accepted, by ``/v1`` and the control endpoint alike."""
        return self.extra_tokens | {self.token}

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
    def customer_rate_limits(self) -> dict[str, RateLimit]:
        """The customers' own limits by customer id (:data:`EVERY_CUSTOMER`: every customer without one)."""
        return self._limiter.customer_limits

    def set_customer_rate_limit(self, customer_id: str, limit: RateLimit | None) -> None:
        """Limit ``customer_id`` (or :data:`EVERY_CUSTOMER`) to ``limit`` from now on; None removes its limit.

        Its 429s carry ``X-Metronome-Rate-Limit-Type: customer``; its buckets change as the
        organisation's do when :attr:`rate_limit` is set.
        """
        self._limiter.configure_customer(customer_id, limit)

    @property
    def throttled_count(self) -> int:
        """Requests the rate limit refused since the last :meth:`clear_requests`."""
        return self._log.throttled_count

    # -- clock -------------------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The simulator's current time (UTC): the frozen value if one was set, else the wall clock."""
        return self._availability.now

    @now.setter
    def now(self, value: datetime | None) -> None:
        self._availability.now = value

    @property
    def availability_delay(self) -> timedelta:
        """How long after a window ends it becomes visible."""
        return self._availability.delay

    @availability_delay.setter
    def availability_delay(self, value: timedelta) -> None:
        self._availability.delay = value

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

    def _insert_first(self, spec: CustomerSpec) -> Account:
        return self._add(spec, sorts_first=True)

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
        return self._account(customer_id).billed_days(source, utc(start).date(), utc(end).date())

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

    # -- withheld days -----------------------------------------------------------------------------------

    def withhold(self, customer_id: str, days: Iterable[date]) -> None:
        """Leave ``days`` (UTC dates) out of one customer's costs and breakdowns, as if not yet available.

        Adds to the days already withheld; other customers, and the clock's :attr:`availability_delay`,
        are unaffected. :meth:`costs_for` still answers for these days; :meth:`breakdowns_for` leaves
        them out, as served. One customer alone lacking a day reads as a day with nothing billed for it;
        :meth:`withhold_all` makes a day late for the whole account.
        """
        self._availability.withhold(days, self._account(customer_id).id)

    def withhold_all(self, days: Iterable[date]) -> None:
        """Leave ``days`` (UTC dates) out of every customer's costs and breakdowns: not produced yet.

        Applies to customers added later too, until :meth:`release` or :meth:`clear_withheld`.
        """
        self._availability.withhold(days, None)

    def release(self, days: Iterable[date], customer_id: str | None = None) -> None:
        """Serve ``days`` again: to every customer (None), whichever way they were withheld, or to one.

        Raises KeyError for an unknown customer, and ValueError when ``customer_id`` is given for a day
        withheld from every customer (:meth:`withhold_all`): release that one for everyone.
        """
        self._availability.release(days, None if customer_id is None else self._account(customer_id).id)

    def clear_withheld(self, customer_id: str | None = None) -> None:
        """Serve again the days withheld from ``customer_id`` alone, or (None) every withheld day."""
        self._availability.clear(None if customer_id is None else customer_id.lower())

    @property
    def withheld_days(self) -> WithheldDays:
        """The days withheld now: from every customer, and from single customers."""
        return self._availability.withheld()

    def costs_for(self, customer_id: str, day: date) -> JsonObject | None:
        """The ``/costs`` window of ``day`` (a UTC date), whether or not it is available yet.

        None when the customer has no window that day (see :meth:`billed_days`). Also answers for
        UNIQUE-metric customers, whose ``/costs`` requests the API refuses.
        """
        account, day = self._account(customer_id), utc(day).date()
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
        windows = self._availability.windows(
            utc(window_start),
            utc(window_end),
            window_size,
            now,
            account=account,
            source="invoice_breakdowns",
        )
        for index in windows:
            start = start_of_window(index, window_size)
            status = invoice_status(start, now)
            breakdowns.extend(data.window_invoices(account.id, start, window_size, status=status))
        return breakdowns

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
        - ``hold_page`` fires only on follow-up list pages (a request with ``next_page``): it holds the
          answer back until the request it waits for arrives.

        A fault waiting for its kind of request lets every other request pass untouched, and draws
        nothing for it. Faults are tried in the order injected: one that does not fire (or waits)
        lets the next have the request. Requests to the control endpoint never get a fault.
        """
        if isinstance(times, _Unset):
            times = 1 if probability is None else None
        self._faults.add(fault, path, times, probability, seed)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[InjectedFault]:
        """The faults injected and not spent yet, in the order they are tried."""
        return self._faults.active()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received since the last :meth:`clear_requests`, in arrival order."""
        return self._log.snapshot()

    def requests_for(self, path_substring: str) -> list[RequestRecord]:
        return [record for record in self._log.snapshot() if path_substring in record.path]

    @property
    def request_counts(self) -> RequestCounts:
        """How many requests arrived since the last :meth:`clear_requests`: in all, per endpoint, per status."""
        return RequestCounts.of(self._log.snapshot(), path_kind, PATH_KINDS)

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

    def _handle(self, request: Request) -> Response:
        """Answer a request: through the control endpoint, or as the API would.

        An API request is logged before anything is answered, and counted in flight until its answer is
        made. The answer is out of flight before it leaves: a client that reacts at once must not be
        counted twice. Control requests are not logged, throttled, delayed or faulted: the simulator must
        stay steerable whatever it was told to do to the API.
        """
        if control.is_control(request.target):
            return control.handle(self, request)
        incoming = Incoming.parse(request, self.accepted_tokens)
        slot = self._log.begin(incoming, request.connection_id)
        response: Response | None = None
        fault: FaultKind | None = None
        try:
            response, fault = self._respond(incoming)
            if response.status == 200 and not response.drop:
                self._bodies.record(incoming.path, response.body)
        finally:
            self._log.end(slot, response, fault)
        return response

    def _respond(self, incoming: Incoming) -> tuple[Response, FaultKind | None]:
        """The answer, and the transport fault that made or shaped it, if any."""
        # The budget comes first, as at an API gateway; requests with an unknown token never spend it.
        if incoming.token is not None:
            refusal = self._limiter.admit(
                incoming.token, path_kind(incoming.path), path_customer(incoming.path)
            )
            if refusal is not None:
                return json_response(
                    429, {"message": "Too Many Requests"}, refusal.headers, throttled=True
                ), None
        if self.latency > 0:
            time.sleep(self.latency)
        fault = self._faults.take(incoming.path, TRANSPORT_FAULTS)
        if fault is not None and fault.kind not in {"slow", "trickle"}:
            origin = f"{self._scheme}://{REDIRECT_HOST}:{self.port}"
            return transport_response(fault, incoming.target, origin), fault.kind
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.seconds)
        held = self._faults.apply(
            incoming.path, HOLD_FAULTS, lambda hold: hold if incoming.query.get("next_page") else None
        )
        if held is not None:
            self._log.wait_for(held.awaited, held.seconds)
        try:
            # Built only now, so a request reads the data and settings of when it is answered.
            response = answer(self._context(), incoming)
        except ApiError as error:
            response = error.response()
        if fault is None:
            return response, None
        if fault.kind == "trickle":
            response = replace(response, seconds_per_byte=fault.seconds)
        return response, fault.kind

    def _context(self) -> Context:
        return Context(
            data=self._data,
            accounts=self._accounts,
            availability=self._availability,
            faults=self._faults,
            default_page_size=self.default_page_size,
            max_day_windows_per_page=self.max_day_windows_per_page,
            max_hour_windows_per_page=self.max_hour_windows_per_page,
            insert_customer=self._insert_first,
            gateway_timeout=self.gateway_timeout,
        )
