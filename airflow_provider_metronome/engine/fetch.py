"""The per-customer fetch engine: many customers' daily objects for one window, checked and in order.

Every task that reads customers (the operator's fetch, the sensor's and the trigger's availability
check) goes through :func:`fetch_customers`:

- customers are fetched concurrently over the hook's pooled session, at most ``max_workers`` at a
  time, and handed out in the order given, with a bounded read-ahead so memory stays flat however
  many customers there are;
- given a :class:`CustomerListing` instead of ids, customers are fetched as the listing's pages
  arrive, while the listing is still read; their results wait in a temporary file (not in memory)
  until their turn in the listing's final order, so the order and the bytes are those of a fetch
  that listed first;
- one error policy: a customer's error fails the fetch, unless customer errors are skipped and the
  error is about that customer alone (:func:`is_skippable_customer_error`), or the error is
  transient (a 5xx, a timeout, a reset, a 200 that is not JSON, after the hook's own retries): such
  a customer is tried again later, within the run's :class:`TransientBudget`;
- each customer is asked for its :func:`evidence_window`: the window, plus the day before it when
  that costs no extra page, which tells a customer billed until the window from one that was not;
- a multi-day window the gateway times out on (a 504, or no answer within ``timeout``) is asked
  again as two halves, down to single days (:func:`fetch_window`): the same objects in the same
  order as one answer would hold; a single day that still times out fails the run;
- each customer's answer is checked against the window before anyone uses it: every object a whole
  UTC day inside the window, none twice (costs: one window per day; breakdowns: one invoice id per
  day, each of the customer asked), days without any object named as missing. A window outside the
  range, a repeated one, a partial day or another customer's invoice is a
  :class:`~airflow_provider_metronome.exceptions.MetronomeResponseError`;
- one progress reporter writes customers done, records, the request rate and the 429 count.
"""

from __future__ import annotations

import datetime as dt
import pickle
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import IO, Any, Generic, Protocol, TypeVar

from airflow_provider_metronome.exceptions import (
    MetronomeAPIError,
    MetronomeAuthenticationError,
    MetronomeClientError,
    MetronomeGatewayTimeoutError,
    MetronomeRateLimitError,
    MetronomeResponseError,
    MetronomeTransientError,
)
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.hooks.rate import stop_waiting_on
from airflow_provider_metronome.hooks.retry import timeouts_not_retried
from airflow_provider_metronome.models import InvoiceBreakdown, SourceObject
from airflow_provider_metronome.vocabulary import Source
from airflow_provider_metronome.window import DayWindow, to_utc

DayObjects = list[tuple[dt.date, SourceObject]]
"""One customer's objects, each with the UTC day it covers, in day order (the API's order within a day)."""
ResultT = TypeVar("ResultT")
ONE_DAY = dt.timedelta(days=1)
# Days one request covers at most: /costs pages hold 100 daily windows, breakdowns pages 35 days.
DAYS_PER_PAGE: dict[str, int] = {"costs": 100, "invoice_breakdowns": 35}
# A customer whose requests still fail transiently after the hook's retries is tried again this
# many more times, waiting longer each time; a run tries again at most max(MIN_RUN_RETRIES, 5 %
# of its customers) times in all.
RETRIES_PER_CUSTOMER = 3
MIN_RUN_RETRIES = 10
RUN_RETRY_SHARE = 0.05
RETRY_PAUSE = 2.0


def evidence_window(window: DayWindow, source: Source) -> DayWindow:
    """``window`` with the day before it, when that day fits in the same pages (it then costs nothing).

    Whether a customer had costs the day before tells "billed until now" (a day it lacks is not
    produced yet) from "not billed at all" (no contract, no plan).
    """
    days = round((window.end - window.start).total_seconds() / 86400)
    if days + 1 > DAYS_PER_PAGE[source]:
        return window
    return DayWindow(window.start.subtract(days=1), window.end)


