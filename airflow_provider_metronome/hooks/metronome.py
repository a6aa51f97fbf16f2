"""MetronomeHook: authenticated, pooled, retried and paginated access to Metronome's API."""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import requests
import requests.auth
from pydantic import ValidationError
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState

from airflow_provider_metronome import __version__
from airflow_provider_metronome._compat import BaseHook, mask_secret
from airflow_provider_metronome.exceptions import (
    MetronomeAPIError,
    MetronomeResponseError,
    MetronomeTransientError,
    error_for_status,
)
from airflow_provider_metronome.models import CostWindow, Customer, InvoiceBreakdown, MetronomeModel, Page
from airflow_provider_metronome.retry import (
    RETRYABLE_EXCEPTIONS,
    RetryableStatus,
    RetryPolicy,
    should_retry_status,
)
from airflow_provider_metronome.window import TimestampLike, check_range, format_timestamp

DEFAULT_BASE_URL = "https://api.metronome.com"
MAX_PAGE_SIZE = 100
# A cursor chain of empty pages this long is a server bug, not data: stop instead of looping.
MAX_CONSECUTIVE_EMPTY_PAGES = 50

Source = Literal["costs", "invoice_breakdowns"]
SOURCES: tuple[Source, ...] = ("costs", "invoice_breakdowns")

ModelT = TypeVar("ModelT", bound=MetronomeModel)
# Lists go as one comma-separated value, as Metronome's own SDK sends them.
QueryValue = str | int


@dataclass(frozen=True)
class MetronomeSettings:
    """What the hook reads from the Airflow connection (the token is kept out of ``repr``)."""

    base_url: str
    token: str = field(repr=False)
    timeout: float = 60.0
    connect_timeout: float = 5.0
    max_retries: int = 2
    max_retry_wait: float = 60.0
    pool_size: int = 32


def normalize_base_url(host: str | None, port: int | None = None) -> str:
    """``api.metronome.com``, ``https://api.metronome.com/`` and ``.../v1`` all mean the same API root."""
    raw = (host or "").strip() or DEFAULT_BASE_URL
    if "://" not in raw:
        raw = f"https://{raw}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"The connection host {host!r} is not an http(s) URL; use e.g. {DEFAULT_BASE_URL}.")
    netloc = parts.netloc if parts.port or not port else f"{parts.netloc}:{port}"
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{netloc}{path}"


def validate_customer_id(customer_id: str) -> str:
    """Fail before any request when a customer id is not a UUID (Metronome ids always are)."""
    try:
        return str(uuid.UUID(str(customer_id)))
    except (ValueError, AttributeError, TypeError):
        raise ValueError(
            f"customer_id={customer_id!r} is not a Metronome customer id; it must be a UUID such as "
            "'d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc' (an ingest alias or external id will not work)."
        ) from None


def validate_page_size(page_size: int) -> int:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size={page_size!r} must be an integer from 1 to {MAX_PAGE_SIZE}.")
    return page_size


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


class BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>`` on every request; the token stays out of ``repr``."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(***)"


class RequestThrottle:
    """Spaces request starts at least ``1 / requests_per_second`` apart, across threads.

    :param requests_per_second: the cap; None or 0 means no cap.
    """

    def __init__(self, requests_per_second: float | None) -> None:
        if requests_per_second is not None and requests_per_second < 0:
            raise ValueError(
                f"requests_per_second={requests_per_second!r} must be positive (or None for no cap)."
            )
        self.interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._next_start = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this caller may start a request."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + self.interval
        if start > now:
            time.sleep(start - now)


