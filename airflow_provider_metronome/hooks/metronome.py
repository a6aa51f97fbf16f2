"""MetronomeHook: authenticated, pooled, retried and paginated access to Metronome's API."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import requests
from pydantic import ValidationError

from airflow_provider_metronome._compat import BaseHook, mask_secret
from airflow_provider_metronome.connection_form import CONNECTION_EXTRAS, connection_type, extra_default
from airflow_provider_metronome.customers import WindowCustomers, WindowListing
from airflow_provider_metronome.exceptions import (
    MetronomeAPIError,
    MetronomeGatewayTimeoutError,
    MetronomeRateLimitError,
    MetronomeResponseError,
    MetronomeTransientError,
    error_for_status,
)
from airflow_provider_metronome.hooks.rate import (
    RateController,
    RateSnapshot,
    account_controller,
)
from airflow_provider_metronome.hooks.retry import (
    GATEWAY_TIMEOUT_STATUS,
    RetryPolicy,
    Verdict,
    customer_limited,
    retries_timeouts,
)
from airflow_provider_metronome.hooks.transport import AttemptFailed, QueryValue, new_session, send
from airflow_provider_metronome.models import (
    BrokenJsonError,
    CostWindow,
    Customer,
    InvoiceBreakdown,
    MetronomeModel,
    Page,
    parse_json,
)
from airflow_provider_metronome.validation import (
    check_customer_id,
    check_page_size,
    check_source,
    check_task_rate_cap,
)
from airflow_provider_metronome.vocabulary import MAX_PAGE_SIZE, Source
from airflow_provider_metronome.window import DayWindow, TimestampLike, check_range, format_timestamp

DEFAULT_BASE_URL = "https://api.metronome.com"
# A cursor chain of empty pages this long is a server bug, not data: stop instead of looping.
MAX_CONSECUTIVE_EMPTY_PAGES = 50
# No real answer reaches these page counts; a cursor that goes on past them never ends.
MAX_LIST_PAGES = 100_000  # ten million customers
MAX_INVOICES_PER_WINDOW = 100
# How often a long listing says how far it got, in seconds.
LISTING_REPORT_INTERVAL = 30.0  # one per contract and credit type
BREAKDOWN_WINDOWS_PER_PAGE = {"day": 35, "hour": 24}

ModelT = TypeVar("ModelT", bound=MetronomeModel)


@dataclass(frozen=True)
class MetronomeSettings:
    """What the hook reads from the Airflow connection (the token is kept out of ``repr``)."""

    base_url: str
    token: str = field(repr=False)
    # The defaults are the connection form's (CONNECTION_EXTRAS), their one home.
    timeout: float = extra_default("timeout")
    connect_timeout: float = extra_default("connect_timeout")
    max_retries: int = int(extra_default("max_retries"))
    max_retry_wait: float = extra_default("max_retry_wait")
    pool_size: int = int(extra_default("pool_size"))
    requests_per_second: float | None = None
    rate_limit_timeout: float = extra_default("rate_limit_timeout")

    def __post_init__(self) -> None:
        # Integer extras arrive as floats from JSON or the form; the pool and the retry loop want ints.
        object.__setattr__(self, "max_retries", int(self.max_retries))
        object.__setattr__(self, "pool_size", int(self.pool_size))


def normalize_base_url(host: str | None, port: int | None = None, *, conn_id: str = "") -> str:
    """``api.metronome.com``, ``https://api.metronome.com/`` and ``.../v1`` all mean the same API root."""
    raw = (host or "").strip() or DEFAULT_BASE_URL
    if "://" not in raw:
        raw = f"https://{raw}"
    where = f"The Airflow connection {conn_id!r} has host" if conn_id else "The connection has host"
    try:
        parts = urlsplit(raw)
        explicit_port = parts.port
    except ValueError as err:  # a port that is not a number, a malformed IPv6 address
        raise ValueError(
            f"{where} {host!r}, which is not a valid URL ({err}); use e.g. {DEFAULT_BASE_URL}."
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where} {host!r}, which is not an http(s) URL; use e.g. {DEFAULT_BASE_URL}.")
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"{where} port {port!r}, which is not a TCP port (1 to 65535).")
    # Port 0 is what a form sends for a hidden, empty port field: no port.
    netloc = parts.netloc if explicit_port or not port else f"{parts.netloc}:{port}"
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{netloc}{path}"