class TransientBudget:
    """How often a run may try again the customers that failed transiently after the hook's retries.

    :param customers: How many customers the run fetches.
    """

    def __init__(self, customers: int) -> None:
        self.total = max(MIN_RUN_RETRIES, round(customers * RUN_RETRY_SHARE))
        self.used = 0
        self.failed: dict[str, MetronomeAPIError] = {}

    def pause_before(self, result: CustomerResult[Any]) -> float:
        """Spend one try on ``result``'s customer and say how long to wait first, or raise once spent."""
        error, attempt = result.failed, result.attempt
        assert error is not None
        self.failed[result.customer_id] = error
        if attempt >= RETRIES_PER_CUSTOMER or self.used >= self.total:
            raise MetronomeTransientError(
                f"{len(self.failed)} customer(s) failed transiently after every retry and the run's budget "
                f"of tries again is spent ({self.used} of {self.total} used; at most {RETRIES_PER_CUSTOMER} "
                f"per customer). Customer {result.customer_id}: {error.cause}. Metronome or the network "
                "is failing more than now and then: the task's own retries can run it again later",
                status_code=error.status_code,
                method=error.method,
                path=error.path,
            )
        self.used += 1
        return RETRY_PAUSE * 2**attempt


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
    :param missing_days: Days of the window without any object (not produced yet, or nothing billed:
        :mod:`~airflow_provider_metronome.engine.availability` tells them apart).
    :param present_days: Days with an object, the day before the window included when it was asked.
    :param skipped: The customer's own 4xx when customer errors are skipped.
    :param failed: A transient error that outlasted the hook's retries (the engine tries again).
    :param attempt: How many times the engine tried the customer again before this result.
    """

    customer_id: str
    value: ResultT | None
    missing_days: tuple[dt.date, ...] = ()
    present_days: frozenset[dt.date] = frozenset()
    skipped: MetronomeClientError | None = None
    failed: MetronomeAPIError | None = None
    attempt: int = 0


# How many customer ids a log line or message names; more would drown it.
MAX_NAMED_CUSTOMERS = 3


def name_customers(customer_ids: Sequence[str]) -> str:
    """The first few ids, then ``...`` when there are more."""
    more = ", ..." if len(customer_ids) > MAX_NAMED_CUSTOMERS else ""
    return ", ".join(customer_ids[:MAX_NAMED_CUSTOMERS]) + more


class CustomerListing(Protocol):
    """Customers as a listing shows them: ids to fetch as they come, then the final ids in their order.

    :class:`~airflow_provider_metronome.customers.WindowListing` is one.
    """

    def __iter__(self) -> Iterator[str]:
        """Each id that may be in the final set, once, as soon as it is listed."""
        ...

    @property
    def ids(self) -> Sequence[str]:
        """The ids to hand out, in their order; only once iterated to the end."""
        ...


class FetchProgress:
    """Writes customers done / total, records, the request rate and 429s, at most every ``interval`` s.

    :param total: How many customers the run fetches (a fetch that lists them sets it once listed).
    """

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
    customer_ids: Sequence[str] | CustomerListing,
    window: DayWindow,
    source: Source,
    transform: Callable[[str, DayObjects], ResultT],
    *,
    max_workers: int,
    skip_customer_errors: bool = False,
    retry_transient: bool = True,
    progress: FetchProgress | None = None,
    count: Callable[[ResultT], int] = lambda _: 0,
) -> Generator[CustomerResult[ResultT], None, None]:
    """Each customer's checked objects, transformed, in ``customer_ids`` order.

    At most ``2 * max_workers`` customers are in flight or waiting to be consumed. Closing the
    generator early (a consumer that has seen enough, or an error) drops the queued customers and
    lets the few running requests end.

    :param customer_ids: The ids, or a :class:`CustomerListing` to fetch from while it is read
        (results come once it is read to the end, in its final order).
    :param transform: Runs in the worker thread on each customer's :data:`DayObjects`.
    :param retry_transient: Try customers again that failed transiently after the hook's retries
        (within a :class:`TransientBudget`); else their error fails the fetch at once (a check that
        will be repeated anyway).
    :param count: How many records a result holds, for the progress line.
    """
    # Read the connection once, before the threads race for it.
    _ = hook.settings
    pending: deque[Future[Any]] = deque()
    pool = ThreadPoolExecutor(max_workers, thread_name_prefix="metronome-fetch")
    # Set when the consumer is done: requests still waiting for the rate controller give up at once.
    stop = threading.Event()
    early: _Prefetch[ResultT] | None = None
    # Results of customers fetched ahead of a held-back one (its own rate limit, say).
    ahead: _ResultSpool[ResultT] = _ResultSpool()

    def fetch(customer_id: str, attempt: int = 0, pause: float = 0.0) -> Future[CustomerResult[ResultT]]:
        return pool.submit(
            _fetch_one,
            hook,
            stop=stop,
            customer_id=customer_id,
            window=window,
            source=source,
            transform=transform,
            skip_customer_errors=skip_customer_errors,
            retry_transient=retry_transient,
            attempt=attempt,
            pause=pause,
        )

    def submit(customer_id: str) -> None:
        fetched = None if early is None else early.take(customer_id)
        pending.append(fetch(customer_id) if fetched is None else fetched)

    try:
        if isinstance(customer_ids, Sequence):
            ids = customer_ids
        else:
            early = _Prefetch(fetch, 2 * max_workers)
            early.read(customer_ids)
            ids = customer_ids.ids
        budget = TransientBudget(len(ids))
        if progress is not None:
            progress.total = len(ids)
        queue = iter(ids)
        for customer_id in queue:
            submit(customer_id)
            if len(pending) >= 2 * max_workers:
                break

        read_ahead = partial(_read_ahead, pending, ahead, queue, submit, max_workers)

        def try_again(index: int, result: CustomerResult[ResultT]) -> None:
            """Put a transiently failed customer back in its place, to be fetched after a pause."""
            assert result.failed is not None
            pause = budget.pause_before(result)
            hook.log.warning(
                "Customer %s still failed after the hook's retries (%s); trying it again in %.0f s "
                "(%d of the run's %d tries again used)",
                result.customer_id,
                result.failed.cause,
                pause,
                budget.used,
                budget.total,
            )
            pending[index] = fetch(result.customer_id, result.attempt + 1, pause)

        while pending:
            _wait_for_head(pending, try_again, read_ahead)
            result = _claimed(pending.popleft().result(), ahead)
            while len(pending) < 2 * max_workers and (next_id := next(queue, None)) is not None:
                submit(next_id)
            if progress is not None:
                progress.advance(0 if result.value is None else count(result.value))
            yield result
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        ahead.close()
        if early is not None:
            early.close()
    if progress is not None:
        progress.finish()


class _Prefetch(Generic[ResultT]):
    """Customers fetched while the listing is read, at most ``limit`` at a time, each result set aside.

    Results that finish while the listing is read go to a :class:`_ResultSpool`; those still running
    when it ends stay with their future. :meth:`take` hands either out when the customer's turn comes.
    A fetch that raised keeps its future too: its error is raised at the customer's turn, as without
    prefetching, so a listing that fails reports its own error, and a customer the final listing
    drops (archived before the window) cannot fail the run.
    """

    def __init__(self, fetch: Callable[[str], Future[CustomerResult[ResultT]]], limit: int) -> None:
        self._fetch = fetch
        self._limit = limit
        # Reentrant: a future that is already done runs its callback at once, in the thread adding it.
        self._lock = threading.RLock()
        self._waiting: deque[str] = deque()
        self._running: dict[str, Future[CustomerResult[ResultT]]] = {}
        self._spool: _ResultSpool[ResultT] = _ResultSpool()
        self._listing = True
        self._failed: dict[str, Future[CustomerResult[ResultT]]] = {}

    def read(self, listing: CustomerListing) -> None:
        """Read the listing to its end, fetching its customers meanwhile."""
        try:
            for customer_id in listing:
                with self._lock:
                    if len(self._running) < self._limit:
                        self._start(customer_id)
                    else:
                        self._waiting.append(customer_id)
        finally:
            with self._lock:
                # The rest are fetched in the final order; the running ones are taken from their futures.
                self._listing = False
                self._waiting.clear()

    def take(self, customer_id: str) -> Future[CustomerResult[ResultT]] | None:
        """The customer's result (or its running fetch), or None when it was not fetched early."""
        with self._lock:
            running = self._running.pop(customer_id, None) or self._failed.pop(customer_id, None)
        if running is not None:
            return running
        result = self._spool.take(customer_id)
        if result is None:
            return None
        done: Future[CustomerResult[ResultT]] = Future()
        done.set_result(result)
        return done

    def close(self) -> None:
        self._spool.close()

    def _start(self, customer_id: str) -> None:
        future = self._fetch(customer_id)
        self._running[customer_id] = future
        future.add_done_callback(lambda done: self._finished(customer_id, done))

    def _finished(self, customer_id: str, future: Future[CustomerResult[ResultT]]) -> None:
        with self._lock:
            if not self._listing or future.cancelled():
                return
            del self._running[customer_id]
            if future.exception() is not None:
                self._failed[customer_id] = future
            else:
                self._spool.put(future.result())
            while self._waiting and len(self._running) < self._limit:
                self._start(self._waiting.popleft())


