"""Record flattening: the ``raw`` and ``line_items`` formats and their order."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_metronome.models import CostWindow, InvoiceBreakdown
from airflow_provider_metronome.output.records import (
    BREAKDOWN_LINE_ITEM_FIELDS,
    COSTS_LINE_ITEM_FIELDS,
    line_item_records,
    raw_record,
    to_records,
)
from airflow_provider_metronome.output.sinks import plain_json
from airflow_provider_metronome.testing import MetronomeSimulator

DAY = dt.date(2024, 1, 5)
CUSTOMER = "4e1c9b58-0a4c-4b8e-9d0e-5f0e2d7c1a3b"
USD = {"id": "2714e483-4ff1-48e4-9e25-ac732e8f24f2", "name": "USD (cents)"}
CREDITS = {"id": "7b2f9c1e-5a34-4d8e-9f60-3c1d2e4b5a69", "name": "Cloud Credits"}


@pytest.fixture(scope="module")
def data() -> MetronomeSimulator:
    """The simulator's generated data (no server needed to read it)."""
    return MetronomeSimulator(now=dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc))


def cost_window(credit_types: dict[str, Any], day: str = "2024-01-05") -> CostWindow:
    next_day = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    return CostWindow.model_validate(
        {
            "start_timestamp": f"{day}T00:00:00Z",
            "end_timestamp": f"{next_day}T00:00:00Z",
            "credit_types": credit_types,
        }
    )


def invoice(line_items: list[dict[str, Any]], **fields: Any) -> InvoiceBreakdown:
    return InvoiceBreakdown.model_validate(
        {
            "id": "9a0d1c7e-3b2f-4c5d-8e6f-7a8b9c0d1e2f",
            "credit_type": USD,
            "customer_id": CUSTOMER,
            "line_items": line_items,
            "status": "DRAFT",
            "total": 12.5,
            "type": "USAGE",
            "breakdown_start_timestamp": "2024-01-05T00:00:00Z",
            "breakdown_end_timestamp": "2024-01-06T00:00:00Z",
            **fields,
        }
    )


def test_raw_cost_record_is_the_api_object_with_customer_id_first(data: MetronomeSimulator) -> None:
    customer_id = data.active_customer_ids[0]
    answer = data.costs_for(customer_id, DAY)

    record = raw_record(customer_id, CostWindow.model_validate(answer))

    assert list(record) == ["customer_id", *answer]
    assert record == {"customer_id": customer_id, **answer}


def test_raw_breakdown_record_keeps_its_own_customer_id_once(data: MetronomeSimulator) -> None:
    customer_id = data.active_customer_ids[0]
    answer = data.breakdowns_for(customer_id, DAY, DAY + dt.timedelta(days=1))[0]

    record = raw_record(customer_id, InvoiceBreakdown.model_validate(answer))

    assert next(iter(record)) == "customer_id"
    assert sorted(record) == sorted(answer)
    assert record == answer


def test_raw_record_keeps_unknown_fields_integers_and_absent_keys() -> None:
    window = cost_window({USD["id"]: {"name": USD["name"], "cost": 0, "new_field": [1, 2]}})
    window_json = window.model_dump(mode="json")

    record = raw_record(CUSTOMER, window)

    credit_type = record["credit_types"][USD["id"]]
    assert credit_type == {"name": USD["name"], "cost": 0, "new_field": [1, 2]}
    assert isinstance(credit_type["cost"], int)
    assert "line_item_breakdown" not in credit_type
    assert record == {"customer_id": CUSTOMER, **window_json}


def test_cost_line_items_are_one_flat_record_per_breakdown_line(data: MetronomeSimulator) -> None:
    for customer_id in data.active_customer_ids[:8]:
        answer = data.costs_for(customer_id, DAY)
        records = list(line_item_records(customer_id, CostWindow.model_validate(answer)))

        for record in records:
            assert tuple(record) == COSTS_LINE_ITEM_FIELDS
            assert record["customer_id"] == customer_id
            assert record["start_timestamp"] == answer["start_timestamp"]
            assert record["end_timestamp"] == answer["end_timestamp"]
        for credit_type_id, credit_type in answer["credit_types"].items():
            lines = [record for record in records if record["credit_type_id"] == credit_type_id]
            expected = credit_type.get("line_item_breakdown") or [{"name": None, "cost": credit_type["cost"]}]
            assert [line["line_item_name"] for line in lines] == [item["name"] for item in expected]
            assert [line["group_value"] for line in lines] == [item.get("group_value") for item in expected]
            assert {line["credit_type_name"] for line in lines} == {credit_type["name"]}
            # The flat lines add up to the credit type's cost: nothing lost, nothing counted twice.
            assert sum(Decimal(str(line["cost"])) for line in lines) == Decimal(str(credit_type["cost"]))


