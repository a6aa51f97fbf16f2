"""The availability check shared by :class:`MetronomeCostsSensor` and :class:`MetronomeCostsTrigger`.

A window is **available** when, for every requested customer, Metronome's answer for the window
(``hook.iter_source(source, customer, start, end)``) contains a record whose window starts on each
UTC day of it. A record counts for the UTC day on which its ``window_start`` falls: the costs
window's ``start_timestamp``, or an invoice breakdown's ``breakdown_start_timestamp`` (for
breakdowns, one invoice starting on a day is enough for that day).

A check stops at the first customer still missing a day: while Metronome has not produced a day, it
lacks it for (nearly) every customer, so one customer's answer says "not yet" as well as all of them.
Checking first the customer that was missing last time makes a waiting check cost about one request
(plus the customer listing when customers are not named). Once that customer has the day, the rest
are checked concurrently, or, with ``sample``, only a few of them spread over the list: enough for a
gate in front of a :class:`~airflow_provider_metronome.operators.costs.MetronomeCostsOperator`, which
verifies every customer's days itself before writing.

With ``skip_customer_errors`` (the sensor's ``on_customer_error="skip"``, the operator's rule) a
customer that answers a 4xx other than 401/403 (``/costs`` for a plan with a UNIQUE-type billable
metric, an unknown customer) is left out and named in the log line instead of failing the check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Protocol

from airflow_provider_metronome.exceptions import MetronomeAPIError
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.utils.fetch import DayObjects, fetch_customers, name_customers
from airflow_provider_metronome.utils.validation import DEFAULT_MAX_WORKERS, Source
from airflow_provider_metronome.utils.window import MAX_DESCRIBED_RUNS, DayWindow, describe_days


class CheckLog(Protocol):
    """What a check writes to: a stdlib logger, or Airflow 3's structured task/trigger logger."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


@dataclass(frozen=True)
class Availability:
    """The outcome of one check: which customers still lack which days of the window.

    :param window: The window checked.
    :param source: ``"costs"`` or ``"invoice_breakdowns"``.
    :param customer_ids: Every customer waited for, in request order.
    :param missing: For each day some customer still lacks (and only those days), the customers
        lacking it, in ``customer_ids`` order.
    :param skipped: Customers left out because they answered a 4xx other than 401/403 (only when
        customer errors are skipped), with Metronome's message.
    :param checked: How many customers were asked, when fewer than all (the check stopped at the
        first customer missing a day, or asked a sample); None when every customer was asked.
    :param listed: False when the check stopped before listing the customers (the customer missing
        a day at the last check still misses it), so ``customer_ids`` holds that customer alone.
    """

    window: DayWindow
    source: Source
    customer_ids: tuple[str, ...]
    missing: Mapping[dt.date, tuple[str, ...]]
    skipped: Mapping[str, str] = field(default_factory=dict)
    checked: int | None = None
    listed: bool = True

    @property
    def complete(self) -> bool:
        """True when every customer asked has every day of the window."""
        return not self.missing

    @property
    def first_missing(self) -> str | None:
        """A customer still lacking a day (the one to ask first next time), or None."""
        return next((ids[0] for ids in self.missing.values() if ids), None)

    def summary(self) -> str:
        """One log line: what is still missing, e.g. ``2 of 40 customers still without 2024-01-05 (costs).``"""
        total = len(self.customer_ids)
        if not total:
            line = f"No customers to wait for; {self.window.describe()} counts as available"
        elif self.complete and self.checked is not None:
            line = (
                f"{_customers(self.checked)} of {total} checked (a sample; the fetch verifies every "
                f"customer) {'has' if self.checked == 1 else 'have'} {self.window.describe()}"
            )
        elif self.complete:
            line = f"All {total} customers have" if total > 1 else "1 customer has"
            line += f" {self.window.describe()}"
        elif not self.listed:
            line = (
                f"Customer {self.first_missing} still without {describe_days(self.missing)}, as at "
                "the last check; the check stopped there, after one request"
            )
        elif self.checked is not None:
            line = (
                f"Customer {self.first_missing} still without {describe_days(self.missing)}; the "
                f"check stopped there, after asking {self.checked} of {_customers(total)}"
            )
        else:
            line = self._describe_missing()
        line += f" ({self.source})."
        if self.skipped:
            reason = next(iter(self.skipped.values()))
            line += (
                f" Skipped {_customers(len(self.skipped))} ({name_customers(tuple(self.skipped))}): {reason}"
            )
        return line

    def _describe_missing(self) -> str:
        """Consecutive days that lack the same customers are told together, the first few of them."""
        by_day = ((day, self.missing.get(day, ())) for day in self.window.iter_days())
        runs = [
            (lacking, [day for day, _ in days])
            for lacking, days in groupby(by_day, key=lambda pair: pair[1])
            if lacking
        ]
        total = len(self.customer_ids)
        parts = [_describe_run(lacking, days, total) for lacking, days in runs[:MAX_DESCRIBED_RUNS]]
        hidden = runs[MAX_DESCRIBED_RUNS:]
        if hidden:
            parts.append(f"and {sum(len(days) for _, days in hidden)} more day(s)")
        return "; ".join(parts)


