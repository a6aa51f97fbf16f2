"""The simulator's optional rate limits: the organisation's, per API token and endpoint, and per customer.

Metronome tells the two apart in the 429's ``X-Metronome-Rate-Limit-Type`` header: ``client`` when the
organisation's limit for the endpoint is exhausted, ``customer`` when the targeted customer's is.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from airflow_provider_metronome.testing.messages import Headers

LIMIT_TYPE_HEADER = "X-Metronome-Rate-Limit-Type"
EVERY_CUSTOMER = "*"
"""The key of :attr:`RateLimiter.customer_limits` that limits every customer without a limit of its own."""

LimitType = Literal["client", "customer"]
"""Which limit refused a request: the organisation's for the endpoint, or the targeted customer's."""

RetryAfter = Literal["seconds", "ms"]
"""How a throttled answer says when to come back: ``Retry-After`` in whole seconds, or ``retry-after-ms``."""


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``rate`` requests per second, up to ``burst`` at once.

    As the organisation's limit there is one bucket per API (bearer) token and endpoint (the customer
    listing, costs, breakdowns); as a customer's limit, one per token and customer.

    Requests beyond it are answered 429 ``{"message": "Too Many Requests"}``, with no retry header (as
    Metronome does: the default) or with ``Retry-After`` (whole seconds, rounded up) or ``retry-after-ms``
    giving the time until the bucket holds a request again. ``burst`` defaults to ``rate`` (at least 1).
    """

    rate: float
    burst: float | None = None
    retry_after: RetryAfter | None = None

    def __post_init__(self) -> None:
        if not 0 < self.rate < math.inf:
            raise ValueError(f"rate must be positive and finite, got {self.rate}")
        if self.burst is None:
            object.__setattr__(self, "burst", max(1.0, float(self.rate)))
        elif not 1 <= self.burst < math.inf:
            raise ValueError(f"burst must be at least 1 and finite, got {self.burst}")
        if self.retry_after not in (None, *get_args(RetryAfter)):
            raise ValueError(f"retry_after must be None, 'seconds' or 'ms', got {self.retry_after!r}")

    @property
    def capacity(self) -> float:
        """The bucket size: ``burst`` once defaulted."""
        return float(self.rate if self.burst is None else self.burst)


@dataclass(frozen=True)
class Refusal:
    """A request the rate limit refused: how long until its bucket holds one again, and how to say so."""

    wait: float
    style: RetryAfter | None
    limit_type: LimitType = "client"

    @property
    def headers(self) -> Headers:
        """Which limit refused, and the retry hint rounded up, so a client that obeys it always finds a request."""
        scope = ((LIMIT_TYPE_HEADER, self.limit_type),)
        if self.style == "seconds":
            return (*scope, ("Retry-After", str(math.ceil(self.wait))))
        if self.style == "ms":
            return (*scope, ("retry-after-ms", str(math.ceil(self.wait * 1000))))
        return scope


class _Buckets:
    """Token buckets keyed by (token, what they limit); guarded by the :class:`RateLimiter`'s lock."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], tuple[float, float]] = {}
        """Per key: (requests left, when that was last worked out)."""

    def left(self, limit: RateLimit, key: tuple[str, str], now: float) -> float:
        held, since = self._held.get(key, (limit.capacity, now))
        return _refilled(limit, held, since, now)

    def keep(self, key: tuple[str, str], left: float, now: float) -> None:
        self._held[key] = (left, now)

    def rescale(self, limits: Callable[[str], tuple[RateLimit | None, RateLimit | None]], now: float) -> None:
        """Move each bucket from its old limit to its new one (``limits`` of what it limits).

        A bucket keeps what it holds (capped to the new burst), or restarts full when either is None.
        """
        for key, (held, since) in list(self._held.items()):
            old, new = limits(key[1])
            if old == new:
                continue
            if new is None or old is None:
                del self._held[key]
            else:
                # What was earned so far was earned at the old rate; the new one only counts from now.
                self._held[key] = (min(new.capacity, _refilled(old, held, since, now)), now)


class RateLimiter:
    """The organisation's buckets (per token and endpoint) and the customers' (per token and customer).

    On the monotonic clock; safe to share between threads.
    """

    def __init__(
        self,
        limit: RateLimit | None,
        clock: Callable[[], float] = time.monotonic,
        customer_limits: Mapping[str, RateLimit] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._limit = limit
        self._customer_limits = {_customer_key(key): value for key, value in (customer_limits or {}).items()}
        self._endpoints = _Buckets()
        self._customers = _Buckets()

    @property
    def limit(self) -> RateLimit | None:
        return self._limit

    @property
    def customer_limits(self) -> dict[str, RateLimit]:
        """The customers' limits by customer id, :data:`EVERY_CUSTOMER` for every customer without its own."""
        with self._lock:
            return dict(self._customer_limits)

    def configure(self, limit: RateLimit | None) -> None:
        """Apply ``limit`` from now on; buckets keep what they hold (capped), or restart full after None."""
        with self._lock:
            old, self._limit = self._limit, limit
            self._endpoints.rescale(lambda endpoint: (old, limit), self._clock())

    def configure_customer(self, customer_id: str, limit: RateLimit | None) -> None:
        """Limit one customer (or, as :data:`EVERY_CUSTOMER`, every customer without a limit of its own)."""
        key = _customer_key(customer_id)
        with self._lock:
            before = dict(self._customer_limits)
            if limit is None:
                self._customer_limits.pop(key, None)
            else:
                self._customer_limits[key] = limit
            after = self._customer_limits
            self._customers.rescale(
                lambda customer: (self._of(before, customer), self._of(after, customer)), self._clock()
            )

    def admit(self, token: str, endpoint: str = "", customer_id: str | None = None) -> Refusal | None:
        """None when ``token`` may make a request to ``endpoint`` (for ``customer_id``), spending one.

        A refused request spends nothing, from neither bucket, so a client that keeps knocking is not
        starved forever. When both are empty the organisation's limit is the one named.
        """
        with self._lock:
            now = self._clock()
            checks: list[tuple[_Buckets, RateLimit, tuple[str, str], LimitType]] = []
            if self._limit is not None:
                checks.append((self._endpoints, self._limit, (token, endpoint), "client"))
            if customer_id is not None:
                customer = customer_id.lower()
                customer_limit = self._of(self._customer_limits, customer)
                if customer_limit is not None:
                    checks.append((self._customers, customer_limit, (token, customer), "customer"))
            held = [(buckets, key, buckets.left(limit, key, now)) for buckets, limit, key, _ in checks]
            for buckets, key, left in held:
                buckets.keep(key, left, now)
            for (_, limit, _, kind), (_, _, left) in zip(checks, held, strict=True):
                if left < 1:
                    return Refusal((1 - left) / limit.rate, limit.retry_after, kind)
            for buckets, key, left in held:
                buckets.keep(key, left - 1, now)
        return None

    @staticmethod
    def _of(limits: Mapping[str, RateLimit], customer_id: str) -> RateLimit | None:
        return limits.get(customer_id, limits.get(EVERY_CUSTOMER))


def _customer_key(customer_id: str) -> str:
    return customer_id if customer_id == EVERY_CUSTOMER else customer_id.lower()


def _refilled(limit: RateLimit, left: float, since: float, now: float) -> float:
    return min(limit.capacity, left + (now - since) * limit.rate)
