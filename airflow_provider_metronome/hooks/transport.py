"""One HTTP attempt against Metronome: a pooled session, a bound on the attempt's whole time, and failures
named by their cause.

``requests`` bounds each socket read, not an answer: a server trickling a byte a second never trips
it. An attempt here reads the body itself, a chunk at a time, and gives up once ``timeout`` seconds
have passed since it was sent, connecting and every read together.
"""

from __future__ import annotations

import os
import ssl
import time
from collections import deque
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

import requests
import requests.auth
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from airflow_provider_metronome import __version__

CHUNK_BYTES = 64 * 1024
# Lists go as one comma-separated value, as Metronome's own SDK sends them.
QueryValue = str | int


class AttemptFailed(Exception):
    """An attempt that produced no usable answer.

    :param cause: What happened, in words a user can act on.
    :param retryable: Whether sending again may help (a timeout, a reset) or not (TLS verification).
    :param malformed: The server answered, but with a body that cannot be read as sent.
    :param timed_out: No whole answer within ``timeout``: what a gateway that gives up looks like from here.
    """

    def __init__(
        self, cause: str, *, retryable: bool, malformed: bool = False, timed_out: bool = False
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retryable = retryable
        self.malformed = malformed
        self.timed_out = timed_out


class BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>`` on every request; the token stays out of ``repr``."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(***)"


def new_session(token: str, base_url: str, pool_size: int) -> requests.Session:
    """A pooled, authenticated session whose environment settings are read once, now.

    ``requests`` would otherwise merge proxies, ``NO_PROXY`` and the CA bundle from the process
    environment into every request, a third of its CPU in deployments with many variables; and it
    would let ``~/.netrc`` replace the token.
    """
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(base_url)
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.auth = BearerAuth(token)
    session.headers.update(
        {
            "Accept": "application/json",
            "User-Agent": f"airflow-provider-metronome/{__version__} python-requests/{requests.__version__}",
        }
    )
    return session


def send(
    session: requests.Session,
    url: str,
    params: Mapping[str, QueryValue] | None,
    *,
    connect_timeout: float,
    timeout: float,
) -> requests.Response:
    """One GET whose answer, body included, arrives within ``timeout`` seconds, or :class:`AttemptFailed`."""
    deadline = time.monotonic() + timeout
    try:
        response = session.get(
            url, params=params, timeout=(connect_timeout, timeout), stream=True, allow_redirects=False
        )
    except requests.RequestException as err:
        raise _failure(err, url, connect_timeout, timeout) from None
    try:
        response._content = _read_body(response, deadline, timeout)
    except AttemptFailed:
        response.close()
        raise
    except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
        response.close()
        raise _failure(err, url, connect_timeout, timeout) from None
    return response


def _read_body(response: requests.Response, deadline: float, timeout: float) -> bytes:
    chunks: list[bytes] = []
    while True:
        if time.monotonic() > deadline:
            raise AttemptFailed(
                f"the answer took longer than timeout={timeout:g} s in all (the server sends it too slowly)",
                retryable=True,
                timed_out=True,
            )
        # read1 returns what one read brings, so a trickling server cannot hold us past the deadline.
        chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _failure(err: BaseException, url: str, connect_timeout: float, timeout: float) -> AttemptFailed:
    """Name the cause of a transport failure, and whether sending again may help."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    address = parts.netloc.rpartition("@")[2]
    chain = list(_causes(err))
    verification = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verification is not None or any(isinstance(e, ssl.SSLError) for e in chain):
        reason = verification.verify_message if verification is not None else _last_words(chain)
        return AttemptFailed(
            f"TLS verification of {host} failed ({reason}); check the connection's host, or point "
            "REQUESTS_CA_BUNDLE at the certificate authority that signs the server's certificate",
            retryable=False,
        )
    if any(
        isinstance(e, (requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError))
        for e in chain
    ):
        return AttemptFailed(
            f"the answer's body does not match its Content-Encoding ({_last_words(chain)})",
            retryable=False,
            malformed=True,
        )
    if any(isinstance(e, urllib3.exceptions.NameResolutionError) for e in chain):
        return AttemptFailed(f"the host name {host} could not be resolved (DNS)", retryable=True)
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return AttemptFailed(
            f"no connection to {address} within connect_timeout={connect_timeout:g} s", retryable=True
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return AttemptFailed(f"the connection to {address} was refused", retryable=True)
    if any(
        isinstance(e, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)) for e in chain
    ):
        return AttemptFailed(
            f"no data from {address} for timeout={timeout:g} s", retryable=True, timed_out=True
        )
    if any(isinstance(e, (ConnectionResetError, urllib3.exceptions.ProtocolError)) for e in chain):
        return AttemptFailed(
            f"the connection to {address} was reset or closed before a complete answer", retryable=True
        )
    if isinstance(err, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        return AttemptFailed(f"no answer from {address} ({_last_words(chain)})", retryable=True)
    return AttemptFailed(f"the request could not be sent ({type(err).__name__}: {err})", retryable=False)


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what caused it, through exception chaining and urllib3's ``reason`` attributes."""
    seen: set[int] = set()
    pending: deque[BaseException] = deque([err])
    while pending:
        current = pending.popleft()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))


def _last_words(chain: list[BaseException]) -> str:
    """The innermost cause's own message, without the wrappers' repetitions."""
    innermost = chain[-1]
    return f"{type(innermost).__name__}: {innermost}".rstrip(": ")