def _customers(count: int) -> str:
    return f"{count} customer" if count == 1 else f"{count} customers"


def _describe_run(lacking: tuple[str, ...], days: list[dt.date], total: int) -> str:
    span = str(days[0]) if len(days) == 1 else f"{days[0]}..{days[-1]}"
    line = f"{len(lacking)} of {_customers(total)} still without {span}"
    if len(lacking) < total:
        line += f" ({name_customers(lacking)})"
    return line


@dataclass(frozen=True)
class AvailabilityQuery:
    """What one check asks.

    :param customer_ids: Validated ids, or None for every active customer (listed by the check).
    :param skip_customer_errors: Leave out customers that answer a 4xx other than 401/403.
    :param first: A customer to ask before the others (the one missing a day at the last check).
    :param sample: Ask at most this many customers, spread evenly over the list (``first`` among them).
    """

    customer_ids: Sequence[str] | None
    window: DayWindow
    source: Source
    max_workers: int = DEFAULT_MAX_WORKERS
    skip_customer_errors: bool = False
    first: str | None = None
    sample: int | None = None


def find_missing(hook: MetronomeHook, query: AvailabilityQuery) -> Availability:
    """Ask Metronome whether every customer has every day of the window, stopping at the first that does not.

    :raises MetronomeAPIError: the first customer's error, in the order asked.
    """
    customer_ids, window, source, first = query.customer_ids, query.window, query.source, query.first
    skipped: dict[str, str] = {}
    lacking: tuple[str, tuple[dt.date, ...]] | None = None
    asked = 0

    def ask(batch: Sequence[str], workers: int) -> bool:
        """Ask ``batch`` in order; True once a customer lacks a day."""
        nonlocal lacking, asked
        results = fetch_customers(
            hook,
            batch,
            window,
            source,
            _nothing,
            max_workers=workers,
            skip_customer_errors=query.skip_customer_errors,
        )
        with closing(results):
            for result in results:
                asked += 1
                if result.skipped is not None:
                    skipped[result.customer_id] = result.skipped.message
                elif result.missing_days:
                    lacking = (result.customer_id, result.missing_days)
                    return True
        return False

    # While the day is not there, the customer that lacked it last time answers for everyone in one
    # request, before the (paginated) customer listing.
    asked_first = customer_ids is None and first is not None
    if customer_ids is None and first is not None and ask([first], 1):
        return _outcome(window, source, (first,), lacking, skipped, checked=1, listed=False)
    ids = hook.list_active_customer_ids() if customer_ids is None else list(customer_ids)
    order = check_order(ids, first, query.sample)
    if asked_first:
        order = [cid for cid in order if cid != first]
    if not ask(order[:1], 1):
        ask(order[1:], query.max_workers)
    waited_for = tuple(cid for cid in ids if cid not in skipped)
    return _outcome(
        window, source, waited_for, lacking, skipped, checked=None if asked == len(ids) else asked
    )


def _outcome(
    window: DayWindow,
    source: Source,
    waited_for: tuple[str, ...],
    lacking: tuple[str, tuple[dt.date, ...]] | None,
    skipped: Mapping[str, str],
    *,
    checked: int | None,
    listed: bool = True,
) -> Availability:
    missing = {day: (lacking[0],) for day in lacking[1]} if lacking is not None else {}
    return Availability(window, source, waited_for, missing, skipped, checked, listed)


def check_order(ids: Sequence[str], first: str | None, sample: int | None) -> list[str]:
    """The customers to ask, in order: ``first`` (when among ``ids``), then the others, or a spread of them."""
    rest = [cid for cid in ids if cid != first]
    head = [first] if first is not None and len(rest) < len(ids) else []
    if sample is not None and len(head) + len(rest) > sample:
        wanted = sample - len(head)
        # Evenly spaced, the first and the last included: customers created at different times.
        rest = [rest[round(index * (len(rest) - 1) / max(wanted - 1, 1))] for index in range(wanted)]
        rest = list(dict.fromkeys(rest))
    return head + rest


def _nothing(customer_id: str, day_objects: DayObjects) -> None:
    """The check needs only which days are present, which the engine works out itself."""


def check_availability(
    metronome_conn_id: str, query: AvailabilityQuery, *, log: CheckLog
) -> Availability | None:
    """Run :func:`find_missing` once, through a fresh hook, and write the one log line about it.

    Returns None, after a warning, when Metronome is not answering (429, 5xx, timeouts, after the
    hook's own retries): the caller should check again later. Other errors propagate. The
    connection is read on every check, so a rotated token is picked up while waiting.
    """
    hook = MetronomeHook(metronome_conn_id)
    try:
        availability = find_missing(hook, query)
    except MetronomeAPIError as err:
        if not err.retryable:
            raise
        log.warning("Metronome is not answering (%s); will check again.", err.cause)
        return None
    finally:
        hook.close()
    log.info("%s", availability.summary())
    return availability
