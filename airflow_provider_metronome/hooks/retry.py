"""Which Metronome answers are retried, and how long to wait before the next attempt.

The policy follows Metronome's official Python SDK: 408, 409, every 5xx, timeouts and dropped
connections are retried; 400, 401, 403, 404 and 422 are not; a response header
``x-should-retry: true|false`` overrides that choice. 429 is not a failure but the account's rate
limit: it goes to the rate controller (:mod:`~airflow_provider_metronome.hooks.rate`) and does not
spend the retries. The wait is the server's ``retry-after-ms`` or ``Retry-After`` (seconds or an
HTTP date) when it gives one, capped at ``max_retry_wait``, else ``min(0.5 * 2**n, 8)`` seconds less
up to 25 % jitter.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import enum
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import requests

RETRYABLE_STATUSES = frozenset({408, 409})
# Which of Metronome's limits a 429 met: "client" (the organisation's, for the endpoint) or
# "customer" (the targeted customer's own).
RATE_LIMIT_TYPE_HEADER = "X-Metronome-Rate-Limit-Type"
THROTTLED_STATUS = 429
GATEWAY_TIMEOUT_STATUS = 504
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0


class Verdict(enum.Enum):
    """What to do with an answer."""

    DONE = "done"  # a success, or an error that retrying will not fix
    THROTTLED = "throttled"  # the account's rate limit: wait for the rate controller, then resend
    RETRY = "retry"  # a failure that may heal: resend while the retry budget lasts


_timeouts_not_retried: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "metronome_timeouts_not_retried", default=False
)


@contextlib.contextmanager
def timeouts_not_retried() -> Iterator[None]:
    """In this block a 504 or a timed-out attempt raises at once instead of being sent again whole.

    For a caller that retries with a smaller request (the fetch engine halves a window): the same
    request would only time out again, and each try can cost the gateway's whole timeout.
    """
    token = _timeouts_not_retried.set(True)
    try:
        yield
    finally:
        _timeouts_not_retried.reset(token)


def retries_timeouts() -> bool:
    """False inside :func:`timeouts_not_retried`."""
    return not _timeouts_not_retried.get()


def server_retry_after(response: requests.Response) -> float | None:
    """The wait the server asked for, in seconds, or None when it gave none (or an unusable one)."""
    headers = response.headers
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment.timestamp() - time.time()


def customer_limited(response: requests.Response) -> bool:
    """Whether a 429 says the targeted customer's own limit answered it, not the organisation's."""
    return response.headers.get(RATE_LIMIT_TYPE_HEADER, "").strip().lower() == "customer"


def backoff(retry_number: int) -> float:
    """Exponential backoff with downward jitter, as Metronome's SDK computes it (retry_number from 0)."""
    return min(INITIAL_BACKOFF * 2**retry_number, MAX_BACKOFF) * (1 - 0.25 * random.random())


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry a failed request and how long a server-requested wait may be.

    :param max_retries: retries after the first attempt (Metronome's SDK uses 2); 429 does not count.
    :param max_retry_wait: the longest ``Retry-After`` honoured, in seconds; longer requests wait this long.
    """

    # Every wait of a retry goes through here, so that tests can stand in for the clock.
    sleep: ClassVar[Callable[[float], None]] = staticmethod(time.sleep)

    max_retries: int = 2
    max_retry_wait: float = 60.0

    def verdict(self, response: requests.Response) -> Verdict:
        """The server's ``x-should-retry`` first, then the status."""
        status = response.status_code
        if status < 400:
            return Verdict.DONE
        override = response.headers.get("x-should-retry", "").strip().lower()
        if override == "false":
            return Verdict.DONE
        if status == THROTTLED_STATUS:
            return Verdict.THROTTLED
        if override == "true" or status in RETRYABLE_STATUSES or status >= 500:
            return Verdict.RETRY
        return Verdict.DONE

    def requested_wait(self, response: requests.Response) -> float | None:
        """The server's requested wait, capped at ``max_retry_wait``; None when it asked for none."""
        requested = server_retry_after(response)
        if requested is None or requested <= 0:
            return None
        return min(requested, self.max_retry_wait)

    def wait_before_retry(self, response: requests.Response | None, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (from 0) of a failed attempt."""
        requested = self.requested_wait(response) if response is not None else None
        return requested if requested is not None else backoff(retry_number)