class _ResultSpool(Generic[ResultT]):
    """Results waiting for their turn, pickled into a temporary file: memory stays flat however many wait.

    Results with an error (skipped, failed) stay in memory: they are few, hold no records, and an
    error does not survive pickling whole.
    """

    def __init__(self) -> None:
        # Opened by the first result that needs it (most fetches never spool one), closed by close().
        self._file: IO[bytes] | None = None
        self._where: dict[str, tuple[int, int]] = {}
        self._kept: dict[str, CustomerResult[ResultT]] = {}

    def put(self, result: CustomerResult[ResultT]) -> None:
        if result.skipped is not None or result.failed is not None:
            self._kept[result.customer_id] = result
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="metronome-results-")  # noqa: SIM115
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        offset = self._file.seek(0, 2)
        self._file.write(data)
        self._where[result.customer_id] = (offset, len(data))

    def take(self, customer_id: str) -> CustomerResult[ResultT] | None:
        kept = self._kept.pop(customer_id, None)
        if kept is not None:
            return kept
        where = self._where.pop(customer_id, None)
        if where is None or self._file is None:
            return None
        self._file.seek(where[0])
        result: CustomerResult[ResultT] = pickle.loads(self._file.read(where[1]))
        return result

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _wait_for_head(
    pending: deque[Future[Any]],
    try_again: Callable[[int, CustomerResult[ResultT]], None],
    read_ahead: Callable[[], None],
) -> None:
    """Wait until the first customer has its result, acting on every other result as it comes.

    A customer that failed for good fails the run at once: there is no point waiting, in order, for
    customers ahead of it (at a throttled rate that can be minutes). One that failed transiently is
    tried again at once, wherever it stands, rather than when its turn comes. While the first one is
    held back, ``read_ahead`` gives idle workers later customers.
    """
    while True:
        for index, future in enumerate(pending):
            if not future.done():
                continue
            result = future.result()  # raises the customer's error
            if result.failed is not None:
                try_again(index, result)
        if pending[0].done():
            return
        read_ahead()
        wait([future for future in pending if not future.done()], return_when=FIRST_COMPLETED)


