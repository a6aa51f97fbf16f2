"""The operator against a rate-limited Metronome: it finishes, with the same output as when unthrottled."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_metronome.exceptions import MetronomeRateLimitError
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.testing import DEFAULT_TOKEN, MetronomeSimulator, RateLimit
from tests.support.runs import connection_json

NOW = dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(customers=40, unique_metric_customers=0, now=NOW, latency=0.005) as simulator:
        monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url, DEFAULT_TOKEN))
        yield simulator


def fetch_day() -> Any:
    operator = MetronomeCostsOperator(
        task_id="costs", starting_on="2024-01-05", ending_before="2024-01-06", max_workers=8
    )
    return operator.execute({})  # type: ignore[arg-type]


@pytest.mark.parametrize("retry_after", [None, "seconds"], ids=["bare-429", "retry-after"])
def test_a_throttled_run_writes_what_an_unthrottled_one_writes(
    sim: MetronomeSimulator, retry_after: Any
) -> None:
    unthrottled = fetch_day()
    sim.clear_requests()

    sim.rate_limit = RateLimit(rate=20, retry_after=retry_after)
    throttled = fetch_day()

    assert sim.throttled_count > 0, "the run met the rate limit"
    assert json.dumps(throttled) == json.dumps(unthrottled)
    assert len(throttled) == 40


def test_a_run_the_account_throttles_completely_fails_naming_the_rate_limit(
    sim: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(sim.url, DEFAULT_TOKEN, rate_limit_timeout=1)
    )
    # Another integration spends the whole budget: nothing of ours gets through.
    sim.rate_limit = RateLimit(rate=0.001, burst=1)

    with pytest.raises(MetronomeRateLimitError, match="rate limit answered 429 to every request"):
        fetch_day()
