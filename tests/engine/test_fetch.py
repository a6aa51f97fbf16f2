"""The fetch engine's check of each customer's answer against the window."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from airflow_provider_metronome.engine.fetch import days_of_objects
from airflow_provider_metronome.exceptions import MetronomeResponseError
from airflow_provider_metronome.models import CostWindow, InvoiceBreakdown
from airflow_provider_metronome.window import DayWindow

CUSTOMER = "4e1c9b58-0a4c-4b8e-9d0e-5f0e2d7c1a3b"
USD = {"id": "2714e483-4ff1-48e4-9e25-ac732e8f24f2", "name": "USD (cents)"}
CREDITS = {"id": "7b2f9c1e-5a34-4d8e-9f60-3c1d2e4b5a69", "name": "Cloud Credits"}
WINDOW = DayWindow.of("2024-01-05", "2024-01-08")


def costs(day: str, end: str | None = None) -> CostWindow:
    end = end or f"{dt.date.fromisoformat(day[:10]) + dt.timedelta(days=1)}T00:00:00Z"
    return CostWindow.model_validate({"start_timestamp": day, "end_timestamp": end, "credit_types": {}})


def invoice(invoice_id: str, day: str, **fields: Any) -> InvoiceBreakdown:
    start = dt.date.fromisoformat(day)
    return InvoiceBreakdown.model_validate(
        {
            "id": invoice_id,
            "customer_id": CUSTOMER,
            "credit_type": USD,
            "line_items": [],
            "status": "DRAFT",
            "total": 0,
            "type": "USAGE",
            "breakdown_start_timestamp": f"{start}T00:00:00Z",
            "breakdown_end_timestamp": f"{start + dt.timedelta(days=1)}T00:00:00Z",
            **fields,
        }
    )


def test_days_in_order_and_the_api_order_within_a_day() -> None:
    answer = [
        invoice("a", "2024-01-06"),
        invoice("b", "2024-01-05", credit_type=CREDITS),
        invoice("c", "2024-01-05"),
    ]

    paired = days_of_objects(answer, WINDOW, "invoice_breakdowns", CUSTOMER)

    assert [(str(day), item.id) for day, item in paired] == [
        ("2024-01-05", "b"),
        ("2024-01-05", "c"),
        ("2024-01-06", "a"),
    ]


@pytest.mark.parametrize(
    "start", ["2024-01-05T00:00:00Z", "2024-01-05T00:00:00.000Z", "2024-01-05T00:00:00+00:00"]
)
def test_every_spelling_of_midnight_utc_is_a_day(start: str) -> None:
    paired = days_of_objects([costs(start)], WINDOW, "costs", CUSTOMER)

    assert [day for day, _ in paired] == [dt.date(2024, 1, 5)]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ([costs("2019-01-01T00:00:00Z")], "a window for 2019-01-01, outside 2024-01-05..2024-01-07"),
        ([costs("2024-01-08T00:00:00Z")], "a window for 2024-01-08, outside"),
        (
            [costs("2024-01-05T00:00:00Z"), costs("2024-01-06T00:00:00Z"), costs("2024-01-05T00:00:00Z")],
            "the window of 2024-01-05 twice",
        ),
        ([costs("2024-01-05T05:00:00Z")], "that is not one whole UTC day"),
        ([costs("2024-01-05T00:00:00Z", "2024-01-07T00:00:00Z")], "that is not one whole UTC day"),
        ([costs("2024-01-05T00:00:00-05:00")], "that is not one whole UTC day"),
        ([costs("yesterday", "today")], "that is not one whole UTC day"),
    ],
)
def test_an_answer_that_does_not_tile_the_window_is_an_error(answer: list[CostWindow], message: str) -> None:
    with pytest.raises(MetronomeResponseError, match=message) as err:
        days_of_objects(answer, WINDOW, "costs", CUSTOMER)

    assert err.value.path == f"/v1/customers/{CUSTOMER}/costs"
    assert f"customer {CUSTOMER}" in str(err.value)


def test_an_invoice_twice_on_one_day_is_an_error_but_two_invoices_are_not() -> None:
    two = [invoice("a", "2024-01-05"), invoice("b", "2024-01-05", credit_type=CREDITS)]
    assert len(days_of_objects(two, WINDOW, "invoice_breakdowns", CUSTOMER)) == 2

    with pytest.raises(MetronomeResponseError, match="invoice a twice for 2024-01-05") as err:
        days_of_objects([*two, invoice("a", "2024-01-05")], WINDOW, "invoice_breakdowns", CUSTOMER)
    assert err.value.path == f"/v1/customers/{CUSTOMER}/invoices/breakdowns"


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2024-01-05T00:00:00Z", "2024-01-06T00:00:00Z"),
        ("2024-01-05T00:00:00+00:00", "2024-01-06T00:00:00+00:00"),
        ("2024-01-05T00:00:00.000Z", "2024-01-06T00:00:00.000Z"),
        ("2024-01-05T01:00:00+01:00", "2024-01-06T00:00:00Z"),
    ],
)
def test_every_spelling_of_a_whole_utc_day_counts_for_that_day(start: str, end: str) -> None:
    (pair,) = days_of_objects([costs(start, end)], WINDOW, "costs", CUSTOMER)

    assert pair[0] == dt.date(2024, 1, 5)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2024-01-05T00:00:00Z", "2024-01-07T00:00:00Z"),
        ("2024-01-05T00:00:00Z", "2024-01-05T00:00:00Z"),
        ("2024-01-05T00:00:00+01:00", "2024-01-06T00:00:00+01:00"),
        ("2024-01-05T00:00:00Z", "not a time"),
    ],
)
def test_windows_that_are_not_one_whole_utc_day_are_refused(start: str, end: str) -> None:
    with pytest.raises(MetronomeResponseError, match="not one whole UTC day"):
        days_of_objects([costs(start, end)], WINDOW, "costs", CUSTOMER)
