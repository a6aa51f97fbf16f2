"""The gs:// file system this provider registers when Airflow's google provider is absent."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest

from airflow_provider_metronome import GCS_FILESYSTEM_MODULE, get_provider_info
from airflow_provider_metronome.output import gcs_filesystem


def test_registered_for_gs_only_while_the_google_provider_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "airflow.providers.google", None)
    assert get_provider_info()["filesystems"] == [GCS_FILESYSTEM_MODULE]
    assert gcs_filesystem.schemes == ["gs", "gcs"]

    # With the google provider there, its own file system serves gs://: ours must not compete.
    google = types.ModuleType("airflow.providers.google")
    google.__spec__ = importlib.machinery.ModuleSpec("airflow.providers.google", None)
    monkeypatch.setitem(sys.modules, "airflow.providers.google", google)
    assert "filesystems" not in get_provider_info()


@pytest.mark.parametrize(
    ("extra", "token"),
    [
        ({"is_anonymous": True}, "anon"),
        ({"extra__google_cloud_platform__is_anonymous": "true"}, "anon"),
        ({"keyfile_dict": json.dumps({"type": "service_account"})}, {"type": "service_account"}),
        ({"key_path": "/secrets/key.json"}, "/secrets/key.json"),
        ({}, None),
    ],
)
def test_a_google_connection_is_read_as_the_google_provider_reads_it(
    extra: dict[str, object], token: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = {"conn_type": "google_cloud_platform", "extra": {"project": "p", **extra}}
    monkeypatch.setenv("AIRFLOW_CONN_GCS_READ_TEST", json.dumps(connection))

    options = gcs_filesystem._connection_options("gcs_read_test")

    assert options.get("token") == token
    assert options["project"] == "p"