class MetronomeHook(BaseHook):
    """Talk to Metronome's API through an Airflow connection of type ``metronome``.

    The connection's host is the API base URL (default ``https://api.metronome.com``, with or
    without scheme or a trailing ``/v1``) and its password is the API token. Optional extras:
    ``timeout`` (read timeout in seconds, default 60), ``connect_timeout`` (default 5),
    ``max_retries`` (default 2), ``max_retry_wait`` (longest ``Retry-After`` honoured, default 60)
    and ``pool_size`` (keep-alive connections for concurrent calls, default 32).

    Naive datetimes passed to any method are read as UTC.

    :param metronome_conn_id: The Airflow connection to use.
    :param requests_per_second: Optional client-side cap on requests (all threads together,
        retries included) for accounts with a negotiated rate limit.
    """

    conn_name_attr = "metronome_conn_id"
    default_conn_name = "metronome_default"
    conn_type = "metronome"
    hook_name = "Metronome"

    def __init__(
        self, metronome_conn_id: str = default_conn_name, *, requests_per_second: float | None = None
    ) -> None:
        super().__init__()
        self.metronome_conn_id = metronome_conn_id
        self.iteration_log_level = logging.INFO
        self._throttle = RequestThrottle(requests_per_second)
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()

    # Connection form on Airflow 2 (Airflow 3 reads the same definition from get_provider_info()).
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        behaviour = _connection_type_info()["ui-field-behaviour"]
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
            for name, spec in _connection_type_info()["conn-fields"].items()
        }

    @cached_property
    def settings(self) -> MetronomeSettings:
        """The connection, read once; the token is registered with Airflow's secrets masker."""
        conn_id = self.metronome_conn_id
        conn = self.get_connection(conn_id)
        token = (conn.password or "").strip()
        if not token:
            raise ValueError(
                f"The Airflow connection {conn_id!r} has no API token: put the Metronome "
                "API token in its password field."
            )
        mask_secret(token)
        if not (token.isascii() and token.isprintable()) or any(char.isspace() for char in token):
            # Checked here because requests would quote the whole header, token included, in its error.
            raise ValueError(
                f"The API token of the Airflow connection {conn_id!r} contains spaces or control "
                "characters; paste the token again without them."
            )
        extras = conn.extra_dejson
        return MetronomeSettings(
            base_url=normalize_base_url(conn.host, conn.port),
            token=token,
            timeout=_extra_number(conn_id, extras, "timeout", 60.0, positive=True),
            connect_timeout=_extra_number(conn_id, extras, "connect_timeout", 5.0, positive=True),
            max_retries=int(_extra_number(conn_id, extras, "max_retries", 2, integer=True)),
            max_retry_wait=_extra_number(conn_id, extras, "max_retry_wait", 60.0),
            pool_size=int(_extra_number(conn_id, extras, "pool_size", 32, integer=True, positive=True)),
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
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=settings.pool_size, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        # As the session's auth (not a default header) so that requests never swaps in ~/.netrc credentials.
        session.auth = BearerAuth(settings.token)
        session.headers.update(
            {
                "Accept": "application/json",
                "User-Agent": f"airflow-provider-metronome/{__version__} python-requests/{requests.__version__}",
            }
        )
        return session

    def close(self) -> None:
        """Close the pooled connections (a new session is opened on next use)."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def test_connection(self) -> tuple[bool, str]:
        """Check the URL and token with one cheap authenticated call (used by the UI's Test button)."""
        try:
            self.get("/v1/customers", {"limit": 1})
        except (MetronomeAPIError, ValueError) as err:
            return False, str(err)
        return True, f"Connected to Metronome at {self.settings.base_url}."

    # -- HTTP ---------------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, QueryValue] | None = None) -> requests.Response:
        """GET ``path`` (for example ``/v1/customers``) with the retry policy; raise on any error answer."""
        url = self.settings.base_url + path
        timeout = (self.settings.connect_timeout, self.settings.timeout)
        session = self.get_conn()
        attempt = 0

        def send() -> requests.Response:
            nonlocal attempt
            attempt += 1
            self._throttle.wait()
            started = time.monotonic()
            response = session.get(url, params=params, timeout=timeout)
            self.log.debug(
                "GET %s -> %s in %.3f s (attempt %d)",
                path,
                response.status_code,
                time.monotonic() - started,
                attempt,
            )
            if response.status_code >= 400 and should_retry_status(response):
                raise RetryableStatus(response)
            return response

        retried = False
        try:
            response = self.retry_policy.retrying(before_sleep=self._log_retry(path), sleep=_sleep)(send)
        except RetryableStatus as last:
            response, retried = last.response, True
        except RETRYABLE_EXCEPTIONS as err:
            raise MetronomeTransientError(
                f"no answer from {self.settings.base_url} after {attempt} attempt(s) ({type(err).__name__})",
                method="GET",
                path=path,
            ) from None
        except requests.RequestException as err:
            # Not retryable (an invalid URL, too many redirects): the request itself cannot work.
            raise MetronomeAPIError(
                self._scrub(f"the request could not be sent ({type(err).__name__}: {err})"),
                method="GET",
                path=path,
            ) from None
        if response.status_code >= 400:
            message = self._scrub(_error_message(response))
            raise error_for_status(response.status_code, message, method="GET", path=path, retried=retried)
        return response

    def _scrub(self, text: str) -> str:
        """Hide the token should a server or library echo it back, so no exception text carries it."""
        return text.replace(self.settings.token, "***")

    def _log_retry(self, path: str) -> Any:
        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            cause = (
                f"HTTP {error.response.status_code}"
                if isinstance(error, RetryableStatus)
                else type(error).__name__
            )
            wait = state.next_action.sleep if state.next_action else 0.0
            self.log.warning(
                "Metronome GET %s failed (%s); retry %d of %d in %.2f s",
                path,
                cause,
                state.attempt_number,
                self.retry_policy.max_retries,
                wait,
            )

        return before_sleep

    # -- Pagination ---------------------------------------------------------------------------

    def paginate(
        self,
        path: str,
        params: Mapping[str, QueryValue],
        model: type[ModelT],
        *,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[ModelT]:
        """Yield every item of a list endpoint, following ``next_page`` cursors.

        Each request re-sends ``params`` with the cursor. The walk stops when the cursor is null,
        missing or empty, continues past empty pages that still carry a cursor, and raises
        :class:`MetronomeResponseError` if a cursor repeats (a server bug that would loop forever).
        """
        validate_page_size(page_size)
        page_type = Page[model]  # type: ignore[valid-type]
        query: dict[str, QueryValue] = {**params, "limit": page_size}
        seen_cursors: set[str] = set()
        pages = items = empty_run = 0
        started = time.monotonic()
        while True:
            response = self.get(path, query)
            page = _parse(page_type, response, path)
            pages += 1
            cursor = page.next_page
            # Checked before the page's items are handed out: a page with a broken cursor is suspect.
            if cursor in seen_cursors:
                raise MetronomeResponseError(
                    f"the next_page cursor repeated after {pages} pages; stopping to avoid an endless loop",
                    status_code=response.status_code,
                    method="GET",
                    path=path,
                )
            empty_run = empty_run + 1 if cursor and not page.data else 0
            if empty_run >= MAX_CONSECUTIVE_EMPTY_PAGES:
                raise MetronomeResponseError(
                    f"{empty_run} empty pages in a row, each with a new cursor; stopping",
                    status_code=response.status_code,
                    method="GET",
                    path=path,
                )
            items += len(page.data)
            yield from page.data
            if not cursor:
                break
            seen_cursors.add(cursor)
            query["next_page"] = cursor
        self.log.log(
            self.iteration_log_level,
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
        ids = [validate_customer_id(cid) for cid in customer_ids] if customer_ids is not None else None
        validate_page_size(page_size)
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
        return itertools.chain.from_iterable(
            self.paginate("/v1/customers", params, Customer, page_size=page_size) for params in queries
        )

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
        path, params = self._range_request(customer_id, "costs", starting_on, ending_before, page_size)
        return self.paginate(path, params, CostWindow, page_size=page_size)

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
        path, params = self._range_request(
            customer_id, "invoices/breakdowns", starting_on, ending_before, page_size
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
        return self.paginate(path, params, InvoiceBreakdown, page_size=page_size)

    def iter_source(
        self, source: Source, customer_id: str, starting_on: TimestampLike, ending_before: TimestampLike
    ) -> Iterator[CostWindow | InvoiceBreakdown]:
        """Yield one customer's daily records from ``source``: ``"costs"`` or ``"invoice_breakdowns"``."""
        if source == "costs":
            return self.iter_costs(customer_id, starting_on, ending_before)
        if source == "invoice_breakdowns":
            return self.iter_invoice_breakdowns(customer_id, starting_on, ending_before, window_size="day")
        raise ValueError(f"source={source!r} must be one of {', '.join(map(repr, SOURCES))}.")

    def _range_request(
        self,
        customer_id: str,
        resource: str,
        starting_on: TimestampLike,
        ending_before: TimestampLike,
        page_size: int,
    ) -> tuple[str, dict[str, QueryValue]]:
        """Validate a per-customer date-range request before anything is sent."""
        customer = validate_customer_id(customer_id)
        start, end = check_range(starting_on, ending_before)
        validate_page_size(page_size)
        return (
            f"/v1/customers/{customer}/{resource}",
            {"starting_on": format_timestamp(start), "ending_before": format_timestamp(end)},
        )


def _connection_type_info() -> dict[str, Any]:
    from airflow_provider_metronome import get_provider_info

    info: dict[str, Any] = get_provider_info()["connection-types"][0]
    return info


def _extra_number(
    conn_id: str,
    extras: Mapping[str, Any],
    name: str,
    default: float,
    *,
    integer: bool = False,
    positive: bool = False,
) -> float:
    """Read a numeric extra (a number or a numeric string), also under Airflow 2's ``extra__metronome__`` prefix."""
    raw = extras.get(name, extras.get(f"extra__metronome__{name}"))
    if raw is None or raw == "":
        return default
    try:
        number = math.nan if isinstance(raw, bool) else float(raw)
    except (TypeError, ValueError):
        number = math.nan
    if (
        not math.isfinite(number)
        or number < 0
        or (positive and number == 0)
        or (integer and not number.is_integer())
    ):
        kind = "a whole number" if integer else "a number"
        bound = "greater than 0" if positive else "0 or more"
        raise ValueError(
            f"The Airflow connection {conn_id!r} has extra {name}={raw!r}; it must be {kind}, {bound}."
        )
    return number


def _parse(page_type: type[Page[Any]], response: requests.Response, path: str) -> Page[Any]:
    try:
        return page_type.model_validate_json(response.content)
    except ValidationError as err:
        problem = err.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        raise MetronomeResponseError(
            f"the answer is not the documented JSON ({where}: {problem['msg']})",
            status_code=response.status_code,
            method="GET",
            path=path,
        ) from None


def _error_message(response: requests.Response) -> str:
    """Metronome's ``{"message": ...}``, or the start of whatever else the body holds."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    text = response.text.strip()
    return text[:200] if text else (response.reason or "no message")


__all__ = ["DEFAULT_BASE_URL", "SOURCES", "MetronomeHook", "MetronomeSettings", "Source"]
