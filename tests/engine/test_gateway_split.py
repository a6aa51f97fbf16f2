"""A window the gateway times out on is asked again in halves, down to one day, against the simulator."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from airflow_provider_metronome.engine.fetch import fetch_customers, fetch_window
from airflow_provider_metronome.exceptions import MetronomeGatewayTimeoutError
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.testing import Fault, GatewayTimeout, MetronomeSimulator
from airflow_provider_metronome.window import DayWindow
from tests.support.runs import connection_json

FIRST, END = dt.date(2024, 1, 1), dt.date(2024, 4, 10)  # 100 days
WINDOW = DayWindow.of(FIRST, END)


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(customers=1, archived_customers=0, unique_metric_customers=0) as simulator:
        monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url))
        yield simulator


def line_items(sim: MetronomeSimulator, first: dt.date, end: dt.date) -> int:
    customer = sim.active_customer_ids[0]
    return sum(len(invoice["line_items"]) for invoice in sim.breakdowns_for(customer, first, end))


def asked_days(sim: MetronomeSimulator) -> list[tuple[str, str]]:
    """The ranges of the breakdowns requests, in the order sent (first pages only)."""
    return [
        (record.query["starting_on"][0][:10], record.query["ending_before"][0][:10])
        for record in sim.requests_for("/invoices/breakdowns")
        if "next_page" not in record.query
    ]


def test_a_timed_out_window_is_asked_in_halves_and_holds_what_one_answer_would(
    sim: MetronomeSimulator,
) -> None:
    customer = sim.active_customer_ids[0]
    unsplit = fetch_window(MetronomeHook(), "invoice_breakdowns", customer, WINDOW)
    # More than 25 days of line items time out: 100 and 50 days do, 25 days do not.
    sim.gateway_timeout = GatewayTimeout(max_line_items=line_items(sim, FIRST, FIRST + dt.timedelta(days=25)))
    sim.clear_requests()

    split = fetch_window(MetronomeHook(), "invoice_breakdowns", customer, WINDOW)

    assert [item.model_dump_json() for item in split] == [item.model_dump_json() for item in unsplit]
    assert asked_days(sim) == [
        ("2024-01-01", "2024-04-10"),
        ("2024-01-01", "2024-02-20"),
        ("2024-01-01", "2024-01-26"),
        ("2024-01-26", "2024-02-20"),
        ("2024-02-20", "2024-04-10"),
        ("2024-02-20", "2024-03-16"),
        ("2024-03-16", "2024-04-10"),
    ]
    # A multi-day window that timed out is never sent again whole.
    assert sim.request_counts.by_status[504] == 3


def test_a_client_timeout_is_a_gateway_timeout_too(
    sim: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(sim.url, timeout=0.5))
    customer = sim.active_customer_ids[0]
    window = DayWindow.of(FIRST, FIRST + dt.timedelta(days=4))
    unsplit = fetch_window(MetronomeHook(), "invoice_breakdowns", customer, window)
    halves = [
        line_items(sim, FIRST + dt.timedelta(days=start), FIRST + dt.timedelta(days=start + 2))
        for start in (0, 2)
    ]
    # Slower than the client's timeout=0.5 s: the client gives up first.
    sim.gateway_timeout = GatewayTimeout(max_line_items=max(halves), seconds=2.0)
    sim.clear_requests()

    split = fetch_window(MetronomeHook(), "invoice_breakdowns", customer, window)

    assert [item.model_dump_json() for item in split] == [item.model_dump_json() for item in unsplit]
    assert asked_days(sim) == [
        ("2024-01-01", "2024-01-05"),
        ("2024-01-01", "2024-01-03"),
        ("2024-01-03", "2024-01-05"),
    ]


def test_a_day_that_still_times_out_fails_the_run_clearly(sim: MetronomeSimulator) -> None:
    sim.gateway_timeout = GatewayTimeout(max_line_items=0)
    customer = sim.active_customer_ids[0]
    window = DayWindow.of(FIRST, FIRST + dt.timedelta(days=2))

    results = fetch_customers(
        MetronomeHook(), [customer], window, "invoice_breakdowns", lambda *_: None, max_workers=1
    )

    with pytest.raises(
        MetronomeGatewayTimeoutError, match="timed out even asked one day at a time"
    ) as raised:
        list(results)
    assert raised.value.status_code == 504
    assert str(FIRST - dt.timedelta(days=1)) in str(raised.value)
    # Three days (the day before the window too), halved to one, which gets the hook's own two retries.
    assert asked_days(sim) == [
        ("2023-12-31", "2024-01-03"),
        ("2023-12-31", "2024-01-01"),
        ("2023-12-31", "2024-01-01"),
        ("2023-12-31", "2024-01-01"),
    ]


def test_a_costs_window_answered_504_is_split_too(sim: MetronomeSimulator) -> None:
    customer = sim.active_customer_ids[0]
    window = DayWindow.of(FIRST, FIRST + dt.timedelta(days=4))
    unsplit = fetch_window(MetronomeHook(), "costs", customer, window)
    sim.inject(Fault.status(504), path="/costs", times=1)
    sim.clear_requests()

    split = fetch_window(MetronomeHook(), "costs", customer, window)

    assert [item.model_dump_json() for item in split] == [item.model_dump_json() for item in unsplit]
    ranges = [
        (record.query["starting_on"][0][:10], record.query["ending_before"][0][:10])
        for record in sim.requests_for("/costs")
    ]
    assert ranges == [
        ("2024-01-01", "2024-01-05"),
        ("2024-01-01", "2024-01-03"),
        ("2024-01-03", "2024-01-05"),
    ]
