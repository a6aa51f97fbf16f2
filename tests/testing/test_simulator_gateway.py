"""The simulator's gateway timeout (a cost model of the days and line items asked) and its held pages."""

from __future__ import annotations

import argparse
import datetime as dt
import threading

import pytest
import requests

from airflow_provider_metronome.testing import Fault, GatewayTimeout, MetronomeSimulator
from airflow_provider_metronome.testing.arguments import gateway_timeout

JANUARY = {"starting_on": "2024-01-01T00:00:00Z", "ending_before": "2024-02-01T00:00:00Z"}
ONE_DAY = {"starting_on": "2024-01-05T00:00:00Z", "ending_before": "2024-01-06T00:00:00Z"}


def line_items(sim: MetronomeSimulator, customer_id: str, start: dt.date, end: dt.date) -> int:
    return sum(len(invoice["line_items"]) for invoice in sim.breakdowns_for(customer_id, start, end))


def get(sim: MetronomeSimulator, path: str, params: dict[str, str] | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {sim.token}"}
    return requests.get(f"{sim.url}{path}", params=params, headers=headers, timeout=10)


def test_a_range_with_more_line_items_than_the_gateway_allows_answers_504_on_every_page() -> None:
    with MetronomeSimulator(default_page_size=10) as sim:
        customer = sim.active_customer_ids[0]
        path = f"/v1/customers/{customer}/invoices/breakdowns"
        january = line_items(sim, customer, dt.date(2024, 1, 1), dt.date(2024, 2, 1))
        first_page = get(sim, path, JANUARY)
        sim.gateway_timeout = GatewayTimeout(max_line_items=january - 1)

        timed_out = get(sim, path, JANUARY)
        next_page = get(sim, path, {**JANUARY, "next_page": first_page.json()["next_page"]})
        day = get(sim, path, ONE_DAY)
        sim.gateway_timeout = GatewayTimeout(max_line_items=january)
        just_enough = get(sim, path, JANUARY)

    assert first_page.status_code == 200
    assert (timed_out.status_code, next_page.status_code) == (504, 504)
    assert timed_out.headers["x-gateway-timeout-millis"] == "59000"
    assert timed_out.json()["message"].startswith("Gateway Timeout")
    assert day.status_code == 200
    assert just_enough.status_code == 200


def test_costs_have_no_gateway_timeout() -> None:
    with MetronomeSimulator(gateway_timeout=GatewayTimeout(max_line_items=0)) as sim:
        answer = get(sim, f"/v1/customers/{sim.costs_customer_ids[0]}/costs", JANUARY)

    assert answer.status_code == 200


def test_a_gateway_slower_than_the_client_is_a_client_timeout() -> None:
    with MetronomeSimulator(gateway_timeout=GatewayTimeout(max_line_items=0, seconds=2.0)) as sim:
        path = f"{sim.url}/v1/customers/{sim.active_customer_ids[0]}/invoices/breakdowns"
        headers = {"Authorization": f"Bearer {sim.token}"}

        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(path, params=ONE_DAY, headers=headers, timeout=0.5)


def test_the_gateway_timeout_is_set_and_removed_through_the_control_endpoint() -> None:
    with MetronomeSimulator() as sim:
        control = f"{sim.url}/_simulator/gateway"
        headers = {"Authorization": f"Bearer {sim.token}"}

        state = requests.put(control, json={"max_line_items": 3, "seconds": 0.5}, headers=headers, timeout=10)
        refused = requests.put(control, json={"max_line_items": 2.5}, headers=headers, timeout=10)
        set_to = sim.gateway_timeout
        removed = requests.delete(control, headers=headers, timeout=10)

    assert state.json()["gateway_timeout"] == {"max_line_items": 3, "seconds": 0.5}
    assert set_to == GatewayTimeout(3, 0.5)
    assert refused.status_code == 400
    assert removed.json()["gateway_timeout"] is None


@pytest.mark.parametrize(
    ("text", "expected"), [("300", GatewayTimeout(300)), ("40:1.5", GatewayTimeout(40, 1.5))]
)
def test_the_command_line_form(text: str, expected: GatewayTimeout) -> None:
    assert gateway_timeout(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "many", "3:soon", "3:-1"])
def test_a_bad_command_line_form_says_what_to_write(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="MAX_LINE_ITEMS"):
        gateway_timeout(text)


def test_a_held_page_is_answered_once_the_awaited_request_arrives() -> None:
    with MetronomeSimulator(default_page_size=10) as sim:
        sim.inject(Fault.hold_page(until="/costs", seconds=30))
        first = get(sim, "/v1/customers")
        cursor = first.json()["next_page"]
        second: list[requests.Response] = []
        listing = threading.Thread(
            target=lambda: second.append(get(sim, "/v1/customers", {"next_page": cursor}))
        )
        listing.start()
        costs = get(sim, f"/v1/customers/{sim.costs_customer_ids[0]}/costs", ONE_DAY)
        listing.join(timeout=30)
        records = sim.requests

    assert costs.status_code == 200
    assert second[0].status_code == 200
    paths = [record.path for record in records]
    held = next(record for record in records if "next_page" in record.query)
    assert paths.index(f"/v1/customers/{sim.costs_customer_ids[0]}/costs") < (held.arrived_before_answer or 0)
    assert records[0].arrived_before_answer == 1
