"""A real S3 endpoint for tests: moto's server in a child process on 127.0.0.1.

:func:`moto_s3_server` starts ``python -m moto.server`` on a free loopback port, waits until it
answers (polling against a deadline), creates a bucket and yields a :class:`MotoS3` that knows the
endpoint, the bucket and the Airflow ``aws`` connection pointing at it::

    with moto_s3_server() as s3:
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", s3.connection_json)
        ...  # write to s3.url("costs/2024-01-05.jsonl")
        assert s3.list_keys() == ["costs/2024-01-05.jsonl"]
        assert s3.list_multipart_uploads() == []

The server is a separate process speaking HTTP over a real socket, so the code under test goes
through botocore/aiobotocore/s3fs exactly as it would against AWS; only the endpoint differs.

Name the connection where the URL is used (``output_conn_id="aws_default"``, ``conn_id=`` for
ObjectStoragePath, or ``s3://aws_default@bucket/...``): an ``s3://`` URL without one makes the amazon
provider use boto3's own credential chain and endpoint, not ``aws_default``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REGION = "us-east-1"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"  # moto accepts any credentials; these never reach AWS
DEFAULT_BUCKET = "metronome-costs"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class MotoServerError(RuntimeError):
    """moto_server did not start (or died); the message carries the tail of its log."""


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the OS picks it; another process may take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoS3:
    """A running moto S3 endpoint and one bucket in it."""

    endpoint_url: str
    bucket: str
    region: str = REGION
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY
    _client: Any = field(default=None, init=False, repr=False)

    # -- what the code under test needs -------------------------------------------------------------

    def connection(self) -> dict[str, Any]:
        """The Airflow ``aws`` connection (as a dict) whose extra points boto3 and s3fs at the server."""
        return {
            "conn_type": "aws",
            "login": self.access_key_id,
            "password": self.secret_access_key,
            "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    @property
    def connection_json(self) -> str:
        """:meth:`connection` in JSON, as Airflow reads it from ``AIRFLOW_CONN_<ID>``."""
        return json.dumps(self.connection())

    def url(self, key: str = "") -> str:
        """``s3://<bucket>/<key>``."""
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    # -- inspecting the bucket -----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """A boto3 S3 client on the server (created on first use)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
                config=Config(retries={"max_attempts": 2, "mode": "standard"}),
            )
        return self._client

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key in the bucket under ``prefix`` (hidden and temporary ones included), sorted."""
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def list_multipart_uploads(self, prefix: str = "") -> list[dict[str, str]]:
        """In-progress (neither completed nor aborted) multipart uploads: ``{"Key", "UploadId"}`` each."""
        uploads: list[dict[str, str]] = []
        kwargs: dict[str, str] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = self.client.list_multipart_uploads(**kwargs)
            uploads.extend(
                {"Key": item["Key"], "UploadId": item["UploadId"]} for item in page.get("Uploads", [])
            )
            if not page.get("IsTruncated"):
                return sorted(uploads, key=lambda upload: (upload["Key"], upload["UploadId"]))
            kwargs["KeyMarker"] = page["NextKeyMarker"]
            kwargs["UploadIdMarker"] = page["NextUploadIdMarker"]

    def get_bytes(self, key: str) -> bytes:
        """The stored bytes of ``key``."""
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` (to plant a previous object, for example)."""
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def clear(self) -> None:
        """Delete every object and abort every in-progress multipart upload, leaving an empty bucket."""
        for upload in self.list_multipart_uploads():
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for key in self.list_keys():
            self.client.delete_object(Bucket=self.bucket, Key=key)


def _wait_until_serving(process: subprocess.Popen[bytes], endpoint_url: str, deadline: float) -> None:
    """Poll ``endpoint_url`` until it answers HTTP; fail if the process exits or the deadline passes."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    while True:
        try:
            # Any HTTP answer (ListBuckets' 200, or an error status) means the server is up.
            with opener.open(endpoint_url + "/", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MotoServerError(f"moto_server at {endpoint_url} did not answer in time")
        # Waits on the process rather than sleeping: returns at once if it died.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=min(0.05, remaining))
        if process.poll() is not None:
            raise MotoServerError(f"moto_server exited with code {process.returncode}")


def _stop(process: subprocess.Popen[bytes]) -> None:
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
def moto_s3_server(
    bucket: str = DEFAULT_BUCKET,
    *,
    host: str = HOST,
    startup_timeout: float = STARTUP_TIMEOUT,
    attempts: int = 3,
) -> Iterator[MotoS3]:
    """Run ``python -m moto.server`` on ``host`` at a free port, with ``bucket`` created; stop it on exit.

    :param bucket: The bucket to create (in us-east-1).
    :param host: The loopback address to bind.
    :param startup_timeout: Seconds to wait for the server to answer, per attempt.
    :param attempts: Ports to try: a free port can be taken by another process before moto binds it.
    :raises MotoServerError: when it did not start; the message has the end of the server's log.
    """
    env = dict(os.environ)
    # moto reads these as defaults; the helper never talks to AWS, and neither should the server.
    env.update(
        {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "PYTHONUNBUFFERED": "1",
        }
    )
    with tempfile.TemporaryDirectory(prefix="moto-server-") as log_dir:
        log_path = Path(log_dir) / "moto_server.log"
        process: subprocess.Popen[bytes] | None = None
        endpoint_url = ""
        errors: list[str] = []
        for _ in range(attempts):
            port = free_port(host)
            endpoint_url = f"http://{host}:{port}"
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            try:
                _wait_until_serving(process, endpoint_url, time.monotonic() + startup_timeout)
                break
            except MotoServerError as err:
                _stop(process)
                errors.append(str(err))
                process = None
        if process is None:
            raise MotoServerError("; ".join(errors) + "\n--- moto_server log ---\n" + _log_tail(log_path))
        try:
            s3 = MotoS3(endpoint_url=endpoint_url, bucket=bucket)
            s3.client.create_bucket(Bucket=bucket)
            yield s3
        finally:
            _stop(process)


def forget_cached_s3_stores() -> None:
    """Drop Airflow's cached ``s3`` ObjectStores, so that no file system outlives the endpoint it was made for.

    Airflow keeps one store per protocol and connection id for the life of the process, with the
    connection's endpoint baked in: a test module starting its own moto_server calls this before and
    after its tests.
    """
    for module_name in ("airflow.sdk.io.store", "airflow.io.store"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cache = getattr(module, "_STORE_CACHE", None)
        if isinstance(cache, dict):
            for alias in [alias for alias in cache if str(alias).startswith("s3")]:
                cache.pop(alias, None)


__all__ = [
    "ACCESS_KEY_ID",
    "DEFAULT_BUCKET",
    "REGION",
    "SECRET_ACCESS_KEY",
    "MotoS3",
    "MotoServerError",
    "forget_cached_s3_stores",
    "free_port",
    "moto_s3_server",
]
