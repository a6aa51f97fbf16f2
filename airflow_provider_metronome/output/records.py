"""Turning Metronome objects into output records: the ``raw`` and ``line_items`` formats.

``raw``: one record per object the API returned, as it returned it, with ``customer_id`` first.

``line_items``: one flat record per line item.

- costs (``/costs``): :data:`COSTS_LINE_ITEM_FIELDS`. A credit type without a line item breakdown (the
  key missing or empty) gives one record whose ``line_item_name``, ``group_key`` and ``group_value``
  are null and whose ``cost`` is the credit type's cost, so totals are never lost.
- invoice breakdowns: :data:`BREAKDOWN_LINE_ITEM_FIELDS`, the costs fields (``cost`` is the line
  item's ``total``; the credit type is the line item's, else the invoice's) followed by the line
  item's ``quantity``, ``unit_price``, ``product_id``, ``product_type``, ``line_item_type`` (its
  ``type``), ``presentation_group_values`` and ``pricing_group_values``, then the invoice's
  ``invoice_id``, ``invoice_status`` and billing period (``invoice_start_timestamp``,
  ``invoice_end_timestamp``: its ``start_timestamp``/``end_timestamp``, a month say, while
  ``start_timestamp``/``end_timestamp`` are the breakdown's day). An invoice without line items
  gives one record with null line-item fields and the invoice's ``total`` as ``cost``.

Both end with ``extra``: the line item's fields that no other field names (Metronome adds fields
over time), as an object, or null when there are none; so a new field is kept, never lost.

Every record is a plain ``dict`` of JSON values whose key order is fixed, so that the same answers
always encode to the same bytes (see :func:`~airflow_provider_metronome.output.encodings.encode_record`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import groupby
from typing import Any

from airflow_provider_metronome.models import (
    CostWindow,
    CreditTypeCost,
    InvoiceBreakdown,
    InvoiceLineItem,
    SourceObject,
)
from airflow_provider_metronome.vocabulary import RecordFormat

Record = dict[str, Any]
DayRecords = list[tuple[dt.date, list[Record]]]
"""One customer's records grouped by the UTC day of their object, in day order (days without any left out)."""

_COMMON_FIELDS: tuple[str, ...] = (
    "customer_id",
    "start_timestamp",
    "end_timestamp",
    "credit_type_id",
    "credit_type_name",
    "line_item_name",
    "group_key",
    "group_value",
    "cost",
)
COSTS_LINE_ITEM_FIELDS: tuple[str, ...] = (*_COMMON_FIELDS, "extra")
BREAKDOWN_LINE_ITEM_FIELDS: tuple[str, ...] = (
    *_COMMON_FIELDS,
    "quantity",
    "unit_price",
    "product_id",
    "product_type",
    "line_item_type",
    "presentation_group_values",
    "pricing_group_values",
    "invoice_id",
    "invoice_status",
    "invoice_start_timestamp",
    "invoice_end_timestamp",
    "extra",
)
# The keys of a line item that the fields above name; any other key goes to ``extra``.
_COSTS_LINE_KEYS = frozenset({"name", "cost", "group_key", "group_value"})
_BREAKDOWN_LINE_KEYS = frozenset(
    {
        "name",
        "total",
        "credit_type",
        "type",
        "quantity",
        "unit_price",
        "product_id",
        "product_type",
        "group_key",
        "group_value",
        "presentation_group_values",
        "pricing_group_values",
    }
)


def to_records(
    record_format: RecordFormat, customer_id: str, objects: Iterable[SourceObject]
) -> list[Record]:
    """One customer's objects as records of ``record_format``, in the objects' order."""
    if record_format == "raw":
        return [raw_record(customer_id, item) for item in objects]
    return [record for item in objects for record in line_item_records(customer_id, item)]


def to_day_records(
    record_format: RecordFormat, customer_id: str, day_objects: Sequence[tuple[dt.date, SourceObject]]
) -> DayRecords:
    """One customer's day-ordered objects as records of ``record_format``, grouped by day.

    Each day's records are exactly what :func:`to_records` makes of that day's objects alone, so a
    day cut out of a longer window encodes to the same bytes as a run of that day.
    """
    return [
        (day, to_records(record_format, customer_id, (item for _, item in pairs)))
        for day, pairs in groupby(day_objects, key=lambda pair: pair[0])
    ]


def raw_record(customer_id: str, item: SourceObject) -> Record:
    """The object exactly as the API sent it (keys in order, every number's digits), ``customer_id`` first.

    A breakdown carries its own ``customer_id``, which the fetch engine has checked is the one asked.
    """
    return {"customer_id": customer_id, **item.sent}


