"""A real Azure Blob Storage endpoint for tests: Azurite (Microsoft's emulator) in a child process.

Azurite comes from the npm registry, pinned by ``tests/support/azurite/package.json`` and its
lock file. :func:`azurite_command` finds it, in this order: ``AZURITE_BLOB`` (a path to
``azurite-blob``), ``azurite-blob`` on ``PATH``, or a copy that it installs once with ``npm install``
into the pytest cache (``.pytest_cache/d/azurite``), never when a test module is imported.

:func:`azurite_server` starts it in memory on a free loopback port, with telemetry off (Azurite
would otherwise send some), creates a container and yields an :class:`Azurite`::

    with azurite_server(command) as azure:
        monkeypatch.setenv("AIRFLOW_CONN_AZURE_TEST", azure.connection_json)
        ...  # write to azure.url("costs/2024-01-05.jsonl") with conn_id="azure_test"
        assert azure.list_names() == ["costs/2024-01-05.jsonl"]
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.servers import HOST, EmulatorError, free_port, serving

PACKAGE_DIR = Path(__file__).resolve().parent / "azurite"
# Azurite's well-known development account: public, and accepted by nothing but the emulator.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEFAULT_CONTAINER = "metronome-costs"
NPM_TIMEOUT = 600.0


def _installed_copy(cache_dir: Path) -> Path:
    return cache_dir / "node_modules" / ".bin" / "azurite-blob"


def install_azurite(cache_dir: Path) -> Path:
    """``npm install`` the pinned Azurite into ``cache_dir`` (once: a finished copy is reused).

    :raises EmulatorError: when npm is missing or the install fails (the message has npm's output).
    """
    binary = _installed_copy(cache_dir)
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise EmulatorError("npm is not installed, so Azurite cannot be installed")
    # Installed beside the cache and moved into place whole: an interrupted install is never reused.
    # One staging folder per process: `make test` runs the two Airflow lines' suites at once.
    staging = cache_dir.with_name(f"{cache_dir.name}.installing-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy(PACKAGE_DIR / "package.json", staging / "package.json")
    result = subprocess.run(
        # No lock file is kept (the project commits none): package.json pins Azurite's version.
        [npm, "install", "--no-audit", "--no-fund", "--omit=dev", "--no-package-lock"],
        cwd=staging,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise EmulatorError(f"npm install of Azurite failed:\n{(result.stdout + result.stderr)[-4000:]}")
    if cache_dir.exists() and not binary.exists():
        shutil.rmtree(cache_dir, ignore_errors=True)  # left by an older, unfinished layout
    try:
        staging.rename(cache_dir)
    except OSError:
        # Another session finished first (its copy may be running): keep that one.
        shutil.rmtree(staging, ignore_errors=True)
    if not binary.exists():
        raise EmulatorError(f"{cache_dir} holds no finished Azurite install: remove it and run again")
    return binary


def azurite_command(cache_dir: Path) -> Path:
    """The ``azurite-blob`` to run: ``AZURITE_BLOB``, else the one on PATH, else one installed here."""
    named = os.environ.get("AZURITE_BLOB")
    if named:
        if not Path(named).is_file():
            raise EmulatorError(f"AZURITE_BLOB={named} is not a file")
        return Path(named)
    on_path = shutil.which("azurite-blob")
    return Path(on_path) if on_path else install_azurite(cache_dir)


@dataclass
class Azurite:
    """A running Azurite blob endpoint and one container in it."""

    blob_endpoint: str
    container: str
    _client: Any = field(default=None, init=False, repr=False)

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def connection(self) -> dict[str, Any]:
        """The Airflow ``wasb`` connection whose connection string points adlfs at the emulator."""
        return {"conn_type": "wasb", "extra": {"connection_string": self.connection_string}}

    @property
    def connection_json(self) -> str:
        return json.dumps(self.connection())

    def url(self, key: str = "", scheme: str = "abfs") -> str:
        """``abfs://<container>/<key>``."""
        return f"{scheme}://{self.container}/{key.lstrip('/')}"

    # -- inspecting the container --------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """An azure-storage-blob ContainerClient on the emulator (created on first use)."""
        if self._client is None:
            from azure.storage.blob import ContainerClient

            self._client = ContainerClient.from_connection_string(self.connection_string, self.container)
        return self._client

    def list_names(self, prefix: str = "") -> list[str]:
        """Every committed blob under ``prefix`` (hidden and temporary ones included), sorted."""
        return sorted(blob.name for blob in self.client.list_blobs(name_starts_with=prefix or None))

    def uncommitted_blobs(self) -> list[str]:
        """Blobs that hold staged blocks only (an upload begun and never committed): not readable."""
        every = {blob.name for blob in self.client.list_blobs(include=["uncommittedblobs"])}
        return sorted(every - set(self.list_names()))

    def get_bytes(self, key: str) -> bytes:
        return bytes(self.client.download_blob(key).readall())

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.upload_blob(key, data, overwrite=True)

    def etag(self, key: str) -> str:
        """The blob's ETag: it changes whenever the blob is written, even with the same bytes."""
        return str(self.client.get_blob_client(key).get_blob_properties().etag)

    def clear(self) -> None:
        """Delete every blob (with its uncommitted blocks), leaving an empty container."""
        for blob in self.client.list_blobs(include=["uncommittedblobs"]):
            with contextlib.suppress(Exception):
                self.client.delete_blob(blob.name)


@contextlib.contextmanager
def azurite_server(command: Path, container: str = DEFAULT_CONTAINER) -> Iterator[Azurite]:
    """Run Azurite's blob service in memory at a free loopback port, with ``container`` created."""
    port = free_port()
    argv = [
        str(command),
        *("--blobHost", HOST, "--blobPort", str(port)),
        "--inMemoryPersistence",
        # Azurite reports usage to Microsoft unless told not to; tests reach loopback only.
        "--disableTelemetry",
        # The SDK that adlfs brings may speak a newer API version than this Azurite knows.
        "--skipApiVersionCheck",
        "--loose",
        "--silent",
    ]
    # Any answer to the account's listing (403 without a signature) means the service is up.
    with serving("azurite", argv, f"/{ACCOUNT_NAME}?comp=list", port=port) as base_url:
        azure = Azurite(blob_endpoint=f"{base_url}/{ACCOUNT_NAME}", container=container)
        azure.client.create_container()
        yield azure


__all__ = [
    "ACCOUNT_KEY",
    "ACCOUNT_NAME",
    "DEFAULT_CONTAINER",
    "Azurite",
    "azurite_command",
    "azurite_server",
    "install_azurite",
]
