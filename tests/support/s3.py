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
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.support.servers import (
    HOST,
    STARTUP_TIMEOUT,
    EmulatorError,
    forget_cached_stores,
    free_port,
    serving,
)

REGION = "us-east-1"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"  # moto accepts any credentials; these never reach AWS
DEFAULT_BUCKET = "metronome-costs"


class MotoServerError(RuntimeError):
    """moto_server did not start (or died); the message carries the tail of its log."""


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


@contextlib.contextmanager
def moto_s3_server(
    bucket: str = DEFAULT_BUCKET, *, startup_timeout: float = STARTUP_TIMEOUT, attempts: int = 3
) -> Iterator[MotoS3]:
    """Run ``python -m moto.server`` on 127.0.0.1 at a free port, with ``bucket`` created; stop it on exit.

    :param bucket: The bucket to create (in us-east-1).
    :param startup_timeout: Seconds to wait for the server to answer, per attempt.
    :param attempts: Ports to try: a free port can be taken by another process before moto binds it.
    :raises MotoServerError: when it did not start; the message has the end of the server's log.
    """
    # moto reads these as defaults; the helper never talks to AWS, and neither should the server.
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "PYTHONUNBUFFERED": "1",
    }
    errors: list[str] = []
    with contextlib.ExitStack() as stack:
        for _ in range(attempts):
            port = free_port()
            command = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
            try:
                endpoint_url = stack.enter_context(
                    serving("moto_server", command, "/", port=port, env=env, startup_timeout=startup_timeout)
                )
            except EmulatorError as err:
                errors.append(str(err))
                continue
            s3 = MotoS3(endpoint_url=endpoint_url, bucket=bucket)
            s3.client.create_bucket(Bucket=bucket)
            yield s3
            return
        raise MotoServerError("; ".join(errors))


def forget_cached_s3_stores() -> None:
    """Drop Airflow's cached ``s3`` ObjectStores, so that no file system outlives the endpoint it was made for.

    A test module starting its own moto_server calls this before and after its tests.
    """
    forget_cached_stores("s3")


__all__ = [
    "ACCESS_KEY_ID",
    "DEFAULT_BUCKET",
    "HOST",
    "REGION",
    "SECRET_ACCESS_KEY",
    "MotoS3",
    "MotoServerError",
    "forget_cached_s3_stores",
    "free_port",
    "moto_s3_server",
]
