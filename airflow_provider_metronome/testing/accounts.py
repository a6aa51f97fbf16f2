"""Customer lifecycles: when a customer is listed, archived, and billed through a plan or a contract.

One home for the rules the simulator serves by, so that its answers and its own model of them
(:meth:`MetronomeSimulator.billed_days`) cannot drift apart:

- a customer is listed once created (``created_at <= now``): as active until it is archived
  (``archived_at <= now``), then only with ``only_archived=true``;
- a UTC day D has costs (breakdowns) for a customer only if [D, D + 1 day) overlaps both its lifetime
  [created_at, archived_at) and its billing period [billing_start, billing_end), and it has a plan (a
  contract).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from airflow_provider_metronome.testing.data import (
    JsonObject,
    customer_name,
    customer_object,
    parse_timestamp,
    plain_utc,
    stable_rng,
    stable_uuid,
)

BilledSource = Literal["costs", "invoice_breakdowns"]
"""Where a customer's days are billed: ``/costs`` (needs a plan) or breakdowns (needs a contract)."""

# How far before the window add_lifecycle_customers creates the customers that exist throughout it.
LONG_BEFORE = timedelta(days=400)
ONE_DAY = timedelta(days=1)

LifecycleRole = Literal[
    "created_inside",
    "archived_inside",
    "archived_after",
    "archived_before",
    "created_after",
    "no_contract",
    "no_plan",
    "plan_ends_inside",
    "plan_starts_inside",
]


@dataclass(frozen=True)
class CustomerSpec:
    """What :meth:`MetronomeSimulator.add_customer` is told about a new customer; checked when built.

    Datetimes must be timezone-aware (they are kept in UTC); None billing bounds are open.
    """

    created_at: datetime
    archived_at: datetime | None = None
    plan: bool = True
    contract: bool = True
    billing_start: date | None = None
    billing_end: date | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "created_at", _aware("created_at", self.created_at))
        if self.archived_at is not None:
            archived_at = _aware("archived_at", self.archived_at)
            if archived_at <= self.created_at:
                raise ValueError("archived_at must be after created_at")
            object.__setattr__(self, "archived_at", archived_at)
        for field in ("billing_start", "billing_end"):
            value = getattr(self, field)
            if isinstance(value, datetime) or not (value is None or isinstance(value, date)):
                raise ValueError(f"{field} must be a date, got {value!r}")
        if (
            self.billing_start is not None
            and self.billing_end is not None
            and self.billing_end <= self.billing_start
        ):
            raise ValueError("billing_end must be after billing_start")


