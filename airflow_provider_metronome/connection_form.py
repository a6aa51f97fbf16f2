"""The ``metronome`` connection type: its form fields, its labels and the schema of its extras.

One definition serves the connection form of Airflow 2 and 3 and the hook's checks of the extras. It
imports nothing from Airflow, so that the Airflow 3 UI can build the form without importing the hook.
"""

from __future__ import annotations

from typing import Any

HOOK_CLASS_NAME = "airflow_provider_metronome.hooks.metronome.MetronomeHook"


def _number(label: str, description: str, *, integer: bool = False, **bounds: float | None) -> dict[str, Any]:
    """A numeric connection extra: its form field, its bounds and its default, read by the hook too."""
    schema: dict[str, Any] = {"type": ["integer" if integer else "number", "null"]}
    schema |= {key: value for key, value in bounds.items() if value is not None}
    return {"label": label, "description": description, "schema": schema}


# The one definition of the connection's extras: the form (Airflow 2 and 3) and the hook's checks.
# A default pre-fills the form, so that saving it does not store nulls.
CONNECTION_EXTRAS: dict[str, dict[str, Any]] = {
    "timeout": _number(
        "Timeout (s)",
        "The most one request may take, connecting and reading the whole answer. Default 60.",
        exclusiveMinimum=0,
        maximum=3600,
        default=60,
    ),
    "connect_timeout": _number(
        "Connect timeout (s)",
        "Seconds to wait for a TCP/TLS connection. Default 5.",
        exclusiveMinimum=0,
        maximum=600,
        default=5,
    ),
    "max_retries": _number(
        "Max retries",
        "Retries of 408/409/5xx answers and dropped connections (429 is waited out, not counted). Default 2.",
        integer=True,
        minimum=0,
        maximum=100,
        default=2,
    ),
    "max_retry_wait": _number(
        "Max Retry-After wait (s)",
        "Longest server-requested wait honoured before a retry. Default 60.",
        minimum=0,
        maximum=3600,
        default=60,
    ),
    "pool_size": _number(
        "Connection pool size",
        "Keep-alive connections kept open for concurrent calls. Default 32.",
        integer=True,
        minimum=1,
        maximum=1024,
        default=32,
    ),
    "requests_per_second": _number(
        "Account rate budget (requests/s)",
        "The account's rate limit, if known: never exceeded by all tasks of this connection in one "
        "process. Empty: discovered from 429 answers.",
        exclusiveMinimum=0,
        maximum=10000,
    ),
    "rate_limit_timeout": _number(
        "Rate-limit timeout (s)",
        "A request fails once the account's rate limit has refused everything for this long. Default 300.",
        exclusiveMinimum=0,
        maximum=86400,
        default=300,
    ),
}


def connection_type() -> dict[str, Any]:
    """The connection type as ``get_provider_info()`` declares it."""
    return {
        "connection-type": "metronome",
        "hook-class-name": HOOK_CLASS_NAME,
        "hook-name": "Metronome",
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "login", "port"],
            "relabeling": {"host": "API base URL", "password": "API token"},
            "placeholders": {
                "host": "https://api.metronome.com",
                "password": "Metronome API token (sent as a Bearer token)",
                "extra": '{"timeout": 60, "max_retries": 2}',
            },
        },
        "conn-fields": CONNECTION_EXTRAS,
    }


def extra_default(name: str) -> float:
    """The default of the numeric extra ``name``, as the form pre-fills it."""
    return float(CONNECTION_EXTRAS[name]["schema"]["default"])


__all__ = ["CONNECTION_EXTRAS", "HOOK_CLASS_NAME", "connection_type", "extra_default"]