def line_item_records(customer_id: str, item: SourceObject) -> Iterator[Record]:
    """The flat line-item records of one costs window or one breakdown invoice."""
    if isinstance(item, CostWindow):
        return _cost_window_lines(customer_id, item)
    return _breakdown_lines(item)


def _cost_window_lines(customer_id: str, window: CostWindow) -> Iterator[Record]:
    for credit_type_id, credit_type in window.credit_types.items():
        common = {
            "customer_id": customer_id,
            "start_timestamp": window.start_timestamp,
            "end_timestamp": window.end_timestamp,
            "credit_type_id": credit_type_id,
            "credit_type_name": credit_type.get("name"),
        }
        yield from ({**common, **line} for line in _credit_type_lines(credit_type))


def _credit_type_lines(credit_type: CreditTypeCost) -> Iterator[Record]:
    lines = credit_type.get("line_item_breakdown")
    if not lines:
        yield {
            "line_item_name": None,
            "group_key": None,
            "group_value": None,
            "cost": credit_type.get("cost"),
            "extra": None,
        }
        return
    for line in lines:
        yield {
            "line_item_name": line["name"],
            "group_key": line.get("group_key"),
            "group_value": line.get("group_value"),
            "cost": line["cost"],
            "extra": _extra(line, _COSTS_LINE_KEYS),
        }


def _extra(line: Mapping[str, Any], named: frozenset[str]) -> Record | None:
    """The line item's fields that no record field names, or None when there are none."""
    extra = {key: value for key, value in line.items() if key not in named}
    return extra or None


def _breakdown_lines(invoice: InvoiceBreakdown) -> Iterator[Record]:
    invoice_fields = {
        "invoice_id": invoice.id,
        "invoice_status": invoice.status,
        "invoice_start_timestamp": invoice.start_timestamp,
        "invoice_end_timestamp": invoice.end_timestamp,
    }
    if not invoice.line_items:
        yield {
            "customer_id": invoice.customer_id,
            "start_timestamp": invoice.breakdown_start_timestamp,
            "end_timestamp": invoice.breakdown_end_timestamp,
            "credit_type_id": invoice.credit_type["id"],
            "credit_type_name": invoice.credit_type["name"],
            "line_item_name": None,
            "group_key": None,
            "group_value": None,
            "cost": invoice.total,
            "quantity": None,
            "unit_price": None,
            "product_id": None,
            "product_type": None,
            "line_item_type": None,
            "presentation_group_values": None,
            "pricing_group_values": None,
            **invoice_fields,
            "extra": None,
        }
        return
    for line in invoice.line_items:
        yield _breakdown_line(invoice, line) | invoice_fields | {"extra": _extra(line, _BREAKDOWN_LINE_KEYS)}


def _breakdown_line(invoice: InvoiceBreakdown, line: InvoiceLineItem) -> Record:
    credit_type = line.get("credit_type") or invoice.credit_type
    return {
        "customer_id": invoice.customer_id,
        "start_timestamp": invoice.breakdown_start_timestamp,
        "end_timestamp": invoice.breakdown_end_timestamp,
        "credit_type_id": credit_type["id"],
        "credit_type_name": credit_type["name"],
        "line_item_name": line["name"],
        "group_key": line.get("group_key"),
        "group_value": line.get("group_value"),
        "cost": line["total"],
        "quantity": line.get("quantity"),
        "unit_price": line.get("unit_price"),
        "product_id": line.get("product_id"),
        "product_type": line.get("product_type"),
        "line_item_type": line.get("type"),
        "presentation_group_values": line.get("presentation_group_values"),
        "pricing_group_values": line.get("pricing_group_values"),
    }


def record_amounts(record: Record) -> Iterator[tuple[str, Any]]:
    """(credit type name, amount) pairs of one record of any format."""
    if "credit_type_name" in record:  # line_items, either source
        yield str(record["credit_type_name"]), record["cost"]
    elif "credit_types" in record:  # raw costs window
        for credit_type_id, credit_type in record["credit_types"].items():
            yield str(credit_type.get("name") or credit_type_id), credit_type.get("cost")
    else:  # raw breakdown invoice
        yield str(record["credit_type"]["name"]), record["total"]


__all__ = [
    "BREAKDOWN_LINE_ITEM_FIELDS",
    "COSTS_LINE_ITEM_FIELDS",
    "DayRecords",
    "Record",
    "line_item_records",
    "raw_record",
    "record_amounts",
    "to_day_records",
    "to_records",
]
