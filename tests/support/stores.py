"""Session fixtures for the object stores beside S3: one emulator process per store per session.

``gcs_emulator`` (gcp-storage-emulator, for ``gs://``) and ``azurite`` (Azurite, for ``abfs://``)
start on first use and stop at the end of the session. ``store`` gives the tests one of them,
emptied, with its Airflow connection set, behind the small :class:`Store` interface, so that one
test states what every store must do.

A store whose packages or emulator are missing is skipped with the reason, or failed when
``METRONOME_STORE_TESTS=required`` (as ``.ci/run`` sets it).
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support.servers import EmulatorError, forget_cached_stores, missing

GCS_CONN_ID = "gcs_test"
AZURE_CONN_ID = "azure_test"
# What each store's tests need importable, and the extra that brings it.
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "gcs": (("gcsfs", "gcp_storage_emulator"), "'.[test,gcs]'"),
    "azure": (("adlfs", "airflow.providers.microsoft.azure", "azure.storage.blob"), "'.[test,azure]'"),
}


class Emulator(Protocol):
    """What the tests read from an emulator (both FakeGcs and Azurite have it)."""

    connection_json: str

    def url(self, key: str = "") -> str: ...
    def list_names(self, prefix: str = "") -> list[str]: ...
    def get_bytes(self, key: str) -> bytes: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def clear(self) -> None: ...


@dataclass
class Store:
    """One emulated store, as a test sees it."""

    name: str
    emulator: Any
    conn_id: str
    protocols: tuple[str, ...]

    def url(self, key: str = "") -> str:
        return str(self.emulator.url(key))

    def list_names(self) -> list[str]:
        return list(self.emulator.list_names())

    def get_bytes(self, key: str) -> bytes:
        return bytes(self.emulator.get_bytes(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.emulator.put_bytes(key, data)

    def stamp(self, key: str) -> str:
        """What changes whenever the object is written, even with the same bytes."""
        if self.name == "gcs":
            return str(self.emulator.generation(key))
        return str(self.emulator.etag(key))

    def unfinished_uploads(self) -> list[str]:
        """Uploads begun and never completed that the store can list (Azure's uncommitted blobs).

        GCS has no listing of open resumable sessions (they expire after a week, never visible).
        """
        return list(self.emulator.uncommitted_blobs()) if self.name == "azure" else []


def _require(store: str) -> None:
    modules, extra = NEEDS[store]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            missing(f"the {store} tests need {module} ({err}): pip install {extra}")


def _cache_dir(config: pytest.Config, name: str) -> Path:
    """A folder kept between sessions: pytest's cache, or the temp folder when the cache is off."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(name))
    return Path(tempfile.gettempdir()) / f"metronome-provider-{name}"


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Any]:
    _require("gcs")
    from tests.support.gcs import gcs_emulator_server

    with gcs_emulator_server() as gcs:
        yield gcs


@pytest.fixture(scope="session")
def azurite(request: pytest.FixtureRequest) -> Iterator[Any]:
    _require("azure")
    from tests.support.azure import azurite_command, azurite_server

    try:
        command = azurite_command(_cache_dir(request.config, "azurite"))
    except EmulatorError as err:
        missing(f"Azurite is not available ({err})")
    with azurite_server(command) as azure:
        yield azure


def _no_retries_of_not_implemented(monkeypatch: pytest.MonkeyPatch) -> None:
    """gcsfs retries a 501 six times with backoff (about 35 s); the emulator answers 501 to the
    cancel of a resumable upload, which it does not implement, so one answer is enough here."""
    import gcsfs.retry

    monkeypatch.setattr(gcsfs.retry, "errs", {code for code in gcsfs.retry.errs if code not in (501, "501")})


@pytest.fixture(params=["gcs", "azure"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """An empty emulated store with its connection set: each test runs once per store."""
    if request.param == "gcs":
        chosen = Store("gcs", request.getfixturevalue("gcs_emulator"), GCS_CONN_ID, ("gs", "gcs"))
    else:
        chosen = Store("azure", request.getfixturevalue("azurite"), AZURE_CONN_ID, ("abfs", "abfss"))
    if chosen.name == "gcs":
        _no_retries_of_not_implemented(monkeypatch)
    chosen.emulator.clear()
    monkeypatch.setenv(f"AIRFLOW_CONN_{chosen.conn_id.upper()}", chosen.emulator.connection_json)
    # Anything that missed the connection must not reach the real services.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    forget_cached_stores(*chosen.protocols)
    yield chosen
    forget_cached_stores(*chosen.protocols)


__all__ = ["AZURE_CONN_ID", "GCS_CONN_ID", "Store", "azurite", "gcs_emulator", "store"]
