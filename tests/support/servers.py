"""Emulators of object stores as child processes on 127.0.0.1: start, wait until they answer, stop.

The S3 helper (``tests/support/s3.py``) does the same for moto_server; this is the part the GCS and
Azure emulators share. A server is started at a free loopback port, polled over HTTP against a
deadline (never a fixed sleep), and stopped (terminate, then kill) when the ``with`` block ends.

A missing emulator skips its tests with the reason, unless ``METRONOME_STORE_TESTS=required`` (as
``.ci/run`` sets it): then it fails them, so that CI never passes by skipping.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
REQUIRED_ENV = "METRONOME_STORE_TESTS"


class EmulatorError(RuntimeError):
    """An emulator did not start (or died); the message carries the tail of its log."""


def missing(what: str) -> None:
    """Skip the calling test (or fixture) for ``what``, or fail it when the store tests are required."""
    if os.environ.get(REQUIRED_ENV) == "required":
        pytest.fail(f"{what}, and {REQUIRED_ENV}=required")
    pytest.skip(what)


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the OS picks it; another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    try:
        with opener.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer, an error status included, means the server is up
    except OSError:
        return False


def wait_until_serving(process: subprocess.Popen[bytes], url: str, deadline: float) -> None:
    """Poll ``url`` until it answers HTTP; fail if the process exits or the deadline passes."""
    while not _answers(url):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EmulatorError(f"{url} did not answer in time")
        # Waits on the process rather than sleeping: returns at once if it died.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=min(0.05, remaining))
        if process.poll() is not None:
            raise EmulatorError(f"the server for {url} exited with code {process.returncode}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def _log_tail(log_path: Path, limit: int = 4000) -> str:
    try:
        return log_path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


@contextlib.contextmanager
def serving(
    name: str,
    command: Sequence[str],
    probe_path: str,
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Iterator[str]:
    """Run ``command`` (listening on ``port``) until it answers ``http://HOST:port<probe_path>``.

    Yields the server's base URL; stops the process on exit. Its output goes to a log whose tail
    is in the error when it does not start.
    """
    base_url = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as log_dir:
        log_path = Path(log_dir) / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        try:
            try:
                wait_until_serving(process, base_url + probe_path, time.monotonic() + startup_timeout)
            except EmulatorError as err:
                stop(process)
                raise EmulatorError(f"{name}: {err}\n--- {name} log ---\n{_log_tail(log_path)}") from None
            yield base_url
        finally:
            stop(process)


def forget_cached_stores(*protocols: str) -> None:
    """Drop Airflow's cached ObjectStores of ``protocols``, so that none outlives its emulator.

    Airflow keeps one store per protocol and connection id for the life of the process, with the
    connection's endpoint baked in.
    """
    import importlib

    for module_name in ("airflow.sdk.io.store", "airflow.io.store"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cache = getattr(module, "_STORE_CACHE", None)
        if isinstance(cache, dict):
            for alias in [alias for alias in cache if str(alias).split("-")[0] in protocols]:
                cache.pop(alias, None)


__all__ = [
    "HOST",
    "REQUIRED_ENV",
    "EmulatorError",
    "forget_cached_stores",
    "free_port",
    "missing",
    "serving",
    "stop",
    "wait_until_serving",
]
