"""A customer its own rate limit holds back does not hold up the others: workers read ahead past it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from airflow_provider_metronome.engine.fetch import DayObjects, fetch_customers
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.testing import MetronomeSimulator, RateLimit
from airflow_provider_metronome.window import DayWindow
from tests.support.runs import connection_json

# 100 days of breakdowns: three pages (35 days a page) for every customer.
WINDOW = DayWindow.of(dt.date(2023, 10, 1), dt.date(2024, 1, 9))
CUSTOMERS = 14
WORKERS = 2


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(
        customers=CUSTOMERS, unique_metric_customers=0, now=dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)
    ) as simulator:
        monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url))
        yield simulator


def invoices_of(customer_id: str, day_objects: DayObjects) -> list[str]:
    return [item.model_dump_json() for _, item in day_objects]


def fetch(ids: list[str]) -> list[tuple[str, list[str]]]:
    results = fetch_customers(
        MetronomeHook(), ids, WINDOW, "invoice_breakdowns", invoices_of, max_workers=WORKERS
    )
    return [(result.customer_id, result.value or []) for result in results]


def test_customers_past_a_held_back_one_are_fetched_while_it_waits_and_handed_out_in_order(
    sim: MetronomeSimulator,
) -> None:
    ids = sorted(sim.active_customer_ids)
    unlimited = fetch(ids)
    sim.clear_requests()
    # The first customer may make one request a second: its three pages take two seconds at least.
    held_back = ids[0]
    sim.set_customer_rate_limit(held_back, RateLimit(rate=1.0, burst=1))

    limited = fetch(ids)

    assert limited == unlimited
    paths = [record.path for record in sim.requests]
    last_of_held_back = max(index for index, path in enumerate(paths) if f"/{held_back}/" in path)
    # Beyond what is queued behind it (2 x workers), later customers were fetched meanwhile.
    far = ids[2 * WORKERS + 1 :]
    fetched_meanwhile = {
        customer for customer in far for path in paths[:last_of_held_back] if f"/{customer}/" in path
    }
    assert fetched_meanwhile
    assert sim.throttled_count > 0
