"""The per-customer fetch engine: many customers' daily objects for one window, checked and in order.

Every task that reads customers (the operator's fetch, the sensor's and the trigger's availability
check) goes through :func:`fetch_customers`:

- customers are fetched concurrently over the hook's pooled session, at most ``max_workers`` at a
  time, and handed out in the order given, with a bounded read-ahead so memory stays flat however
  many customers there are;
- one error policy: a customer's error fails the fetch, unless customer errors are skipped and the
  error is about that customer alone (:func:`is_skippable_customer_error`);
- each customer's answer is checked against the window before anyone uses it: every object a whole
  UTC day inside the window, none twice (costs: one window per day; breakdowns: one invoice id per
  day), days without any object named as missing. A window outside the range, a repeated one or a
  partial day is a :class:`~airflow_provider_metronome.exceptions.MetronomeResponseError`;
- one progress reporter writes customers done, records, the request rate and the 429 count.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from airflow_provider_metronome.exceptions import (
    MetronomeAuthenticationError,
    MetronomeClientError,
    MetronomeResponseError,
)
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.hooks.rate import stop_waiting_on
from airflow_provider_metronome.models import InvoiceBreakdown, SourceObject
from airflow_provider_metronome.utils.validation import Source
from airflow_provider_metronome.utils.window import DayWindow, to_utc

DayObjects = list[tuple[dt.date, SourceObject]]
"""One customer's objects, each with the UTC day it covers, in day order (the API's order within a day)."""
ResultT = TypeVar("ResultT")
ONE_DAY = dt.timedelta(days=1)


def is_skippable_customer_error(error: BaseException) -> bool:
    """Whether ``on_customer_error="skip"`` may leave a customer out for ``error``.

    Only a 4xx about that customer (a plan with a UNIQUE-type metric, an unknown id) qualifies: a bad
    token fails every customer alike, so skipping them all would hide it; transient errors that
    outlasted the retries fail the task.
    """
    return isinstance(error, MetronomeClientError) and not isinstance(error, MetronomeAuthenticationError)


@dataclass(frozen=True)
class CustomerResult(Generic[ResultT]):
    """What the engine found for one customer.

    :param value: What the caller's ``transform`` made of the customer's objects (None when skipped).
    :param missing_days: Days of the window without any object: Metronome has not produced them yet.
    :param skipped: The customer's own 4xx when customer errors are skipped.
    """

    customer_id: str
    value: ResultT | None
    missing_days: tuple[dt.date, ...] = ()
    skipped: MetronomeClientError | None = None


# How many customer ids a log line or message names; more would drown it.
MAX_NAMED_CUSTOMERS = 3


def name_customers(customer_ids: Sequence[str]) -> str:
    """The first few ids, then ``...`` when there are more."""
    more = ", ..." if len(customer_ids) > MAX_NAMED_CUSTOMERS else ""
    return ", ".join(customer_ids[:MAX_NAMED_CUSTOMERS]) + more


class FetchProgress:
    """Writes customers done / total, records, the request rate and 429s, at most every ``interval`` s."""

    def __init__(self, log: Any, hook: MetronomeHook, total: int, interval: float) -> None:
        self.log = log
        self.hook = hook
        self.total = total
        self.interval = interval
        self.done = 0
        self.records = 0
        self.started = self._last = time.monotonic()

    def advance(self, records: int) -> None:
        self.done += 1
        self.records += records
        now = time.monotonic()
        if self.done < self.total and now - self._last >= self.interval:
            self._last = now
            self._report("Progress", current=True)

    def finish(self) -> None:
        self._report("Done", current=False)

    def _report(self, label: str, *, current: bool) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        stats = self.hook.stats
        if current:
            rate = self.hook.rate_snapshot().rate
            pace = "unpaced" if rate is None else f"paced at {rate:.1f} requests/s"
        else:
            pace = f"{stats.rate:.1f} requests/s"
        self.log.info(
            "%s: %d/%d customers, %d records, %.1f customers/s; %d requests (%s), %d throttled (429)",
            label,
            self.done,
            self.total,
            self.records,
            self.done / elapsed,
            stats.sent,
            pace,
            stats.throttled,
        )


def fetch_customers(
    hook: MetronomeHook,
    customer_ids: Sequence[str],
    window: DayWindow,
    source: Source,
    transform: Callable[[str, DayObjects], ResultT],
    *,
    max_workers: int,
    skip_customer_errors: bool = False,
    progress: FetchProgress | None = None,
    count: Callable[[ResultT], int] = lambda _: 0,
) -> Generator[CustomerResult[ResultT], None, None]:
    """Each customer's checked objects, transformed, in ``customer_ids`` order.

    At most ``2 * max_workers`` customers are in flight or waiting to be consumed. Closing the
    generator early (a consumer that has seen enough, or an error) drops the queued customers and
    lets the few running requests end.

    :param transform: Runs in the worker thread on each customer's :data:`DayObjects`.
    :param count: How many records a result holds, for the progress line.
    """
    # Read the connection once, before the threads race for it.
    _ = hook.settings
    pending: deque[Future[CustomerResult[ResultT]]] = deque()
    queue = iter(customer_ids)
    pool = ThreadPoolExecutor(max_workers, thread_name_prefix="metronome-fetch")
    # Set when the consumer is done: requests still waiting for the rate controller give up at once.
    stop = threading.Event()

    def submit(customer_id: str) -> None:
        pending.append(
            pool.submit(
                _fetch_one,
                hook,
                stop=stop,
                customer_id=customer_id,
                window=window,
                source=source,
                transform=transform,
                skip_customer_errors=skip_customer_errors,
            )
        )

    try:
        for customer_id in queue:
            submit(customer_id)
            if len(pending) >= 2 * max_workers:
                break
        while pending:
            _raise_any_failure(pending)
            result = pending.popleft().result()
            next_id = next(queue, None)
            if next_id is not None:
                submit(next_id)
            if progress is not None:
                progress.advance(0 if result.value is None else count(result.value))
            yield result
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    if progress is not None:
        progress.finish()


def _raise_any_failure(pending: deque[Future[Any]]) -> None:
    """Wait for the first customer's result, but raise at once if any customer already failed.

    The run fails whichever customer failed first, so there is no point waiting, in order, for
    customers ahead of it (at a throttled rate that can be minutes).
    """
    head = pending[0]
    while not head.done():
        running = [future for future in pending if not future.done()]
        wait(running, return_when=FIRST_COMPLETED)
        for future in pending:
            if future.done() and future.exception() is not None:
                future.result()


def _fetch_one(
    hook: MetronomeHook,
    *,
    stop: threading.Event,
    customer_id: str,
    window: DayWindow,
    source: Source,
    transform: Callable[[str, DayObjects], ResultT],
    skip_customer_errors: bool,
) -> CustomerResult[ResultT]:
    try:
        with stop_waiting_on(stop):
            objects = list(hook.iter_source(source, customer_id, window.start, window.end))
    except MetronomeClientError as err:
        if not (skip_customer_errors and is_skippable_customer_error(err)):
            raise
        hook.log.warning("Skipping customer %s: %s", customer_id, err)
        return CustomerResult(customer_id, None, skipped=err)
    day_objects = check_day_windows(objects, window, source, customer_id)
    present = {day for day, _ in day_objects}
    missing = tuple(day for day in window.iter_days() if day not in present)
    return CustomerResult(customer_id, transform(customer_id, day_objects), missing)


def check_day_windows(
    objects: Iterable[SourceObject], window: DayWindow, source: Source, customer_id: str
) -> DayObjects:
    """Pair each object with its UTC day, in day order, or raise if the answer does not tile the window."""
    first, end = window.first_day, window.end.date()
    seen: set[tuple[dt.date, str]] = set()
    paired: DayObjects = []
    in_order = True
    for item in objects:
        day = _whole_day(item, source, customer_id)
        if not first <= day < end:
            raise _bad_window(source, customer_id, f"a window for {day}, outside {window.describe()}")
        key = (day, item.id if isinstance(item, InvoiceBreakdown) else "")
        if key in seen:
            what = f"invoice {key[1]} twice for {day}" if key[1] else f"the window of {day} twice"
            raise _bad_window(source, customer_id, what)
        seen.add(key)
        in_order = in_order and (not paired or paired[-1][0] <= day)
        paired.append((day, item))
    if not in_order:
        paired.sort(key=lambda pair: pair[0])
    return paired


def _whole_day(item: SourceObject, source: Source, customer_id: str) -> dt.date:
    # Metronome's usual form, midnight to midnight in "Z" or "+00:00", needs no datetime parsing;
    # any other form takes the full parse below.
    day = _midnight(item.window_start)
    if day is not None and _midnight(item.window_end) == day + ONE_DAY:
        return day
    start, end = _parse_moment(item.window_start), _parse_moment(item.window_end)
    if start is None or end is None or start.time() != dt.time(0) or end - start != ONE_DAY:
        raise _bad_window(
            source,
            customer_id,
            f"a window {item.window_start} .. {item.window_end} that is not one whole UTC day",
        )
    return start.date()


def _midnight(text: str) -> dt.date | None:
    """The date of ``YYYY-MM-DDT00:00:00Z`` or ``...T00:00:00+00:00``; None for any other text."""
    if not (
        (len(text) == 20 and text.endswith("T00:00:00Z"))
        or (len(text) == 25 and text.endswith("T00:00:00+00:00"))
    ):
        return None
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def _parse_moment(text: str) -> dt.datetime | None:
    """A UTC datetime from Metronome's RFC 3339 text; fast for its usual ``...Z`` form."""
    try:
        moment = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        try:
            moment = to_utc(text, name="window timestamp")
        except ValueError:
            return None
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _bad_window(source: Source, customer_id: str, what: str) -> MetronomeResponseError:
    path = f"/v1/customers/{customer_id}/" + ("costs" if source == "costs" else "invoices/breakdowns")
    return MetronomeResponseError(
        f"the answer for customer {customer_id} holds {what}; nothing was written",
        status_code=200,
        method="GET",
        path=path,
    )


__all__ = [
    "CustomerResult",
    "DayObjects",
    "FetchProgress",
    "check_day_windows",
    "fetch_customers",
    "is_skippable_customer_error",
    "name_customers",
]