@dataclass
class RequestStats:
    """What one hook sent: every attempt, and how many of them the account's rate limit turned away."""

    sent: int = 0
    throttled: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        """Requests sent per second since the hook was made."""
        return self.sent / max(time.monotonic() - self.started, 1e-9)


class MetronomeHook(BaseHook):
    """Talk to Metronome's API through an Airflow connection of type ``metronome``.

    The connection's host is the API base URL (default ``https://api.metronome.com``, with or
    without scheme or a trailing ``/v1``) and its password is the API token. Optional extras:
    ``timeout`` (the most one request may take, connecting and reading the whole answer; default
    60), ``connect_timeout`` (default 5),
    ``max_retries`` (retries of failures, not of 429s; default 2), ``max_retry_wait`` (longest
    ``Retry-After`` honoured, default 60), ``pool_size`` (keep-alive connections for concurrent
    calls, default 32), ``requests_per_second`` (the account's known rate budget, shared by every
    task of the connection in a process; default: discover it) and ``rate_limit_timeout`` (seconds
    of nothing but 429s after which a request fails; default 300).

    Naive datetimes passed to any method are read as UTC.

    :param metronome_conn_id: The Airflow connection to use.
    :param task_requests_per_second: Optional cap on this hook's own requests (all threads together,
        retries included), below the account's budget (the connection's ``requests_per_second``).
    :param requests_per_second: Deprecated name of ``task_requests_per_second``.
    """

    conn_name_attr = "metronome_conn_id"
    default_conn_name = "metronome_default"
    conn_type = "metronome"
    hook_name = "Metronome"

    def __init__(
        self,
        metronome_conn_id: str = default_conn_name,
        *,
        task_requests_per_second: float | None = None,
        requests_per_second: float | None = None,
    ) -> None:
        super().__init__()
        self.metronome_conn_id = metronome_conn_id
        cap = check_task_rate_cap(task_requests_per_second, requests_per_second)
        self._task_cap = RateController(cap, adaptive=False) if cap is not None else None
        self.stats = RequestStats()
        self._stats_lock = threading.Lock()
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        # True while test_connection runs: its messages name the connection by host (see there).
        self._named_by_host = False

    # Connection form on Airflow 2 (Airflow 3 reads the same definition from get_provider_info()).
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        behaviour = connection_type()["ui-field-behaviour"]
        return {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField

        return {
            name: StringField(
                lazy_gettext(spec["label"]), widget=BS3TextFieldWidget(), description=spec["description"]
            )
            for name, spec in connection_type()["conn-fields"].items()
        }

    @cached_property
    def settings(self) -> MetronomeSettings:
        """The connection, read once; the token is registered with Airflow's secrets masker."""
        conn_id = self.metronome_conn_id
        conn = self.get_connection(conn_id)
        named = _connection_name(conn_id, conn.host, by_host=self._named_by_host)
        token = (conn.password or "").strip()
        if not token:
            raise ValueError(
                f"The {named} has no API token: put the Metronome API token in its password field."
            )
        if token != conn.password:
            # Airflow masks the password as stored; the stripped token is a different string.
            mask_secret(token)
        if not (token.isascii() and token.isprintable()) or any(char.isspace() for char in token):
            # Checked here because requests would quote the whole header, token included, in its error.
            raise ValueError(
                f"The API token of the {named} contains spaces or control characters; paste the "
                "token again without them."
            )
        extras = conn.extra_dejson
        values = {name: _extra_number(named, extras, name) for name in CONNECTION_EXTRAS}
        return MetronomeSettings(
            base_url=normalize_base_url(conn.host, conn.port, conn_id="" if self._named_by_host else conn_id),
            token=token,
            # Whole numbers arrive as floats; __post_init__ turns them into ints.
            **{name: value for name, value in values.items() if value is not None},  # type: ignore[arg-type]
        )

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.settings.max_retries, max_retry_wait=self.settings.max_retry_wait)

    def get_conn(self) -> requests.Session:
        """The hook's pooled, authenticated ``requests.Session`` (one per hook, safe to share across threads)."""
        with self._session_lock:
            if self._session is None:
                self._session = self._new_session()
            return self._session

    def _new_session(self) -> requests.Session:
        settings = self.settings
        return new_session(settings.token, settings.base_url, settings.pool_size)

    def close(self) -> None:
        """Close the pooled connections (a new session is opened on next use)."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def test_connection(self) -> tuple[bool, str]:
        """Check the URL and token with one cheap authenticated call.

        Used by the UI's Test button, Airflow's REST API and ``airflow connections test``. Its
        messages name the connection by its host, not by its id: the UI and the REST API test a
        temporary copy of the connection under a random id.
        """
        self._named_by_host = True
        try:
            self.get("/v1/customers", {"limit": 1})
        except (MetronomeAPIError, ValueError) as err:
            return False, str(err)
        finally:
            self._named_by_host = False
        return True, f"Connected to Metronome at {self.settings.base_url}."

    # -- HTTP ---------------------------------------------------------------------------------

    @cached_property
    def rate_controller(self) -> RateController:
        """The process's one rate controller for this connection's account."""
        settings = self.settings
        return account_controller(
            self.metronome_conn_id,
            settings.base_url,
            max_rate=settings.requests_per_second,
            give_up_after=settings.rate_limit_timeout,
        )

    def rate_snapshot(self) -> RateSnapshot:
        """The account's current request rate (None: unpaced) and its 429 count in this process."""
        return self.rate_controller.snapshot()

    def get(self, path: str, params: Mapping[str, QueryValue] | None = None) -> requests.Response:
        """GET ``path`` (for example ``/v1/customers``) under the rate controller and the retry policy.

        429 answers wait for the rate controller and are sent again for as long as any request of the
        account still succeeds now and then (``rate_limit_timeout``); failures (5xx, 408, 409, no
        answer) are retried ``max_retries`` times. Any other error answer raises at once.
        """
        return self._send(path, params, read_json=False)[0]

    def get_json(self, path: str, params: Mapping[str, QueryValue] | None = None) -> Any:
        """:meth:`get`, then the body read by :func:`~airflow_provider_metronome.models.parse_json`.

        A 200 whose body is not JSON (a proxy's HTML page, an empty or cut-off body) is a failed
        attempt, retried like a 5xx; JSON that names a key twice is a broken answer, raised at once.
        """
        return self._send(path, params, read_json=True)[1]

    def _send(
        self, path: str, params: Mapping[str, QueryValue] | None, *, read_json: bool
    ) -> tuple[requests.Response, Any]:
        settings = self.settings
        url = settings.base_url + path
        session = self.get_conn()
        policy = self.retry_policy
        first_sent = time.monotonic()
        failures = 0
        customer = _customer_of(path)
        while True:
            sent_at = self._wait_for_turn(customer)
            started = time.monotonic()
            try:
                response = send(
                    session, url, params, connect_timeout=settings.connect_timeout, timeout=settings.timeout
                )
            except AttemptFailed as failure:
                self.rate_controller.on_failure()
                if not failure.retryable:
                    error = MetronomeResponseError if failure.malformed else MetronomeAPIError
                    raise error(self._scrub(failure.cause), method="GET", path=path) from None
                failures = self._count_failure(
                    path, failures, None, failure.cause, timed_out=failure.timed_out
                )
                continue
            self.log.debug(
                "GET %s -> %s in %.3f s (attempt %d)",
                path,
                response.status_code,
                time.monotonic() - started,
                failures + 1,
            )
            verdict = policy.verdict(response)
            if verdict is Verdict.THROTTLED:
                self._on_throttled(path, response, sent_at, first_sent, customer)
                continue
            if verdict is Verdict.RETRY:
                self.rate_controller.on_failure()
                failures = self._count_failure(path, failures, response, f"HTTP {response.status_code}")
                continue
            if response.is_redirect or response.status_code >= 400:
                self.rate_controller.on_failure()
                raise self._answer_error(response, path, retried=failures > 0)
            self.rate_controller.on_success(customer, sent_at)
            if not read_json:
                return response, None
            try:
                return response, parse_json(response.content)
            except BrokenJsonError as err:
                raise MetronomeResponseError(
                    f"the answer {err}",
                    status_code=response.status_code,
                    method="GET",
                    path=path,
                ) from None
            except ValueError:
                failures = self._count_failure(path, failures, response, _not_json(response, self._mask))

    def _answer_error(self, response: requests.Response, path: str, *, retried: bool) -> MetronomeAPIError:
        """The error a redirect or a 4xx/5xx answer that is not retried raises."""
        if response.is_redirect:
            return self._redirect_error(response, path)
        message = _error_message(response, self._mask)
        return error_for_status(response.status_code, message, method="GET", path=path, retried=retried)

    def _redirect_error(self, response: requests.Response, path: str) -> MetronomeAPIError:
        """Metronome's API never redirects: a redirect means the host points somewhere else."""
        location = response.headers.get("Location", "")
        target = urlsplit(requests.compat.urljoin(response.url, location))
        ours = urlsplit(self.settings.base_url)
        if target.hostname != ours.hostname:
            cause = (
                f"Metronome answered with a redirect to {target.hostname}; the token is not sent to other "
                "hosts: check the connection's host"
            )
        else:
            cause = (
                f"Metronome answered with a redirect to {location}; check the connection's host and scheme"
            )
        return MetronomeAPIError(cause, status_code=response.status_code, method="GET", path=path)

    def _wait_for_turn(self, customer: str | None) -> float:
        """Wait for this task's own cap, then for the account's controller; count the attempt."""
        if self._task_cap is not None:
            self._task_cap.acquire()
        sent_at = self.rate_controller.acquire(customer)
        with self._stats_lock:
            self.stats.sent += 1
        return sent_at

    def _on_throttled(
        self, path: str, response: requests.Response, sent_at: float, first_sent: float, customer: str | None
    ) -> None:
        controller = self.rate_controller
        # A customer's own limit holds back that customer alone; without a customer in the path there
        # is no one else to hold back, so the account waits.
        scoped = customer if customer is not None and customer_limited(response) else None
        controller.on_throttled(sent_at, self.retry_policy.requested_wait(response), scoped)
        with self._stats_lock:
            self.stats.throttled += 1
        stalled = controller.seconds_without_success(since=first_sent, customer=scoped)
        if stalled >= controller.give_up_after and scoped is not None:
            raise MetronomeRateLimitError(
                f"the customer's own rate limit answered 429 to every request for it for {stalled:.0f} s "
                "(X-Metronome-Rate-Limit-Type: customer; other customers are not held back). Fetch it in "
                "a later run, or raise the connection extra rate_limit_timeout",
                status_code=response.status_code,
                method="GET",
                path=path,
            )
        if stalled >= controller.give_up_after:
            raise MetronomeRateLimitError(
                f"the account's rate limit answered 429 to every request for {stalled:.0f} s (no request "
                "of this connection succeeded meanwhile). Other tasks or integrations may be using the "
                "account's budget: run fewer tasks at once (an Airflow pool), lower max_workers, set the "
                "connection extra requests_per_second to the account's budget, or raise the connection "
                "extra rate_limit_timeout",
                status_code=response.status_code,
                method="GET",
                path=path,
            )

    def _count_failure(
        self,
        path: str,
        failures: int,
        response: requests.Response | None,
        cause: str,
        *,
        timed_out: bool = False,
    ) -> int:
        """Wait before retrying a failed attempt, or raise once the retries are spent.

        A gateway timeout (a 504, or no whole answer within ``timeout``) raises
        :class:`MetronomeGatewayTimeoutError`, at once inside
        :func:`~airflow_provider_metronome.hooks.retry.timeouts_not_retried`.
        """
        policy = self.retry_policy
        timed_out = timed_out or (response is not None and response.status_code == GATEWAY_TIMEOUT_STATUS)
        if timed_out and (failures >= policy.max_retries or not retries_timeouts()):
            message = (
                _error_message(response, self._mask)
                if response is not None
                else self._scrub(f"no answer after {failures + 1} attempt(s): {cause}")
            )
            raise MetronomeGatewayTimeoutError(
                message,
                status_code=None if response is None else response.status_code,
                method="GET",
                path=path,
            )
        if failures >= policy.max_retries:
            if response is not None and response.status_code < 300:
                raise MetronomeTransientError(
                    self._scrub(f"no usable answer after {failures + 1} attempt(s): {cause}"),
                    status_code=response.status_code,
                    method="GET",
                    path=path,
                )
            if response is not None:
                raise error_for_status(
                    response.status_code,
                    _error_message(response, self._mask),
                    method="GET",
                    path=path,
                    retried=True,
                )
            raise MetronomeTransientError(
                self._scrub(f"no answer after {failures + 1} attempt(s): {cause}"), method="GET", path=path
            )
        wait = policy.wait_before_retry(response, failures)
        self.log.warning(
            "Metronome GET %s failed (%s); retry %d of %d in %.2f s",
            path,
            cause,
            failures + 1,
            policy.max_retries,
            wait,
        )
        RetryPolicy.sleep(wait)
        return failures + 1

    def _scrub(self, text: str) -> str:
        """Hide the token should a library echo it back, so no exception text carries it."""
        return text.replace(self.settings.token, "***")

    def _mask(self, text: str) -> str:
        """Hide every piece of the token in text the server sent (see :func:`mask_token`)."""
        return mask_token(text, self.settings.token)

    # -- Pagination ---------------------------------------------------------------------------

    def paginate(
        self,
        path: str,
        params: Mapping[str, QueryValue],
        model: type[ModelT],
        *,
        page_size: int = MAX_PAGE_SIZE,
        max_pages: int = MAX_LIST_PAGES,
    ) -> Iterator[ModelT]:
        """Yield every item of a list endpoint, following ``next_page`` cursors.

        Each request re-sends ``params`` with the cursor. The walk stops when the cursor is null,
        missing or empty, continues past empty pages that still carry a cursor, and raises
        :class:`MetronomeResponseError` if a cursor repeats, if too many empty pages follow one
        another, or past ``max_pages`` pages (server bugs that would loop forever).
        """
        for page in self.iter_pages(path, params, model, page_size=page_size, max_pages=max_pages):
            yield from page

    def iter_pages(
        self,
        path: str,
        params: Mapping[str, QueryValue],
        model: type[ModelT],
        *,
        page_size: int = MAX_PAGE_SIZE,
        max_pages: int = MAX_LIST_PAGES,
    ) -> Iterator[list[ModelT]]:
        """:meth:`paginate` a page at a time: each page's items, checked, as one list."""
        check_page_size(page_size)
        page_type = Page[model]  # type: ignore[valid-type]
        query: dict[str, QueryValue] = {**params, "limit": page_size}
        seen_cursors: set[str] = set()
        pages = items = empty_run = 0
        started = last_report = time.monotonic()
        while True:
            page = _validate(page_type, self.get_json(path, query), path)
            pages += 1
            cursor = page.next_page
            # Checked before the page's items are handed out: a page with a broken cursor is suspect.
            if cursor in seen_cursors:
                raise _broken(
                    path,
                    f"the next_page cursor repeated after {pages} pages; stopping to avoid an endless loop",
                )
            empty_run = empty_run + 1 if cursor and not page.data else 0
            if empty_run >= MAX_CONSECUTIVE_EMPTY_PAGES:
                raise _broken(path, f"{empty_run} empty pages in a row, each with a new cursor; stopping")
            if cursor and pages >= max_pages:
                raise _broken(
                    path,
                    f"still a next_page cursor after {pages} pages, more than any real answer has; "
                    "the server's cursor never ends, stopping",
                )
            items += len(page.data)
            if time.monotonic() - last_report >= LISTING_REPORT_INTERVAL:
                last_report = time.monotonic()
                self.log.info("Still reading %s: %d item(s) in %d page(s) so far", path, items, pages)
            yield page.data
            if not cursor:
                break
            seen_cursors.add(cursor)
            query["next_page"] = cursor
        self.log.debug(
            "Read %d %s in %d page(s) from %s in %.2f s",
            items,
            model.__name__,
            pages,
            path,
            time.monotonic() - started,
        )

    def iter_customers(
        self,
        include_archived: bool = False,
        *,
        customer_ids: Sequence[str] | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[Customer]:
        """Yield customers: the active ones, plus the archived ones when ``include_archived``.

        :param customer_ids: only these customers (Metronome accepts up to 100 per request; longer
            lists are sent in batches).
        """
        ids = [check_customer_id(cid) for cid in customer_ids] if customer_ids is not None else None
        check_page_size(page_size)
        states = ["false", "true"] if include_archived else ["false"]
        batches: list[list[str] | None] = (
            [ids[i : i + MAX_PAGE_SIZE] for i in range(0, len(ids), MAX_PAGE_SIZE)]
            if ids is not None
            else [None]
        )
        queries: list[dict[str, QueryValue]] = [
            {"only_archived": only_archived}
            if batch is None
            else {"only_archived": only_archived, "customer_ids": ",".join(batch)}
            for only_archived in states
            for batch in batches
        ]
        # Validated above, when called; the requests go out only as the caller iterates.
        return itertools.chain.from_iterable(self._list_customers(params, page_size) for params in queries)

    def _list_customers(self, params: Mapping[str, QueryValue], page_size: int) -> Iterator[Customer]:
        """One listing: each customer once, and an error at once for a page of nothing but repeats.

        Customers may show on two pages when the listing changes while it is read (one created or
        archived between pages); such repeats are dropped. A page holding only customers already
        seen, under a new cursor, is a listing going round in circles.
        """
        seen: set[str] = set()
        for page in self.iter_pages("/v1/customers", params, Customer, page_size=page_size):
            fresh = [customer for customer in page if customer.id.lower() not in seen]
            if page and not fresh:
                raise _broken(
                    "/v1/customers",
                    f"a page of the customer listing holds only customers already listed ({len(page)} of "
                    f"them, after {len(seen)} distinct ones); the listing goes round in circles, stopping",
                )
            for customer in fresh:
                seen.add(customer.id.lower())
            yield from fresh

    def list_active_customer_ids(self) -> list[str]:
        """The ids of every active customer, sorted (the order every task writes customers in)."""
        return sorted({customer.id.lower() for customer in self.iter_customers()})

    def list_window_customers(
        self, starting_on: TimestampLike, ending_before: TimestampLike
    ) -> WindowCustomers:
        """The customers that can have costs in ``[starting_on, ending_before)``, each once, sorted.

        The active customers, plus the archived ones whose ``archived_at`` is after ``starting_on``;
        customers created at or after ``ending_before`` are left out. Two listings (active, then
        archived), paginated.
        """
        listing = self.window_listing(starting_on, ending_before)
        for _ in listing:
            pass
        return listing.customers

    def window_listing(self, starting_on: TimestampLike, ending_before: TimestampLike) -> WindowListing:
        """:meth:`list_window_customers` as it is read: each customer's id as soon as its page arrives.

        The requests go out as the listing is iterated; its ``customers`` are the window's set once it
        was read to the end (see :class:`~airflow_provider_metronome.customers.WindowListing`).
        """
        window = DayWindow.of(starting_on, ending_before)
        archived = self._list_customers({"only_archived": "true"}, MAX_PAGE_SIZE)
        return WindowListing(window, self.iter_customers(), archived)

    def iter_costs(
        self,
        customer_id: str,
        starting_on: TimestampLike,
        ending_before: TimestampLike,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[CostWindow]:
        """Yield a customer's daily pending costs in ``[starting_on, ending_before)``.

        ``GET /v1/customers/{id}/costs`` (Metronome Plans). Customers whose plan has a UNIQUE-type
        billable metric get a :class:`~airflow_provider_metronome.exceptions.MetronomeClientError`.
        """
        path, params, days = self._range_request(customer_id, "costs", starting_on, ending_before, page_size)
        # One window per day.
        max_pages = math.ceil(days / page_size) + MAX_CONSECUTIVE_EMPTY_PAGES
        return self.paginate(path, params, CostWindow, page_size=page_size, max_pages=max_pages)

    def iter_invoice_breakdowns(
        self,
        customer_id: str,
        starting_on: TimestampLike,
        ending_before: TimestampLike,
        window_size: Literal["day", "hour"] = "day",
        *,
        credit_type_id: str | None = None,
        status: Sequence[str] | None = None,
        skip_zero_qty_line_items: bool | None = None,
        sort: Literal["date_asc", "date_desc"] | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[InvoiceBreakdown]:
        """Yield a customer's invoice breakdowns for windows inside ``[starting_on, ending_before)``.

        ``GET /v1/customers/{id}/invoices/breakdowns``, the Contracts-era replacement for costs.

        :param window_size: ``"day"`` or ``"hour"`` windows.
        :param credit_type_id: only this credit type.
        :param status: only invoices in these statuses (for example ``["DRAFT"]``, ``["FINALIZED"]``).
        :param skip_zero_qty_line_items: leave out line items with zero quantity.
        :param sort: ``"date_asc"`` (Metronome's default) or ``"date_desc"``.
        """
        if window_size not in ("day", "hour"):
            raise ValueError(f"window_size={window_size!r} must be 'day' or 'hour'.")
        if sort not in (None, "date_asc", "date_desc"):
            raise ValueError(f"sort={sort!r} must be 'date_asc' or 'date_desc'.")
        path, params, days = self._range_request(
            customer_id, "invoices/breakdowns", starting_on, ending_before, page_size
        )
        windows = days * (24 if window_size == "hour" else 1)
        max_pages = MAX_CONSECUTIVE_EMPTY_PAGES + max(
            math.ceil(windows * MAX_INVOICES_PER_WINDOW / page_size),
            math.ceil(windows / BREAKDOWN_WINDOWS_PER_PAGE[window_size]),
        )
        params["window_size"] = window_size
        if credit_type_id is not None:
            params["credit_type_id"] = str(credit_type_id)
        if status is not None:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if skip_zero_qty_line_items is not None:
            params["skip_zero_qty_line_items"] = "true" if skip_zero_qty_line_items else "false"
        if sort is not None:
            params["sort"] = sort
        return self.paginate(path, params, InvoiceBreakdown, page_size=page_size, max_pages=max_pages)

    def iter_source(
        self, source: Source, customer_id: str, starting_on: TimestampLike, ending_before: TimestampLike
    ) -> Iterator[CostWindow | InvoiceBreakdown]:
        """Yield one customer's daily records from ``source``: ``"costs"`` or ``"invoice_breakdowns"``."""
        if check_source(source) == "costs":
            return self.iter_costs(customer_id, starting_on, ending_before)
        # Sent explicitly: Metronome's docs contradict themselves on the default order.
        return self.iter_invoice_breakdowns(
            customer_id, starting_on, ending_before, window_size="day", sort="date_asc"
        )

    def _range_request(
        self,
        customer_id: str,
        resource: str,
        starting_on: TimestampLike,
        ending_before: TimestampLike,
        page_size: int,
    ) -> tuple[str, dict[str, QueryValue], int]:
        """Validate a per-customer date-range request before anything is sent; also the days it spans."""
        customer = check_customer_id(customer_id)
        start, end = check_range(starting_on, ending_before)
        check_page_size(page_size)
        days = math.ceil((end - start).total_seconds() / 86400)
        return (
            f"/v1/customers/{customer}/{resource}",
            {"starting_on": format_timestamp(start), "ending_before": format_timestamp(end)},
            days,
        )


def _customer_of(path: str) -> str | None:
    """The customer a per-customer path (``/v1/customers/{id}/...``) names, lowercased; None for others."""
    parts = path.split("/")
    if len(parts) > 4 and parts[1:3] == ["v1", "customers"] and parts[3]:
        return parts[3].lower()
    return None


def _connection_name(conn_id: str, host: str | None, *, by_host: bool) -> str:
    """How messages name the connection: by id, or in a test by host (the UI tests a copy under a random id)."""
    if not by_host:
        return f"Airflow connection {conn_id!r}"
    host = (host or "").strip()
    return f"connection with host {host!r}" if host else f"connection with no host (so {DEFAULT_BASE_URL})"


def _extra_number(named: str, extras: Mapping[str, Any], name: str) -> float | None:
    """A numeric extra (a number or a numeric string) within its schema's bounds; None when not set.

    Also read under Airflow 2's ``extra__metronome__`` prefix. ``named`` is how an error names the
    connection: ``Airflow connection 'metronome_default'``, or ``connection with host '...'`` in a test.
    """
    raw = extras.get(name, extras.get(f"extra__metronome__{name}"))
    if raw is None or raw == "":
        return None
    schema = CONNECTION_EXTRAS[name]["schema"]
    integer = "integer" in schema["type"]
    try:
        number = math.nan if isinstance(raw, bool) else float(raw)
    except (TypeError, ValueError):
        number = math.nan
    low = schema.get("exclusiveMinimum", schema.get("minimum"))
    high = schema["maximum"]
    too_low = number <= low if "exclusiveMinimum" in schema else number < low
    if not math.isfinite(number) or too_low or number > high or (integer and not number.is_integer()):
        kind = "a whole number" if integer else "a number"
        bound = f"above {low}" if "exclusiveMinimum" in schema else f"from {low}"
        raise ValueError(f"The {named} has extra {name}={raw!r}; it must be {kind} {bound} up to {high}.")
    return number


def _validate(page_type: type[Page[Any]], body: Any, path: str) -> Page[Any]:
    try:
        return page_type.model_validate(body)
    except ValidationError as err:
        problems = err.errors(include_url=False, include_input=True)
        raise _broken(
            path, f"the answer is not the documented JSON ({_describe_problem(problems)})"
        ) from None


def _describe_problem(problems: Sequence[Mapping[str, Any]]) -> str:
    """The first problem, in words: where, and what was there instead."""
    # A number field is a union (a parsed JSON number, or a Python number): its branches repeat the
    # same complaint, so the first error of each place is enough.
    problem = problems[0]
    loc = [
        str(part) for part in problem["loc"] if not str(part).startswith(("is-instance", "function-after"))
    ]
    where = ".".join(loc) or "body"
    if problem["type"] in ("is_instance_of", "int_type", "float_type"):
        value = problem.get("input")
        sent = (
            "a boolean" if isinstance(value, bool) else f"a {type(value).__name__.replace('str', 'string')}"
        )
        return f"{where}: must be a JSON number, but is {sent} ({value!r})"
    return f"{where}: {problem['msg']}"


def _broken(path: str, what: str) -> MetronomeResponseError:
    return MetronomeResponseError(what, status_code=200, method="GET", path=path)


# The most of an answer's body an error message quotes.
MAX_QUOTED_BODY = 200
# A token's substrings this long or longer never appear in a message, whole or cut.
MASKED_RUN = 6


def mask_token(text: str, token: str) -> str:
    """``text`` with every run of at least :data:`MASKED_RUN` characters of ``token`` replaced by ``***``.

    A server may echo the token whole, cut or in part; masking every long piece of it, before the
    text is ever cut or formatted, keeps even a prefix out of messages and logs.
    """
    if len(token) < MASKED_RUN or not text:
        return text
    pieces = {token[i : i + MASKED_RUN] for i in range(len(token) - MASKED_RUN + 1)}
    masked = [False] * len(text)
    for start in range(len(text) - MASKED_RUN + 1):
        if text[start : start + MASKED_RUN] in pieces:
            masked[start : start + MASKED_RUN] = [True] * MASKED_RUN
    if not any(masked):
        return text
    out: list[str] = []
    for char, hidden in zip(text, masked, strict=True):
        if not hidden:
            out.append(char)
        elif not out or out[-1] != "***":
            out.append("***")
    return "".join(out)


def _error_message(response: requests.Response, scrub: Callable[[str], str]) -> str:
    """Metronome's ``{"message": ...}``, or the start of whatever else the body holds, token masked first."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return scrub(str(body["message"]))
    text = scrub(response.text.strip())
    return text[:MAX_QUOTED_BODY] if text else (response.reason or "no message")


def _not_json(response: requests.Response, scrub: Callable[[str], str]) -> str:
    """What a 200 whose body is not JSON held, for the retry's log line and the error."""
    kind = response.headers.get("Content-Type", "no Content-Type").split(";")[0].strip() or "no Content-Type"
    text = scrub(response.content.decode("utf-8", "replace").strip())
    if not text:
        return f"HTTP 200 with an empty body ({kind}) instead of JSON"
    return f"HTTP 200 with a body that is not JSON ({kind}: {text[:80]!r})"


__all__ = ["DEFAULT_BASE_URL", "MetronomeHook", "MetronomeSettings", "RequestStats"]
