"""HTTP messages as the simulator's parts hand them on: the request read, the answer to write, API errors."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

from airflow_provider_metronome.testing import values as value_faults

DEFAULT_TOKEN = "metronome-simulator-token"
# A non-negative decimal integer, as a Content-Length or a query's limit is written.
DIGITS = re.compile(r"[0-9]+")

Headers = tuple[tuple[str, str], ...]


def reason(code: int) -> str:
    """The status phrase of ``code`` ("Unknown" for codes HTTP does not name)."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


@dataclass(frozen=True)
class Request:
    """A request as the server read it."""

    method: str
    target: str
    """The request target as sent: path and query, still quoted."""
    authorization: str | None
    body: bytes | None
    """The body (empty when none was sent); None when it was not read (chunked, or too long)."""
    connection_id: int


@dataclass(frozen=True)
class Response:
    """An answer for the server to write."""

    status: int
    body: bytes = b""
    headers: Headers = ()
    drop: bool = False
    """Close the connection without answering."""
    throttled: bool = False
    seconds_per_byte: float = 0.0
    """Above zero, the body is trickled out a byte at a time (Fault.trickle)."""
    content_type: str = "application/json"


class ApiError(Exception):
    """An error answer ``{"message": message}``, raised wherever the request is found wanting."""

    def __init__(self, status: int, message: str, headers: Headers = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        return json_response(self.status, {"message": self.message}, self.headers)


def json_response(
    status: int, payload: object, headers: Headers = (), *, throttled: bool = False
) -> Response:
    return Response(status, value_faults.dumps(payload), headers, throttled=throttled)


def accepted_token(authorization: str | None, tokens: Collection[str]) -> str | None:
    """The bearer token of an ``Authorization`` header when it is one of ``tokens``, else None."""
    scheme, _, credentials = (authorization or "").partition(" ")
    credentials = credentials.strip()
    return credentials if scheme.lower() == "bearer" and credentials in tokens else None


@dataclass(frozen=True)
class Incoming:
    """A ``/v1`` request, parsed."""

    method: str
    target: str
    """The request target as sent: path and query, still quoted."""
    path: str
    query: dict[str, list[str]]
    token: str | None
    """The bearer token when it is an accepted one, else None (never logged)."""

    @classmethod
    def parse(cls, request: Request, tokens: Collection[str]) -> Incoming:
        split = urlsplit(request.target)
        return cls(
            method=request.method,
            target=request.target,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            token=accepted_token(request.authorization, tokens),
        )

    @property
    def authorized(self) -> bool:
        return self.token is not None
