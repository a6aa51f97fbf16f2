"""Fixtures of the operator tests."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_metronome.testing import MetronomeSimulator

# Late enough for every day of January to be available.
JANUARY_SETTLED = dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def sim(simulator: MetronomeSimulator, metronome_conn: str) -> MetronomeSimulator:
    """The simulator behind ``metronome_default``, its clock late enough for all of January."""
    simulator.now = JANUARY_SETTLED
    return simulator
