"""A real GCS JSON-API endpoint for tests: gcp-storage-emulator (a pip package) in a child process.

:func:`gcs_emulator_server` starts it in memory on a free loopback port with a bucket, waits until
it answers (polling against a deadline), and yields a :class:`FakeGcs` that knows the endpoint and
the Airflow ``google_cloud_platform`` connection pointing at it (anonymous credentials, the
emulator as ``gcs.endpoint``)::

    with gcs_emulator_server() as gcs:
        monkeypatch.setenv("AIRFLOW_CONN_GCS_TEST", gcs.connection_json)
        ...  # write to gcs.url("costs/2024-01-05.jsonl") with conn_id="gcs_test"
        assert gcs.list_names() == ["costs/2024-01-05.jsonl"]

The tests inspect the bucket with plain HTTP requests to the JSON API, not through gcsfs, so that
what they see does not depend on the code under test.
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.servers import HOST, free_port, serving

DEFAULT_BUCKET = "metronome-costs"
PROJECT = "metronome-tests"
# The emulator's console script, run with this interpreter (it may not be on PATH in a venv).
EMULATOR_MAIN = "import sys; from gcp_storage_emulator.__main__ import main; main(sys.argv[1:])"


@dataclass
class FakeGcs:
    """A running GCS emulator and one bucket in it."""

    endpoint_url: str
    bucket: str

    def connection(self) -> dict[str, Any]:
        """The Airflow google connection: anonymous credentials, and the emulator as the endpoint."""
        return {
            "conn_type": "google_cloud_platform",
            "extra": {"is_anonymous": True, "project": PROJECT, "gcs.endpoint": self.endpoint_url},
        }

    @property
    def connection_json(self) -> str:
        return json.dumps(self.connection())

    def url(self, key: str = "") -> str:
        """``gs://<bucket>/<key>``."""
        return f"gs://{self.bucket}/{key.lstrip('/')}"

    # -- inspecting the bucket over the JSON API -------------------------------------------------------

    def _request(self, method: str, path: str, data: bytes | None = None) -> bytes:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
        request = urllib.request.Request(self.endpoint_url + path, data=data, method=method)
        with opener.open(request, timeout=30) as answer:
            return bytes(answer.read())

    def _object_path(self, key: str) -> str:
        return f"/storage/v1/b/{self.bucket}/o/{urllib.parse.quote(key, safe='')}"

    def list_names(self, prefix: str = "") -> list[str]:
        """Every object under ``prefix`` (hidden and temporary ones included), sorted."""
        query = urllib.parse.urlencode({"prefix": prefix}) if prefix else ""
        listing = json.loads(self._request("GET", f"/storage/v1/b/{self.bucket}/o?{query}"))
        return sorted(item["name"] for item in listing.get("items", []))

    def get_bytes(self, key: str) -> bytes:
        return self._request("GET", self._object_path(key) + "?alt=media")

    def put_bytes(self, key: str, data: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": key})
        self._request("POST", f"/upload/storage/v1/b/{self.bucket}/o?{query}", data)

    def generation(self, key: str) -> str:
        """The object's generation: a new one each time the object is written, even with the same bytes."""
        return str(json.loads(self._request("GET", self._object_path(key)))["generation"])

    def clear(self) -> None:
        """Delete every object, leaving an empty bucket."""
        for key in self.list_names():
            with contextlib.suppress(OSError):
                self._request("DELETE", self._object_path(key))


@contextlib.contextmanager
def gcs_emulator_server(bucket: str = DEFAULT_BUCKET) -> Iterator[FakeGcs]:
    """Run gcp-storage-emulator in memory at a free loopback port, with ``bucket`` created."""
    port = free_port()
    argv = [
        sys.executable,
        "-c",
        EMULATOR_MAIN,
        *("start", "--host", HOST, "--port", str(port)),
        *("--in-memory", "--default-bucket", bucket, "--quiet"),
    ]
    with serving("gcp-storage-emulator", argv, f"/storage/v1/b/{bucket}", port=port) as base_url:
        yield FakeGcs(endpoint_url=base_url, bucket=bucket)


__all__ = ["DEFAULT_BUCKET", "PROJECT", "FakeGcs", "gcs_emulator_server"]
