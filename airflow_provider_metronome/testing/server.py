"""The simulator's HTTP/1.1 server: keep-alive connections, each served by a thread, optionally over TLS.

It knows nothing of Metronome: every request goes to the :data:`Application` it was given, and the
:class:`~airflow_provider_metronome.testing.messages.Response` that comes back is written in one piece
(or trickled out byte by byte).
"""

from __future__ import annotations

import itertools
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any

from airflow_provider_metronome.testing.messages import DIGITS, Request, Response, json_response, reason

# Bodies up to this size are read: the control endpoint reads them, /v1 drops them, and either way the
# keep-alive stream stays in step. A longer body (or a chunked one) is not read and closes the connection.
MAX_DISCARDED_BODY = 1 << 20
# Bounds a TLS handshake, which runs in the connection's thread: a silent client must not pin it forever.
TLS_HANDSHAKE_TIMEOUT = 10.0
# Threads serving a connection are named CONNECTION_THREAD_PREFIX + "<port>-<connection id>".
CONNECTION_THREAD_PREFIX = "metronome-simulator-connection-"

Application = Callable[[Request], Response]
"""What answers each request."""


class Server(ThreadingHTTPServer):
    """A thread per connection; it keeps track of its connections, so that stopping can close idle ones."""

    daemon_threads = True
    # Keep-alive connections may idle forever: stop() closes them instead of waiting for them.
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], application: Application, tls: ssl.SSLContext | None = None
    ) -> None:
        self.application = application
        self.tls = tls
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._connection_ids = itertools.count(1)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can stall for seconds.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        # Without TCP_NODELAY a small answer can wait ~40 ms for the client's delayed ACK.
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            # The handshake waits for the connection's own thread (_Handler.setup): done here, in the one
            # thread that accepts, a client that never speaks would stall every other connection.
            connection = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-answer is routine (timeouts, dropped pools), and so is one refusing the
        # certificate or speaking plain HTTP to the TLS port: socket and TLS errors are not worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def next_connection_id(self) -> int:
        with self._lock:
            return next(self._connection_ids)

    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                # The plain socket's shutdown: SSLSocket.shutdown also drops its TLS state under the feet
                # of the thread still reading from it.
                socket.socket.shutdown(connection, socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(TLS_HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        self.connection_id = self.server.next_connection_id()
        # Named after the simulator's port, so a test can tell whether this simulator's connections are gone.
        port = self.server.server_address[1]
        threading.current_thread().name = f"{CONNECTION_THREAD_PREFIX}{port}-{self.connection_id}"

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: a line per request would flood test output and slow benchmarks."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (bad request line, unknown method) in the API's JSON error shape."""
        self.close_connection = True
        self._write(json_response(code, {"message": message or reason(code)}))

    def do_GET(self) -> None:
        request = Request(
            self.command, self.path, self.headers.get("Authorization"), self._read_body(), self.connection_id
        )
        response = self.server.application(request)
        if response.drop:
            self.close_connection = True
        else:
            self._write(response)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self) -> bytes | None:
        """The body, or None when it is chunked or too long: then it is left unread and the connection closes."""
        length = self.headers.get("Content-Length", "0")
        if (
            self.headers.get("Transfer-Encoding")
            or not DIGITS.fullmatch(length)
            or int(length) > MAX_DISCARDED_BODY
        ):
            self.close_connection = True
            return None
        return self.rfile.read(int(length)) if int(length) else b""

    def _write(self, response: Response) -> None:
        # One write per answer: separate writes for the status line, headers and body interact badly
        # with delayed ACKs and cost tens of milliseconds per request.
        lines = [
            f"HTTP/1.1 {response.status} {reason(response.status)}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            *(f"{name}: {value}" for name, value in response.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.command == "HEAD":
            self.wfile.write(head)
        elif response.seconds_per_byte > 0:
            self.wfile.write(head)
            self._trickle(response.body, response.seconds_per_byte)
        else:
            self.wfile.write(head + response.body)

    def _trickle(self, body: bytes, pause: float) -> None:
        """Send ``body`` a byte at a time, ``pause`` seconds apart, until done, the client leaves or we stop."""
        for offset in range(len(body)):
            # Waiting on the stop event rather than sleeping lets stop() end a long trickle at once.
            if self.server.stopping.wait(pause):
                self.close_connection = True
                return
            try:
                self.wfile.write(body[offset : offset + 1])
            except OSError:
                # The client hung up: the rest of the body has nowhere to go.
                self.close_connection = True
                return
