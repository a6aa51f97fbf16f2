"""The availability rule: which days Metronome has produced, and which customers have nothing billed.

A customer without an object for a day of the window either waits for a day Metronome **has not
produced yet** (the account's day is late: nothing of it may be published as complete) or has
**nothing billed** that day (created later, archived, no contract or plan, a plan that starts or
ends inside the window): it never will, and the day is complete without it. :class:`DayEvidence`
tells them apart from what the run's answers already hold, without any extra request. For a
customer lacking day D, in this order:

1. its lifetime (``created_at`` .. ``archived_at``, known when the customers were listed) does not
   cover D: nothing billed;
2. it has an object for a later day: D was produced for it, so nothing billed;
3. another customer of the run has D: the account produced D, so nothing billed;
4. some customer has an object for a day before D (the day before the window counts: each customer
   is asked for it too when that costs no extra page, see
   :func:`~airflow_provider_metronome.engine.fetch.evidence_window`): the account was billing
   until D, so D is **not produced yet**;
5. otherwise no customer of the run was billed on or before D: nothing billed.

Its limit: a run whose every customer stopped being billed exactly on D (one customer whose plan
ends that day, say) reads as a day not produced yet; ``on_missing_days="accept"`` writes it.

A **window is available** when no day of it is "not produced yet". :func:`find_missing` asks
customers in order and stops as soon as it knows: once every day has been seen (usually after the
first customer), or at the first customer billed until a day it lacks (a waiting check: about one
request). That customer is asked first at the next check, before the (paginated) customer listing.

With ``skip_customer_errors`` (the sensor's ``on_customer_error="skip"``, the operator's rule) a
customer that answers a 4xx other than 401/403 (``/costs`` for a plan with a UNIQUE-type billable
metric, an unknown customer) is left out and named in the log line instead of failing the check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence, Set
from contextlib import closing
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, Protocol

from airflow_provider_metronome.customers import Lifetime
from airflow_provider_metronome.engine.fetch import DayObjects, fetch_customers, name_customers
from airflow_provider_metronome.exceptions import MetronomeAPIError
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.vocabulary import DEFAULT_MAX_WORKERS, CustomerErrorPolicy, Source
from airflow_provider_metronome.window import MAX_DESCRIBED_RUNS, DayWindow, describe_days


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
    :param missing: For each day Metronome has not produced yet, the customers found lacking it.
    :param skipped: Customers left out because they answered a 4xx other than 401/403 (only when
        customer errors are skipped), with Metronome's message.
    :param checked: How many customers were asked, when fewer than all (the check stopped once it
        knew, or asked a sample); None when every customer was asked.
    :param listed: False when the check stopped before listing the customers (the customer missing
        a day at the last check still misses it), so ``customer_ids`` holds that customer alone.
    :param not_billed: For each day, the customers asked that have nothing billed on it.
    """

    window: DayWindow
    source: Source
    customer_ids: tuple[str, ...]
    missing: Mapping[dt.date, tuple[str, ...]]
    skipped: Mapping[str, str] = field(default_factory=dict)
    checked: int | None = None
    listed: bool = True
    not_billed: Mapping[dt.date, tuple[str, ...]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when Metronome has produced every day of the window."""
        return not self.missing

    @property
    def first_missing(self) -> str | None:
        """A customer billed until a day it still lacks (the one to ask first next time), or None."""
        return next((ids[0] for ids in self.missing.values() if ids), None)

    def summary(self) -> str:
        """One log line: what is still missing, e.g. ``2 of 40 customers still without 2024-01-05 (costs).``"""
        total = len(self.customer_ids)
        if not total:
            line = f"No customers to wait for; {self.window.describe()} counts as available"
        elif self.complete:
            if self.checked is not None:
                asked = f"{self.checked} of {_customers(total)}"
            else:
                asked = "the one customer" if total == 1 else f"all {total} customers"
            line = f"Metronome has produced {self.window.describe()}: asked {asked}"
            if self.checked is not None:
                line += (
                    ", enough since a day is produced for the whole account (the fetch checks every customer)"
                )
            not_billed = {cid for ids in self.not_billed.values() for cid in ids}
            if not_billed:
                line += f"; {_customers(len(not_billed))} with nothing billed on some day"
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


class DayEvidence:
    """The rule of the module docstring, fed one customer's result at a time.

    :param window: The window the results are for.
    :param lifetimes: Each customer's lifetime, when the customers were listed.
    """

    def __init__(self, window: DayWindow, lifetimes: Mapping[str, Lifetime] | None = None) -> None:
        self.window = window
        self.lifetimes = lifetimes or {}
        self.present: set[dt.date] = set()
        self._pending: dict[dt.date, list[str]] = {}
        self._not_billed: dict[dt.date, list[str]] = {}

    def add(self, customer_id: str, missing_days: Sequence[dt.date], present_days: Set[dt.date]) -> None:
        """One customer's answer: the window days it lacks, and every day it has."""
        lifetime = self.lifetimes.get(customer_id)
        last = max(present_days, default=None)
        for day in missing_days:
            settled = (lifetime is not None and not lifetime.covers(day)) or (last is not None and last > day)
            (self._not_billed if settled else self._pending).setdefault(day, []).append(customer_id)
        self.present |= present_days

    def waits_on(self, customer_id: str, missing_days: Sequence[dt.date], present_days: Set[dt.date]) -> bool:
        """Whether this customer, billed until a day it lacks that nobody has yet, says "not produced"."""
        lifetime = self.lifetimes.get(customer_id)
        first = min(present_days, default=None)
        last = max(present_days, default=None)
        return any(
            first is not None
            and first < day
            and not (last is not None and last > day)
            and not (lifetime is not None and not lifetime.covers(day))
            and day not in self.present
            for day in missing_days
        )

    @property
    def every_day_seen(self) -> bool:
        return all(day in self.present for day in self.window.iter_days())

    def settle(self) -> tuple[dict[dt.date, list[str]], dict[dt.date, list[str]]]:
        """``(not produced yet, nothing billed)``: for each day, the customers lacking it, in the order given."""
        earliest = min(self.present, default=None)
        not_yet: dict[dt.date, list[str]] = {}
        not_billed = {day: list(ids) for day, ids in self._not_billed.items()}
        for day, ids in self._pending.items():
            produced = day in self.present or earliest is None or earliest > day
            (not_billed if produced else not_yet).setdefault(day, []).extend(ids)
        return (
            {day: sorted(ids) for day, ids in sorted(not_yet.items())},
            {day: sorted(ids) for day, ids in sorted(not_billed.items())},
        )


@dataclass(frozen=True)
class AvailabilityQuery:
    """What one check asks.

    :param customer_ids: Validated ids, or None for every customer of the window (listed by the check).
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


class WaitsForDays(Protocol):
    """What a sensor and its trigger both carry: the parameters of the query they repeat."""

    source: Source
    max_workers: int
    on_customer_error: CustomerErrorPolicy
    sample_customers: int | None


def availability_query(
    waiter: WaitsForDays, customer_ids: Sequence[str] | None, window: DayWindow, first: str | None
) -> AvailabilityQuery:
    """The query of one check by a sensor or a trigger: the one place their parameters become a query.

    :param first: The customer missing a day at the previous check, asked first.
    """
    return AvailabilityQuery(
        customer_ids,
        window,
        waiter.source,
        max_workers=waiter.max_workers,
        skip_customer_errors=waiter.on_customer_error == "skip",
        first=first,
        sample=waiter.sample_customers,
    )


def find_missing(hook: MetronomeHook, query: AvailabilityQuery) -> Availability:
    """Ask Metronome whether every day of the window is produced, stopping as soon as the answer is known.

    :raises MetronomeAPIError: the first customer's error, in the order asked.
    """
    customer_ids, window, source, first = query.customer_ids, query.window, query.source, query.first
    skipped: dict[str, str] = {}
    asked: list[str] = []
    waiting_on: str | None = None
    evidence = DayEvidence(window)

    def ask(batch: Sequence[str], workers: int) -> bool:
        """Ask ``batch`` in order; True once the answer is known (a customer waits, or every day is seen)."""
        nonlocal waiting_on
        results = fetch_customers(
            hook,
            batch,
            window,
            source,
            _nothing,
            max_workers=workers,
            skip_customer_errors=query.skip_customer_errors,
            # A check that fails transiently is simply made again later.
            retry_transient=False,
        )
        with closing(results):
            for result in results:
                asked.append(result.customer_id)
                if result.skipped is not None:
                    skipped[result.customer_id] = result.skipped.message
                    continue
                waits = evidence.waits_on(result.customer_id, result.missing_days, result.present_days)
                evidence.add(result.customer_id, result.missing_days, result.present_days)
                if waits:
                    waiting_on = result.customer_id
                    return True
                if evidence.every_day_seen:
                    return True
        return False

    # While the day is not there, the customer that waited on it last time answers for everyone in
    # one request, before the (paginated) customer listing.
    if customer_ids is None and first is not None and ask([first], 1) and waiting_on is not None:
        return _outcome(
            query,
            (first,),
            evidence=evidence,
            waiting_on=waiting_on,
            skipped=skipped,
            asked=asked,
            listed=False,
        )
    if customer_ids is None:
        customers = hook.list_window_customers(window.start, window.end)
        ids, evidence.lifetimes = customers.ids, customers.lifetimes
    else:
        ids = list(customer_ids)
    order = [cid for cid in asking_order(ids, first, query.sample) if cid not in asked]
    if not evidence.every_day_seen and not ask(order[:1], 1):
        ask(order[1:], query.max_workers)
    waited_for = tuple(cid for cid in ids if cid not in skipped)
    return _outcome(
        query,
        waited_for,
        evidence=evidence,
        waiting_on=waiting_on,
        skipped=skipped,
        asked=asked,
        total=len(ids),
    )


def _outcome(
    query: AvailabilityQuery,
    waited_for: tuple[str, ...],
    *,
    evidence: DayEvidence,
    waiting_on: str | None,
    skipped: Mapping[str, str],
    asked: Sequence[str],
    total: int | None = None,
    listed: bool = True,
) -> Availability:
    not_yet, not_billed = evidence.settle()
    missing = {day: tuple(ids) for day, ids in not_yet.items()}
    if waiting_on is not None:
        missing = {day: (waiting_on,) for day in query.window.iter_days() if day not in evidence.present}
    checked = None if total is not None and len(asked) >= total else len(asked)
    return Availability(
        query.window,
        query.source,
        waited_for,
        missing,
        skipped,
        checked,
        listed,
        {day: tuple(ids) for day, ids in not_billed.items()},
    )


def asking_order(ids: Sequence[str], first: str | None, sample: int | None) -> list[str]:
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


def query_availability(
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
