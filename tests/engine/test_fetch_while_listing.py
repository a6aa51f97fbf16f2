"""Customers are fetched as the listing's pages arrive, and handed out in the final order all the same."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from airflow_provider_metronome.customers import WindowListing
from airflow_provider_metronome.engine.fetch import DayObjects, fetch_customers
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.models import Customer
from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from airflow_provider_metronome.window import DayWindow
from tests.support.runs import connection_json

WINDOW = DayWindow.of(dt.date(2024, 1, 5), dt.date(2024, 1, 6))
CUSTOMERS = 250  # three pages of active customers


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(
        customers=CUSTOMERS, unique_metric_customers=0, now=dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)
    ) as simulator:
        monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url))
        yield simulator


def windows_of(customer_id: str, day_objects: DayObjects) -> list[str]:
    return [item.model_dump_json() for _, item in day_objects]


def fetch(hook: MetronomeHook, customers: list[str] | WindowListing) -> list[tuple[str, list[str]]]:
    results = fetch_customers(hook, customers, WINDOW, "costs", windows_of, max_workers=4)
    return [(result.customer_id, result.value or []) for result in results]


def test_the_first_customers_are_fetched_before_the_listing_ends(sim: MetronomeSimulator) -> None:
    # The second listing page is held back until a costs request arrives (at most 30 s).
    sim.inject(Fault.hold_page(until="/costs", seconds=30))
    hook = MetronomeHook()

    fetch(hook, hook.window_listing(WINDOW.start, WINDOW.end))

    records = sim.requests
    paths = [record.path for record in records]
    second_page = next(
        record for record in records if record.path == "/v1/customers" and "next_page" in record.query
    )
    first_costs = next(index for index, path in enumerate(paths) if path.endswith("/costs"))
    assert second_page.arrived_before_answer is not None
    assert first_costs < second_page.arrived_before_answer


def test_fetching_while_listing_hands_out_what_listing_first_does(sim: MetronomeSimulator) -> None:
    hook = MetronomeHook()
    listed_first = fetch(hook, hook.list_window_customers(WINDOW.start, WINDOW.end).ids)
    sim.clear_requests()

    while_listing = fetch(hook, hook.window_listing(WINDOW.start, WINDOW.end))

    assert while_listing == listed_first
    assert [customer_id for customer_id, _ in while_listing] == sorted(sim.active_customer_ids)
    # Each customer asked once: none fetched early is asked again in its turn.
    assert sim.request_counts.by_kind["costs"] == CUSTOMERS


def test_a_customer_fetched_early_but_archived_before_the_window_by_the_second_listing_is_left_out(
    sim: MetronomeSimulator,
) -> None:
    first, *others = sim.active_customer_ids[:4]
    active = [Customer.model_validate(sim.customer(customer_id)) for customer_id in (first, *others)]
    # Archived between the two listings, before the window's start: shown in both.
    archived = [Customer(id=first, name="archived", archived_at="2024-01-01T00:00:00Z")]
    listing = WindowListing(WINDOW, active, archived)

    handed_out = [customer_id for customer_id, _ in fetch(MetronomeHook(), listing)]

    assert sim.requests_for(f"/v1/customers/{first}/costs")  # fetched while listing
    assert handed_out == sorted(others)
    assert listing.customers.groups == {
        "active": 3,
        "archived": 0,
        "created_after_window": 0,
        "archived_before_window": 1,
    }