def _read_ahead(
    pending: deque[Future[Any]],
    ahead: _ResultSpool[ResultT],
    queue: Iterator[str],
    submit: Callable[[str], None],
    max_workers: int,
) -> None:
    """Keep idle workers busy past a held-back first customer; what they find waits on disk.

    A customer its own rate limit holds back would otherwise stop the run once the customers queued
    behind it are done: results are handed out in order.
    """
    unfinished = sum(not future.done() for future in pending)
    if pending[0].done() or unfinished >= max_workers:
        return
    for index, future in enumerate(pending):
        found = future.result() if index and future.done() else None
        if isinstance(found, CustomerResult) and found.failed is None:
            ahead.put(found)
            pending[index] = _spooled(found.customer_id)
    for _ in range(max_workers - unfinished):
        next_id = next(queue, None)
        if next_id is None:
            return
        submit(next_id)


@dataclass(frozen=True)
class _Spooled:
    """The place of a customer whose result was read ahead of its turn and waits in a spool."""

    customer_id: str
    failed: None = None


def _claimed(
    head: CustomerResult[ResultT] | _Spooled, ahead: _ResultSpool[ResultT]
) -> CustomerResult[ResultT]:
    """The first customer's result, from the spool when it was read ahead."""
    if not isinstance(head, _Spooled):
        return head
    result = ahead.take(head.customer_id)
    assert result is not None  # put there by _read_ahead, taken once
    return result


def _spooled(customer_id: str) -> Future[Any]:
    done: Future[Any] = Future()
    done.set_result(_Spooled(customer_id))
    return done