@pytest.mark.parametrize("breakdown", [None, []], ids=["key-missing", "empty-list"])
def test_credit_type_without_breakdown_gives_one_line_with_its_cost(breakdown: list[Any] | None) -> None:
    compute = {"name": "Compute Units", "cost": 41.5}
    if breakdown is not None:
        compute["line_item_breakdown"] = breakdown
    window = cost_window(
        {
            USD["id"]: {
                "name": USD["name"],
                "cost": 3,
                "line_item_breakdown": [{"name": "Seats", "cost": 3}],
            },
            "c4e1a7d2-9b3f-4e5a-8c6d-1f2e3d4c5b6a": compute,
        }
    )

    records = list(line_item_records(CUSTOMER, window))

    assert records == [
        {
            "customer_id": CUSTOMER,
            "start_timestamp": "2024-01-05T00:00:00Z",
            "end_timestamp": "2024-01-06T00:00:00Z",
            "credit_type_id": USD["id"],
            "credit_type_name": USD["name"],
            "line_item_name": "Seats",
            "group_key": None,
            "group_value": None,
            "cost": 3,
            "extra": None,
        },
        {
            "customer_id": CUSTOMER,
            "start_timestamp": "2024-01-05T00:00:00Z",
            "end_timestamp": "2024-01-06T00:00:00Z",
            "credit_type_id": "c4e1a7d2-9b3f-4e5a-8c6d-1f2e3d4c5b6a",
            "credit_type_name": "Compute Units",
            "line_item_name": None,
            "group_key": None,
            "group_value": None,
            "cost": 41.5,
            "extra": None,
        },
    ]


def test_breakdown_line_items_carry_quantity_product_and_invoice(data: MetronomeSimulator) -> None:
    customer_id = data.active_customer_ids[1]
    answers = data.breakdowns_for(customer_id, DAY, DAY + dt.timedelta(days=1))
    assert answers, "the simulator should have usage for this customer and day"

    for answer in answers:
        records = list(line_item_records(customer_id, InvoiceBreakdown.model_validate(answer)))

        assert len(records) == len(answer["line_items"])
        for record, item in zip(records, answer["line_items"], strict=True):
            assert tuple(record) == BREAKDOWN_LINE_ITEM_FIELDS
            assert plain_json(record) == {
                "customer_id": customer_id,
                "start_timestamp": answer["breakdown_start_timestamp"],
                "end_timestamp": answer["breakdown_end_timestamp"],
                "credit_type_id": item["credit_type"]["id"],
                "credit_type_name": item["credit_type"]["name"],
                "line_item_name": item["name"],
                "group_key": item.get("group_key"),
                "group_value": item.get("group_value"),
                "cost": item["total"],
                "quantity": item["quantity"],
                "unit_price": item["unit_price"],
                "product_id": item["product_id"],
                "product_type": item["product_type"],
                "line_item_type": item["type"],
                "presentation_group_values": item.get("presentation_group_values"),
                "pricing_group_values": item.get("pricing_group_values"),
                "invoice_id": answer["id"],
                "invoice_status": answer["status"],
                "invoice_start_timestamp": answer["start_timestamp"],
                "invoice_end_timestamp": answer["end_timestamp"],
                "extra": {"ending_before": item["ending_before"]},
            }


def test_breakdown_line_item_without_credit_type_uses_the_invoice_one() -> None:
    records = list(line_item_records(CUSTOMER, invoice([{"name": "Seats", "total": 12.5}])))

    assert [
        (r["credit_type_id"], r["credit_type_name"], r["quantity"], r["product_id"]) for r in records
    ] == [(USD["id"], USD["name"], None, None)]


def test_invoice_without_line_items_gives_one_line_with_its_total() -> None:
    records = list(line_item_records(CUSTOMER, invoice([], credit_type=CREDITS, total=7, status="FINALIZED")))

    assert records == [
        {
            "customer_id": CUSTOMER,
            "start_timestamp": "2024-01-05T00:00:00Z",
            "end_timestamp": "2024-01-06T00:00:00Z",
            "credit_type_id": CREDITS["id"],
            "credit_type_name": CREDITS["name"],
            "line_item_name": None,
            "group_key": None,
            "group_value": None,
            "cost": 7,
            "quantity": None,
            "unit_price": None,
            "product_id": None,
            "product_type": None,
            "line_item_type": None,
            "presentation_group_values": None,
            "pricing_group_values": None,
            "invoice_id": "9a0d1c7e-3b2f-4c5d-8e6f-7a8b9c0d1e2f",
            "invoice_status": "FINALIZED",
            "invoice_start_timestamp": None,
            "invoice_end_timestamp": None,
            "extra": None,
        }
    ]


def test_to_records_in_both_formats(data: MetronomeSimulator) -> None:
    customer_id = data.active_customer_ids[2]
    windows = [
        CostWindow.model_validate(data.costs_for(customer_id, DAY + dt.timedelta(days=offset)))
        for offset in range(3)
    ]

    raw = to_records("raw", customer_id, windows)
    flat = to_records("line_items", customer_id, windows)

    assert [record["start_timestamp"] for record in raw] == [w.start_timestamp for w in windows]
    assert flat == [record for window in windows for record in line_item_records(customer_id, window)]
