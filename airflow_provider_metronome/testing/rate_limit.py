"""The simulator's optional rate limit: a token bucket per API (bearer) token."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from airflow_provider_metronome.testing.messages import Headers

RetryAfter = Literal["seconds", "ms"]
"""How a throttled answer says when to come back: ``Retry-After`` in whole seconds, or ``retry-after-ms``."""


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per API (bearer) token: ``rate`` requests per second, up to ``burst`` at once.

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

    @property
    def headers(self) -> Headers:
        """The retry hint of the 429: rounded up, so a client that obeys it always finds a request."""
        if self.style == "seconds":
            return (("Retry-After", str(math.ceil(self.wait))),)
        if self.style == "ms":
            return (("retry-after-ms", str(math.ceil(self.wait * 1000))),)
        return ()


class RateLimiter:
    """Token buckets keyed by API token, on the monotonic clock; safe to share between threads."""

    def __init__(self, limit: RateLimit | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._limit = limit
        self._buckets: dict[str, tuple[float, float]] = {}
        """Per token: (requests left, when that was last worked out)."""

    @property
    def limit(self) -> RateLimit | None:
        return self._limit

    def configure(self, limit: RateLimit | None) -> None:
        """Apply ``limit`` from now on; buckets keep what they hold (capped), or restart full after None."""
        with self._lock:
            now, old = self._clock(), self._limit
            if limit is None or old is None:
                self._buckets.clear()
            else:
                # What was earned so far was earned at the old rate; the new one only counts from now.
                self._buckets = {
                    token: (min(limit.capacity, _refilled(old, left, since, now)), now)
                    for token, (left, since) in self._buckets.items()
                }
            self._limit = limit

    def admit(self, token: str) -> Refusal | None:
        """None when ``token`` may make a request (spending one), else why it may not."""
        with self._lock:
            limit = self._limit
            if limit is None:
                return None
            now = self._clock()
            left, since = self._buckets.get(token, (limit.capacity, now))
            left = _refilled(limit, left, since, now)
            if left >= 1:
                self._buckets[token] = (left - 1, now)
                return None
            # A refused request spends nothing, so a client that keeps knocking is not starved forever.
            self._buckets[token] = (left, now)
        return Refusal((1 - left) / limit.rate, limit.retry_after)


def _refilled(limit: RateLimit, left: float, since: float, now: float) -> float:
    return min(limit.capacity, left + (now - since) * limit.rate)