def _aware(field: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{field} must be a timezone-aware datetime, got {value!r}")
    return plain_utc(value)


@dataclass(frozen=True)
class Account:
    """One customer and its lifecycle. Immutable, so threads may share it."""

    pending: JsonObject
    """The customer as listed until it is archived (``archived_at`` null)."""
    archived: JsonObject
    """The customer as listed once archived (the same object when it never is)."""
    created_at: datetime
    archived_at: datetime | None
    plan: bool = True
    contract: bool = True
    billing_start: date | None = None
    billing_end: date | None = None

    @property
    def id(self) -> str:
        return str(self.pending["id"])

    @property
    def order(self) -> tuple[datetime, str]:
        """The listing order: by creation, then id."""
        return self.created_at, self.id

    def is_archived(self, now: datetime) -> bool:
        return self.archived_at is not None and self.archived_at <= now

    def listed(self, now: datetime, *, only_archived: bool) -> bool:
        """Whether ``GET /v1/customers`` lists it at ``now``, with or without ``only_archived``."""
        return self.created_at <= now and self.is_archived(now) == only_archived

    def as_listed(self, now: datetime) -> JsonObject:
        """The customer object at ``now``; shared, so never to be altered."""
        return self.archived if self.is_archived(now) else self.pending

    def billed_span(self, source: BilledSource) -> tuple[date, date | None] | None:
        """The days ``[first, end)`` with data from ``source`` (``end`` None: open); None when there are none.

        Lifetime and billing period are both intervals, so the days billed are one interval too.
        """
        if not (self.plan if source == "costs" else self.contract):
            return None
        first = self.created_at.date()
        if self.billing_start is not None:
            first = max(first, self.billing_start)
        ends = [end for end in (_day_after(self.archived_at), self.billing_end) if end is not None]
        end = min(ends, default=None)
        if end is not None and end <= first:
            return None
        return first, end

    def billed_days(self, source: BilledSource, start: date, end: date) -> list[date]:
        """The days of ``[start, end)`` that have data from ``source``."""
        span = self.billed_span(source)
        if span is None:
            return []
        first, stop = max(start, span[0]), end if span[1] is None else min(end, span[1])
        return [first + offset * ONE_DAY for offset in range((stop - first).days)]


def _day_after(moment: datetime | None) -> date | None:
    """The first day starting at or after ``moment``: the end of the days [D, D + 1) overlapping before it."""
    if moment is None:
        return None
    day = moment.date()
    return day if moment == datetime.combine(day, time(), timezone.utc) else day + ONE_DAY


def generated_account(customer: JsonObject) -> Account:
    """The account of a customer of the generated data set, which never changes plan or contract."""
    archived_at = customer["archived_at"]
    return Account(
        pending=_pending(customer),
        archived=customer,
        created_at=parse_timestamp(customer["created_at"]),
        archived_at=None if archived_at is None else parse_timestamp(archived_at),
    )


def added_account(seed: int, number: int, spec: CustomerSpec, *, sorts_first: bool = False) -> Account:
    """The account of the ``number``-th customer added (from 0); its id depends on ``seed`` and ``number`` only.

    ``sorts_first`` zeroes the id's first eight digits, so that it sorts before every other customer
    created at the same time.
    """
    customer_id = stable_uuid("added customer", seed, number)
    if sorts_first:
        customer_id = "00000000" + customer_id[8:]
    name = spec.name if spec.name is not None else customer_name(stable_rng("added customer", seed, number))
    archived = customer_object(
        customer_id, name, [f"cust_added_{number + 1:05d}"], spec.created_at, spec.archived_at
    )
    return Account(
        pending=_pending(archived),
        archived=archived,
        created_at=spec.created_at,
        archived_at=spec.archived_at,
        plan=spec.plan,
        contract=spec.contract,
        billing_start=spec.billing_start,
        billing_end=spec.billing_end,
    )


def _pending(customer: JsonObject) -> JsonObject:
    """``customer`` as listed before it is archived: ``archived_at`` null, last updated at its creation."""
    if customer["archived_at"] is None:
        return customer
    return {**customer, "archived_at": None, "updated_at": customer["created_at"]}


class Accounts:
    """Every customer, generated and added, in listing order.

    Readers take :attr:`ordered` or :meth:`get` without a lock: writers publish a new tuple and mapping
    whole, never editing the published ones.
    """

    def __init__(self, generated: Iterable[Account]) -> None:
        self._lock = threading.Lock()
        self._generated = tuple(generated)
        self._added: tuple[Account, ...] = ()
        self._publish(sorted(self._generated, key=lambda account: account.order))

    def _publish(self, ordered: list[Account]) -> None:
        # One assignment, so that a reader never sees the order of one version and the ids of another.
        self._published = tuple(ordered), {account.id: account for account in ordered}

    @property
    def ordered(self) -> tuple[Account, ...]:
        return self._published[0]

    def get(self, customer_id: str) -> Account | None:
        return self._published[1].get(customer_id)

    def replace_generated(self, generated: Iterable[Account]) -> None:
        """Swap the generated customers for others; added ones stay."""
        with self._lock:
            self._generated = tuple(generated)
            self._publish(sorted((*self._generated, *self._added), key=lambda account: account.order))

    def add(self, build: Callable[[int], Account]) -> Account:
        """Add ``build(n)``, where ``n`` counts the customers added before it."""
        with self._lock:
            account = build(len(self._added))
            if self.get(account.id) is not None:
                raise ValueError(f"customer {account.id} exists already")
            self._added = (*self._added, account)
            ordered = list(self.ordered)
            bisect.insort(ordered, account, key=lambda item: item.order)
            self._publish(ordered)
            return account


def lifecycle_specs(first_day: date, end_day: date) -> dict[LifecycleRole, CustomerSpec]:
    """One customer per role around the window ``[first_day, end_day)``, for :meth:`add_lifecycle_customers`."""
    if end_day <= first_day:
        raise ValueError("end_day must be after first_day")
    middle = first_day + timedelta(days=(end_day - first_day).days // 2)

    def at(day: date, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day, time(hour, minute), timezone.utc)

    long_before = at(first_day, 0) - LONG_BEFORE
    after = end_day + ONE_DAY
    return {
        "created_inside": CustomerSpec(at(middle, 9, 30), name="Created Inside Co."),
        "archived_inside": CustomerSpec(long_before, at(middle, 15), name="Archived Inside Co."),
        "archived_after": CustomerSpec(long_before, at(after, 12), name="Archived After Co."),
        "archived_before": CustomerSpec(long_before, at(first_day - ONE_DAY, 8), name="Archived Before Co."),
        "created_after": CustomerSpec(at(after, 6), name="Created After Co."),
        "no_contract": CustomerSpec(long_before, contract=False, name="No Contract Co."),
        "no_plan": CustomerSpec(long_before, plan=False, name="No Plan Co."),
        "plan_ends_inside": CustomerSpec(long_before, billing_end=middle, name="Plan Ends Inside Co."),
        "plan_starts_inside": CustomerSpec(long_before, billing_start=middle, name="Plan Starts Inside Co."),
    }
