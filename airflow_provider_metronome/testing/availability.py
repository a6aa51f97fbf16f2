"""When a window is served: once the clock is past its end plus a delay, unless its day is withheld."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from airflow_provider_metronome.testing.accounts import Account, BilledSource
from airflow_provider_metronome.testing.data import WindowSize, plain_utc, utc, window_index, window_start


@dataclass(frozen=True)
class WithheldDays:
    """The days left out of the answers, as :attr:`MetronomeSimulator.withheld_days` reports them."""

    all_customers: tuple[date, ...]
    """Withheld from every customer, those added later too: not produced yet for the whole account."""
    customers: Mapping[str, tuple[date, ...]]
    """Withheld from one customer alone, by customer id."""


class Availability:
    """The clock, the delay after which a window is served, and the days withheld; safe to share."""

    def __init__(self, delay: timedelta, now: datetime | None) -> None:
        self.delay = delay
        self._frozen_now: datetime | None = None
        self.now = now
        self._lock = threading.Lock()
        # Readers go without the lock: writers replace a set (or the mapping) whole, never edit one.
        self._everyone: frozenset[date] = frozenset()
        self._customers: dict[str, frozenset[date]] = {}

    @property
    def now(self) -> datetime:
        """The current time (UTC): the frozen value if one was set, else the wall clock."""
        return self._frozen_now if self._frozen_now is not None else datetime.now(timezone.utc)

    @now.setter
    def now(self, value: datetime | None) -> None:
        if value is not None and value.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")
        self._frozen_now = None if value is None else plain_utc(value)

    def withhold(self, days: Iterable[date], customer_id: str | None) -> None:
        """Add ``days`` to those withheld from ``customer_id`` (None: from every customer)."""
        withheld = _days(days)
        with self._lock:
            if customer_id is None:
                self._everyone |= withheld
            else:
                self._customers[customer_id] = self._customers.get(customer_id, frozenset()) | withheld

    def release(self, days: Iterable[date], customer_id: str | None) -> None:
        """Serve ``days`` again to ``customer_id``, or (None) to every customer.

        Raises ValueError when one of them is withheld from every customer and ``customer_id`` is given:
        one customer cannot be let off a day the whole account lacks.
        """
        released = _days(days)
        with self._lock:
            if customer_id is None:
                self._everyone -= released
                kept = ((key, days - released) for key, days in self._customers.items())
                self._customers = {key: days for key, days in kept if days}
                return
            shared = sorted(released & self._everyone)
            if shared:
                listed = ", ".join(day.isoformat() for day in shared)
                raise ValueError(f"{listed} is withheld from every customer: release it for every customer")
            left = self._customers.get(customer_id, frozenset()) - released
            if left:
                self._customers[customer_id] = left
            else:
                self._customers.pop(customer_id, None)

    def clear(self, customer_id: str | None) -> None:
        """Serve again every day withheld from ``customer_id`` alone, or (None) every day withheld at all."""
        with self._lock:
            if customer_id is None:
                self._everyone = frozenset()
                self._customers = {}
            else:
                self._customers.pop(customer_id, None)

    def withheld(self) -> WithheldDays:
        with self._lock:
            everyone, customers = self._everyone, dict(self._customers)
        return WithheldDays(
            tuple(sorted(everyone)), {key: tuple(sorted(days)) for key, days in customers.items()}
        )

    def windows(
        self,
        start: datetime,
        end: datetime,
        size: WindowSize,
        now: datetime,
        *,
        account: Account,
        source: BilledSource,
    ) -> Sequence[int]:
        """Windows lying wholly inside ``[start, end)`` that ended at least :attr:`delay` before ``now``.

        Only windows of the days the customer is billed for by ``source`` count, and withheld days are
        left out.
        """
        span = account.billed_span(source)
        if span is None:
            return range(0)
        first_day, end_day = span
        last = min(
            window_index(end, size, ceil=False),
            window_index(now - self.delay, size, ceil=False),
            *(() if end_day is None else (window_index(utc(end_day), size, ceil=False),)),
        )
        first = max(window_index(start, size, ceil=True), window_index(utc(first_day), size, ceil=True))
        windows = range(first, last)
        withheld = self._everyone | self._customers.get(account.id, frozenset())
        if not withheld:
            # A range, not a list: requests may span decades of hourly windows.
            return windows
        return [index for index in windows if window_start(index, size).date() not in withheld]


def _days(days: Iterable[date]) -> frozenset[date]:
    """The UTC dates of ``days`` (dates, or datetimes of any time zone)."""
    return frozenset(utc(day).date() for day in days)