def _fetch_one(
    hook: MetronomeHook,
    *,
    stop: threading.Event,
    customer_id: str,
    window: DayWindow,
    source: Source,
    transform: Callable[[str, DayObjects], ResultT],
    skip_customer_errors: bool,
    retry_transient: bool,
    attempt: int,
    pause: float,
) -> CustomerResult[ResultT]:
    if pause and stop.wait(pause):
        return CustomerResult(customer_id, None)
    asked = evidence_window(window, source)
    try:
        with stop_waiting_on(stop):
            objects = fetch_window(hook, source, customer_id, asked)
    except MetronomeGatewayTimeoutError:
        # Already asked a day at a time: trying the run's budget on it would only time out again.
        raise
    except MetronomeClientError as err:
        if not (skip_customer_errors and is_skippable_customer_error(err)):
            raise
        hook.log.warning("Skipping customer %s: %s", customer_id, err)
        return CustomerResult(customer_id, None, skipped=err)
    except MetronomeAPIError as err:
        if not (retry_transient and err.retryable) or isinstance(err, MetronomeRateLimitError):
            raise
        return CustomerResult(customer_id, None, failed=err, attempt=attempt)
    day_objects = days_of_objects(objects, asked, source, customer_id)
    present = frozenset(day for day, _ in day_objects)
    if asked != window:
        day_objects = [(day, item) for day, item in day_objects if day >= window.first_day]
    missing = tuple(day for day in window.iter_days() if day not in present)
    return CustomerResult(customer_id, transform(customer_id, day_objects), missing, present)


def fetch_window(
    hook: MetronomeHook, source: Source, customer_id: str, window: DayWindow
) -> list[SourceObject]:
    """One customer's objects of ``window``; where the gateway times out, its two halves, down to one day.

    The halves are asked in day order and their objects joined: the same objects, in the same order,
    as one answer sorted by date would hold. A multi-day window that times out is not sent again whole
    (:func:`~airflow_provider_metronome.hooks.retry.timeouts_not_retried`): it would time out again, and
    each try can cost the gateway's whole timeout.

    :raises MetronomeGatewayTimeoutError: a single day still timed out after the hook's retries.
    """
    days = len(window.days)
    if days <= 1:
        try:
            return list(hook.iter_source(source, customer_id, window.start, window.end))
        except MetronomeGatewayTimeoutError as err:
            raise _day_timed_out(err, source, customer_id, window) from None
    try:
        with timeouts_not_retried():
            return list(hook.iter_source(source, customer_id, window.start, window.end))
    except MetronomeGatewayTimeoutError as err:
        hook.log.warning(
            "Customer %s: %s of %s timed out (%s); asking again as %d + %d days",
            customer_id,
            source,
            window.describe(),
            err.cause,
            days // 2,
            days - days // 2,
        )
    middle = window.start.add(days=days // 2)
    first = fetch_window(hook, source, customer_id, DayWindow(window.start, middle))
    return first + fetch_window(hook, source, customer_id, DayWindow(middle, window.end))


def _day_timed_out(
    error: MetronomeGatewayTimeoutError, source: Source, customer_id: str, window: DayWindow
) -> MetronomeGatewayTimeoutError:
    return MetronomeGatewayTimeoutError(
        f"{source} of customer {customer_id} for {window.describe()} timed out even asked one day at a "
        f"time ({error.cause}); nothing was written. A single day of this customer is more than Metronome "
        "answers in time: raise the connection's timeout extra if it is below the gateway's 59 s, or "
        "retry the task later",
        status_code=error.status_code,
        method=error.method,
        path=error.path,
    )


def days_of_objects(
    objects: Iterable[SourceObject], window: DayWindow, source: Source, customer_id: str
) -> DayObjects:
    """Pair each object with its UTC day, in day order, or raise if the answer does not tile the window."""
    first, end = window.first_day, window.end.date()
    seen: set[tuple[dt.date, str]] = set()
    paired: DayObjects = []
    in_order = True
    for item in objects:
        day = _whole_day(item, source, customer_id)
        if isinstance(item, InvoiceBreakdown) and item.customer_id.lower() != customer_id.lower():
            raise _bad_window(source, customer_id, f"an invoice of customer {item.customer_id} for {day}")
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
    "DAYS_PER_PAGE",
    "CustomerListing",
    "CustomerResult",
    "DayObjects",
    "FetchProgress",
    "TransientBudget",
    "days_of_objects",
    "evidence_window",
    "fetch_customers",
    "fetch_window",
    "is_skippable_customer_error",
    "name_customers",
]
