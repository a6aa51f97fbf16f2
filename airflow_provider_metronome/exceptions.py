"""Errors raised by the Metronome provider.

Every error that comes from talking to Metronome is a :class:`MetronomeAPIError`, so one ``except``
catches them all; the subclasses say whether retrying later can help.
"""

from __future__ import annotations

from airflow_provider_metronome._compat import AirflowException


class MetronomeAPIError(AirflowException):
    """Metronome answered with an error, or could not be reached.

    :param message: Metronome's own ``message`` (or what went wrong, when there was no answer).
    :param status_code: HTTP status code, or None when no answer arrived.
    :param method: HTTP method of the failed request.
    :param path: URL path of the failed request (never the query string or headers).
    """

    def __init__(self, message: str, *, status_code: int | None = None, method: str = "", path: str = ""):
        self.message = message
        # Shadows AirflowException.status_code (a REST API default) with the answer's real status.
        self.status_code = status_code  # type: ignore[assignment]
        self.method = method
        self.path = path
        super().__init__(self._describe())

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (rate limit, server error, network)."""
        return False

    @property
    def cause(self) -> str:
        """What happened, for log lines: ``HTTP 503 on GET /v1/customers: message``."""
        return f"{self._status}{self._where}: {self.message}"

    @property
    def _status(self) -> str:
        return f"HTTP {self.status_code}" if self.status_code is not None else "no answer"

    @property
    def _where(self) -> str:
        return f" on {self.method} {self.path}" if self.path else ""

    def _describe(self) -> str:
        return f"Metronome API error ({self._status}){self._where}: {self.message}"


class MetronomeClientError(MetronomeAPIError):
    """A 4xx answer that retrying will not fix: bad parameter, bad token, unknown customer."""


class MetronomeAuthenticationError(MetronomeClientError):
    """401/403: the API token is missing, invalid or lacks access. Check the connection's password."""

    def _describe(self) -> str:
        return f"{super()._describe()} (check the API token in the Airflow connection's password field)"


class MetronomeNotFoundError(MetronomeClientError):
    """404: the customer (or path) does not exist for this token."""


class MetronomeTransientError(MetronomeAPIError):
    """A retryable failure (408, 409, 429, 5xx, timeout, dropped connection) that outlasted the retries."""

    @property
    def retryable(self) -> bool:
        return True


class MetronomeGatewayTimeoutError(MetronomeTransientError):
    """A 504, or no whole answer within ``timeout``: the request asked for more than Metronome answers in time.

    Raised after the retries, or at once for a caller that asks again in smaller pieces
    (:func:`~airflow_provider_metronome.hooks.retry.timeouts_not_retried`).
    """


class MetronomeRateLimitError(MetronomeTransientError):
    """The account's rate limit turned every request away for longer than ``rate_limit_timeout``."""


class MetronomeResponseError(MetronomeAPIError):
    """Metronome answered 2xx with a body that is not the documented JSON (malformed or a looping cursor)."""


def error_for_status(
    status_code: int, message: str, *, method: str, path: str, retried: bool = False
) -> MetronomeAPIError:
    """Build the exception that matches an HTTP error status.

    :param retried: the answer was retried until the retries ran out (the server's ``x-should-retry``
        can ask for that on any status), so it is transient whatever its status. Otherwise an error
        is transient only where the hook would have retried it.
    """
    error_class: type[MetronomeAPIError]
    if retried:
        error_class = MetronomeTransientError
    elif status_code in (401, 403):
        error_class = MetronomeAuthenticationError
    elif status_code == 404:
        error_class = MetronomeNotFoundError
    elif 400 <= status_code < 500 and status_code not in (408, 409, 429):
        error_class = MetronomeClientError
    else:
        # A status the hook would retry, answered with x-should-retry: false: the server says
        # retrying will not help, so it is not transient.
        error_class = MetronomeAPIError
    return error_class(message, status_code=status_code, method=method, path=path)
