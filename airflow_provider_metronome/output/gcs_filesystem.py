"""The ``gs://`` file system for Airflow's ObjectStoragePath when Airflow's google provider is absent.

ObjectStoragePath serves only the schemes that a provider registers (on Airflow 2 and 3 alike:
there is no fallback to plain fsspec). The google provider registers ``gs://``, but it brings well
over a hundred packages (ray, pandas, pyarrow, scikit-learn, litellm...) and cannot be installed
beside the current microsoft-azure provider. So this provider registers this module for ``gs`` and
``gcs`` itself (see :func:`airflow_provider_metronome.get_provider_info`), with gcsfs alone, and
only while the google provider is not installed: when it is, its own file system serves ``gs://``.

A connection is read as the google provider reads it, so the same ``google_cloud_platform``
connection works with either: ``project``, ``key_path`` (a service account key file),
``keyfile_dict`` (its contents), ``is_anonymous``, and ``gcs.endpoint`` (an emulator, say). With no
connection, gcsfs uses Application Default Credentials.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_metronome._compat import BaseHook

schemes = ["gs", "gcs"]
CONN_TYPE = "google_cloud_platform"


def get_fs(conn_id: str | None, storage_options: dict[str, Any] | None = None) -> Any:
    """A gcsfs file system for ``conn_id`` (Airflow calls this through ObjectStoragePath)."""
    import gcsfs
    import gcsfs.core

    options = _connection_options(conn_id) if conn_id else {}
    options.update(storage_options or {})
    # gcsfs's default class asks Google's gRPC control plane what kind each bucket is; an endpoint
    # of one's own (an emulator, a proxy) serves the JSON API only, so that would time out per bucket.
    filesystem = gcsfs.core.GCSFileSystem if options.get("endpoint_url") else gcsfs.GCSFileSystem
    return filesystem(**options)


def _field(extras: dict[str, Any], name: str) -> Any:
    """An extra, also under the ``extra__google_cloud_platform__`` prefix older connections use."""
    value = extras.get(name)
    return extras.get(f"extra__{CONN_TYPE}__{name}") if value in (None, "") else value


def _token(extras: dict[str, Any]) -> Any:
    """gcsfs's ``token``: anonymous, a key's contents or its path; None for the default credentials."""
    if str(_field(extras, "is_anonymous")).lower() == "true":
        return "anon"
    keyfile = _field(extras, "keyfile_dict")
    if keyfile:
        return json.loads(keyfile) if isinstance(keyfile, str) else keyfile
    return _field(extras, "key_path") or None


def _connection_options(conn_id: str) -> dict[str, Any]:
    extras = BaseHook.get_connection(conn_id).extra_dejson
    options = {
        "project": _field(extras, "project"),
        "token": _token(extras),
        "endpoint_url": extras.get("gcs.endpoint"),
        "requester_pays": extras.get("gcs.requester-pays"),
        "default_location": extras.get("gcs.default-bucket-location"),
    }
    return {name: value for name, value in options.items() if value not in (None, "")}


__all__ = ["get_fs", "schemes"]
