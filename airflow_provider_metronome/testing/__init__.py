"""Test support: :class:`MetronomeSimulator`, a local fake of Metronome's HTTP API.

Run it standalone with ``python -m airflow_provider_metronome.testing --help``.
"""

from __future__ import annotations

from airflow_provider_metronome.testing.simulator import (
    DEFAULT_TOKEN,
    EVERY_CUSTOMER,
    Fault,
    GatewayTimeout,
    MetronomeSimulator,
    RateLimit,
    RequestRecord,
    RetryAfter,
)

__all__ = [
    "DEFAULT_TOKEN",
    "EVERY_CUSTOMER",
    "Fault",
    "GatewayTimeout",
    "MetronomeSimulator",
    "RateLimit",
    "RequestRecord",
    "RetryAfter",
]
