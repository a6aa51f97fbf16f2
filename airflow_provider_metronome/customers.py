"""The customers of a window: every customer that can have costs in it, each exactly once.

A customer can have costs on the days it existed: from its ``created_at`` to its ``archived_at``.
So the customers of a window ``[start, end)`` are the active ones, plus the archived ones whose
``archived_at`` is after ``start``; a customer created at or after ``end`` is left out, and so is
one archived at or before ``start``. Metronome lists active and archived customers separately
(``only_archived``), so this takes two listings; a customer archived between them shows in both and
counts once.

Each customer's :class:`Lifetime` is also the first evidence of a day it has nothing billed on
(see :mod:`airflow_provider_metronome.engine.availability`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from airflow_provider_metronome.models import Customer
from airflow_provider_metronome.window import DayWindow, to_utc

ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Lifetime:
    """When a customer existed: ``[created_at, archived_at)``, None for an open end."""

    created_at: dt.datetime | None = None
    archived_at: dt.datetime | None = None

    @classmethod
    def of(cls, customer: Customer) -> Lifetime:
        return cls(_moment(customer.created_at), _moment(customer.archived_at))

    def covers(self, day: dt.date) -> bool:
        """Whether the customer existed at some moment of the UTC ``day``."""
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        return (self.created_at is None or self.created_at < start + ONE_DAY) and (
            self.archived_at is None or self.archived_at > start
        )

    def spans(self, window: DayWindow) -> bool:
        """Whether the customer existed on every moment of ``window``."""
        return (self.created_at is None or self.created_at <= window.start) and (
            self.archived_at is None or self.archived_at >= window.end
        )

    def overlaps(self, window: DayWindow) -> bool:
        """Whether the customer existed at some moment of ``window``."""
        return (self.created_at is None or self.created_at < window.end) and (
            self.archived_at is None or self.archived_at > window.start
        )


@dataclass(frozen=True)
class WindowCustomers:
    """The customers of one window, sorted by id (the order every task writes customers in).

    :param ids: Each customer that can have costs in the window, once.
    :param lifetimes: The lifetime of each customer created or archived inside the window, by id (the
        others existed on every day of it; kept out so that memory stays small).
    :param groups: How many came from each listing: ``active`` and ``archived``, and how many were left
        out: ``created_after_window`` and ``archived_before_window``.
    """

    ids: list[str]
    lifetimes: dict[str, Lifetime] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls, window: DayWindow, active: Iterable[Customer], archived: Iterable[Customer]
    ) -> WindowCustomers:
        """The window's customers from the two listings (a customer in both counts once, as archived)."""
        listing = WindowListing(window, active, archived)
        for _ in listing:
            pass
        return listing.customers

    @classmethod
    def settle(cls, window: DayWindow, listed: Mapping[str, tuple[str, Lifetime | None]]) -> WindowCustomers:
        """The window's customers from what was listed: id -> (listing, lifetime; None: the whole window)."""
        groups = dict.fromkeys(("active", "archived", "created_after_window", "archived_before_window"), 0)
        kept: list[str] = []
        lifetimes: dict[str, Lifetime] = {}
        for customer_id, (group, lifetime) in listed.items():
            if lifetime is None or lifetime.overlaps(window):
                kept.append(customer_id)
                groups[group] += 1
                if lifetime is not None:
                    lifetimes[customer_id] = lifetime
            elif lifetime.created_at is not None and lifetime.created_at >= window.end:
                groups["created_after_window"] += 1
            else:
                groups["archived_before_window"] += 1
        return cls(sorted(kept), lifetimes, groups)

    def describe(self) -> str:
        """One log line: how many customers, from where, and how many were left out."""
        groups = self.groups
        line = (
            f"{len(self.ids)} customer(s) can have costs in the window: {groups.get('active', 0)} active, "
            f"{groups.get('archived', 0)} archived after its start"
        )
        left_out = groups.get("created_after_window", 0) + groups.get("archived_before_window", 0)
        if left_out:
            line += (
                f"; left out {groups.get('created_after_window', 0)} created after it and "
                f"{groups.get('archived_before_window', 0)} archived before it"
            )
        return line


class WindowListing:
    """The customers of a window while the two listings are read, so that fetching need not wait for them.

    Iterating reads the listings (active, then archived) and yields each customer's id once, as soon as
    a listing shows it and its lifetime does not rule the window out, in listing order. Once iterated to
    the end, :attr:`customers` is the window's set, exactly as :meth:`WindowCustomers.of` makes it: a
    customer yielded may still be left out there (shown active, then archived before the window's start
    by the time the archived listing is read), and only that set says who is written, and in what order.
    """

    def __init__(self, window: DayWindow, active: Iterable[Customer], archived: Iterable[Customer]) -> None:
        self.window = window
        self._listings = (("active", active), ("archived", archived))
        self._customers: WindowCustomers | None = None

    def __iter__(self) -> Iterator[str]:
        listed: dict[str, tuple[str, Lifetime | None]] = {}
        yielded: set[str] = set()
        for group, customers in self._listings:
            for customer in customers:
                customer_id = customer.id.lower()
                known = Lifetime.of(customer)
                # Most customers existed on every day of the window: None stands for them.
                lifetime = None if known.spans(self.window) else known
                listed[customer_id] = (group, lifetime)
                if customer_id not in yielded and (lifetime is None or lifetime.overlaps(self.window)):
                    yielded.add(customer_id)
                    yield customer_id
        self._customers = WindowCustomers.settle(self.window, listed)

    @property
    def customers(self) -> WindowCustomers:
        """The window's customers; only once the listing was iterated to its end."""
        if self._customers is None:
            raise RuntimeError("the customer listing has not been read to its end yet")
        return self._customers

    @property
    def ids(self) -> list[str]:
        """The window's customer ids, sorted: the order every task writes customers in."""
        return self.customers.ids


def _moment(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return to_utc(text, name="customer timestamp")
    except ValueError:
        # A timestamp that cannot be read says nothing: the customer is kept and asked.
        return None


__all__ = ["Lifetime", "WindowCustomers", "WindowListing"]
