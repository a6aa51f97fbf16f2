"""The availability check shared by :class:`MetronomeCostsSensor` and :class:`MetronomeCostsTrigger`.

A window is **available** when, for every requested customer, Metronome's answer for the window
(``hook.iter_source(source, customer, start, end)``) contains a record whose window starts on each
UTC day of it. A record counts for the UTC day on which its ``window_start`` falls: the costs
window's ``start_timestamp``, or an invoice breakdown's ``breakdown_start_timestamp`` (for
breakdowns, one invoice starting on a day is enough for that day).

With ``skip_customer_errors`` (the sensor's ``on_customer_error="skip"``, the operator's rule) a
customer that answers a 4xx other than 401/403 (``/costs`` for a plan with a UNIQUE-type billable
metric, an unknown customer) is left out and named in the log line instead of failing the check.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Protocol

from airflow_provider_metronome.arguments import DEFAULT_MAX_WORKERS, is_skippable_customer_error
from airflow_provider_metronome.exceptions import MetronomeAPIError, MetronomeClientError
from airflow_provider_metronome.hooks.metronome import MetronomeHook, Source
from airflow_provider_metronome.window import DayWindow, to_utc

# How many customer ids a log line names; more would drown the line.
MAX_NAMED_CUSTOMERS = 3
# How many runs of missing days a log line describes before summarising the rest.
MAX_DESCRIBED_RUNS = 3


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
    """

    window: DayWindow
    source: Source
    customer_ids: tuple[str, ...]
    missing: Mapping[dt.date, tuple[str, ...]]
    skipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every customer waited for has every day of the window."""
        return not self.missing

    def summary(self) -> str:
        """One log line: what is still missing, e.g. ``2 of 40 customers still without 2024-01-05 (costs).``"""
        total = len(self.customer_ids)
        if not total:
            line = f"No customers to wait for; {self.window.describe()} counts as available"
        elif self.complete:
            line = f"All {total} customers have" if total > 1 else "1 customer has"
            line += f" {self.window.describe()}"
        else:
            line = self._describe_missing()
        line += f" ({self.source})."
        if self.skipped:
            reason = next(iter(self.skipped.values()))
            line += f" Skipped {_customers(len(self.skipped))} ({_name(tuple(self.skipped))}): {reason}"
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


def _name(customer_ids: tuple[str, ...]) -> str:
    more = ", ..." if len(customer_ids) > MAX_NAMED_CUSTOMERS else ""
    return ", ".join(customer_ids[:MAX_NAMED_CUSTOMERS]) + more


def _describe_run(lacking: tuple[str, ...], days: list[dt.date], total: int) -> str:
    span = str(days[0]) if len(days) == 1 else f"{days[0]}..{days[-1]}"
    line = f"{len(lacking)} of {_customers(total)} still without {span}"
    if len(lacking) < total:
        line += f" ({_name(lacking)})"
    return line


def find_missing(
    hook: MetronomeHook,
    customer_ids: Sequence[str] | None,
    window: DayWindow,
    source: Source,
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
    skip_customer_errors: bool = False,
) -> Availability:
    """Ask Metronome which customers still lack which days of ``window``.

    The customers are read concurrently (at most ``max_workers`` at a time) through the one hook.

    :param customer_ids: Validated ids, or None for every active customer (listed now).
    :param skip_customer_errors: Leave out customers that answer a 4xx other than 401/403.
    :raises MetronomeAPIError: the first error that waiting cannot fix (400/401/403/404, a
        malformed answer) if there is one, else the first transient error (429, 5xx, no answer).
    """
    ids = [c.id for c in hook.iter_customers()] if customer_ids is None else list(customer_ids)
    if not ids:
        return Availability(window, source, (), {})
    # Read the connection once, before the threads race for it.
    _ = hook.settings
    with ThreadPoolExecutor(min(max_workers, len(ids)), thread_name_prefix="metronome-check") as pool:
        futures = {pool.submit(_days_present, hook, cid, window, source): cid for cid in ids}
        present, skipped = _collect(futures, skip_customer_errors=skip_customer_errors)
    waited_for = tuple(cid for cid in ids if cid not in skipped)
    missing: dict[dt.date, tuple[str, ...]] = {}
    for day in window.iter_days():
        lacking = tuple(cid for cid in waited_for if day not in present[cid])
        if lacking:
            missing[day] = lacking
    reasons = {cid: skipped[cid].message for cid in ids if cid in skipped}
    return Availability(window, source, waited_for, missing, reasons)


def _days_present(hook: MetronomeHook, customer_id: str, window: DayWindow, source: Source) -> set[dt.date]:
    records = hook.iter_source(source, customer_id, window.start, window.end)
    return {to_utc(record.window_start, name="window start").date() for record in records}


def _collect(
    futures: Mapping[Future[set[dt.date]], str], *, skip_customer_errors: bool
) -> tuple[dict[str, set[dt.date]], dict[str, MetronomeClientError]]:
    """Wait for every customer, or stop at the first error that will not go away by waiting.

    Returns the days present per customer, and the customers skipped for their errors.
    """
    present: dict[str, set[dt.date]] = {}
    skipped: dict[str, MetronomeClientError] = {}
    transient: MetronomeAPIError | None = None
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_EXCEPTION)
        for future in done:
            customer_id = futures[future]
            error = future.exception()
            if error is None:
                present[customer_id] = future.result()
            elif isinstance(error, MetronomeAPIError) and error.retryable:
                transient = transient or error
            elif skip_customer_errors and is_skippable_customer_error(error):
                skipped[customer_id] = error
            else:
                for other in pending:
                    other.cancel()
                raise error
    if transient is not None:
        raise transient
    return present, skipped


def check_availability(
    metronome_conn_id: str,
    customer_ids: Sequence[str] | None,
    window: DayWindow,
    source: Source,
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
    skip_customer_errors: bool = False,
    log: CheckLog,
) -> Availability | None:
    """Run :func:`find_missing` once, through a fresh hook, and write the one log line about it.

    Returns None, after a warning, when Metronome is not answering (429, 5xx, timeouts, after the
    hook's own retries): the caller should check again later. Other errors propagate. The
    connection is read on every check, so a rotated token is picked up while waiting.
    """
    hook = MetronomeHook(metronome_conn_id)
    # Per-customer page counts go to DEBUG, so that a check writes one INFO line.
    hook.iteration_log_level = logging.DEBUG
    try:
        availability = find_missing(
            hook,
            customer_ids,
            window,
            source,
            max_workers=max_workers,
            skip_customer_errors=skip_customer_errors,
        )
    except MetronomeAPIError as err:
        if not err.retryable:
            raise
        log.warning("Metronome is not answering (%s); will check again.", err.cause)
        return None
    finally:
        hook.close()
    log.info("%s", availability.summary())
    return availability
