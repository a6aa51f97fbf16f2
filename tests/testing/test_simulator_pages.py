"""Page sizes the simulator keeps to (as Metronome documents them), and which customers ``/costs`` serves."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_metronome.testing import MetronomeSimulator
from tests.testing.simulator_client import all_pages, breakdowns_path, costs_path, get

NOW = dt.datetime(2024, 3, 10, 12, tzinfo=dt.timezone.utc)
# 153 days.
SEPTEMBER_TO_JANUARY: dict[str, Any] = {
    "starting_on": "2023-09-01T00:00:00Z",
    "ending_before": "2024-02-01T00:00:00Z",
}


@pytest.fixture
def sim() -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(now=NOW) as simulator:
        yield simulator


def test_a_costs_page_holds_at_most_100_days(sim: MetronomeSimulator) -> None:
    cid = sim.costs_customer_ids[0]

    pages = all_pages(sim, costs_path(cid), limit=100, **SEPTEMBER_TO_JANUARY)
    too_many = get(sim, costs_path(cid), limit=101, **SEPTEMBER_TO_JANUARY)

    assert [len(page) for page in pages] == [100, 53]
    days = [window["start_timestamp"][:10] for page in pages for window in page]
    assert len(set(days)) == len(days) == 153
    assert too_many.status_code == 400


def test_a_daily_breakdowns_page_spans_at_most_35_days_whatever_the_limit(sim: MetronomeSimulator) -> None:
    cid = sim.costs_customer_ids[0]

    pages = all_pages(sim, breakdowns_path(cid), limit=100, **SEPTEMBER_TO_JANUARY)

    days_per_page = [{invoice["breakdown_start_timestamp"][:10] for invoice in page} for page in pages]
    assert all(len(days) <= 35 for days in days_per_page)
    assert sum(len(days) for days in days_per_page) == 153  # every day once, on a single page
    assert len(set().union(*days_per_page)) == 153


def test_an_hourly_breakdowns_page_spans_at_most_24_hours(sim: MetronomeSimulator) -> None:
    cid = sim.costs_customer_ids[0]

    pages = all_pages(
        sim,
        breakdowns_path(cid),
        window_size="hour",
        limit=100,
        starting_on="2024-02-01T00:00:00Z",
        ending_before="2024-02-04T00:00:00Z",
    )

    hours_per_page = [{invoice["breakdown_start_timestamp"] for invoice in page} for page in pages]
    assert all(len(hours) <= 24 for hours in hours_per_page)
    assert len(set().union(*hours_per_page)) == 72


def test_costs_customer_ids_are_the_customers_costs_serves(sim: MetronomeSimulator) -> None:
    first_day: dict[str, Any] = {
        "starting_on": "2024-02-01T00:00:00Z",
        "ending_before": "2024-02-02T00:00:00Z",
    }

    served = sim.costs_customer_ids

    assert len(served) == len(sim.active_customer_ids) - len(sim.unique_metric_customer_ids) == 23
    assert served == [cid for cid in sim.active_customer_ids if cid not in sim.unique_metric_customer_ids]
    assert {get(sim, costs_path(cid), **first_day).status_code for cid in served} == {200}
    refused = {get(sim, costs_path(cid), **first_day).status_code for cid in sim.unique_metric_customer_ids}
    assert refused == {400}
    assert not set(served) & set(sim.archived_customer_ids)
