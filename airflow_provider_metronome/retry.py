"""When and how long to wait before retrying a Metronome request.

The policy follows Metronome's official Python SDK: 408, 409, 429, every 5xx, timeouts and
dropped connections are retried; 400, 401, 403, 404 and 422 are not; a response header
``x-should-retry: true|false`` overrides that choice. The wait is the server's ``retry-after-ms``
or ``Retry-After`` (seconds or an HTTP date) when it gives one, capped at ``max_retry_wait``,
else ``min(0.5 * 2**n, 8)`` seconds less up to 25 % jitter. tenacity runs the loop.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

RETRYABLE_STATUSES = frozenset({408, 409, 429})
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 8.0
# A connection dropped or timed out before a complete answer arrived: safe to retry a GET.
RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class RetryableStatus(Exception):
    """An HTTP answer the policy wants retried; carries the response for the wait and the final error."""

    def __init__(self, response: requests.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def should_retry_status(response: requests.Response) -> bool:
    """Whether an error answer is worth retrying: the server's ``x-should-retry`` first, then the status."""
    override = response.headers.get("x-should-retry", "").strip().lower()
    if override in ("true", "false"):
        return override == "true"
    return response.status_code in RETRYABLE_STATUSES or response.status_code >= 500


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


def backoff(retry_number: int) -> float:
    """Exponential backoff with downward jitter, as Metronome's SDK computes it (retry_number from 0)."""
    return min(INITIAL_BACKOFF * 2**retry_number, MAX_BACKOFF) * (1 - 0.25 * random.random())


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry and how long a server-requested wait may be.

    :param max_retries: retries after the first attempt (Metronome's SDK uses 2).
    :param max_retry_wait: the longest ``Retry-After`` honoured, in seconds; longer requests wait this long.
    """

    max_retries: int = 2
    max_retry_wait: float = 60.0

    def wait_seconds(self, retry_state: RetryCallState) -> float:
        """Seconds to sleep before the next attempt."""
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, RetryableStatus):
            requested = server_retry_after(error.response)
            if requested is not None and requested > 0:
                return min(requested, self.max_retry_wait)
        return backoff(retry_state.attempt_number - 1)

    def retrying(
        self, *, before_sleep: Callable[[RetryCallState], None], sleep: Callable[[float], Any]
    ) -> Retrying:
        """A tenacity loop that re-raises the last error once the retries are spent."""
        return Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            retry=retry_if_exception(
                lambda error: isinstance(error, (RetryableStatus, *RETRYABLE_EXCEPTIONS))
            ),
            wait=self.wait_seconds,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
