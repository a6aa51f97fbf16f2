"""Pydantic models of the Metronome objects this provider reads.

Models keep fields they do not know (Metronome adds fields over time) and remember which fields
were sent, so ``model.model_dump(mode="json")`` gives back the JSON the API returned for that item.
Timestamps stay the strings Metronome sent; use :func:`airflow_provider_metronome.utils.window.to_utc`
to compare them.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt

# Integers stay integers: a cost of 0 must come back as 0, not 0.0.
Number = StrictInt | float


class MetronomeModel(BaseModel):
    """Base of every API object: unknown fields kept, absent fields left out when dumped."""

    # NaN and Infinity are not JSON: a number that is one is a broken answer, never a cost.
    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=False)

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("exclude_unset", True)
        return super().model_dump(**kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        kwargs.setdefault("exclude_unset", True)
        return super().model_dump_json(**kwargs)


class CurrentBillableStatus(MetronomeModel):
    value: str
    effective_at: str | None = None


class Customer(MetronomeModel):
    """A Metronome customer (``GET /v1/customers``)."""

    id: str
    name: str
    external_id: str | None = None
    ingest_aliases: list[str] = Field(default_factory=list)
    custom_fields: dict[str, str] = Field(default_factory=dict)
    customer_config: dict[str, Any] | None = None
    created_at: str | None = None
    updated_at: str | None = None
    archived_at: str | None = None
    current_billable_status: CurrentBillableStatus | None = None


class LineItemCost(MetronomeModel):
    """One line of a credit type's breakdown in a costs window."""

    name: str
    cost: Number
    group_key: str | None = None
    group_value: str | None = None


class CreditTypeCost(MetronomeModel):
    """Costs of one credit type (for example "USD (cents)") in a costs window."""

    name: str | None = None
    cost: Number | None = None
    line_item_breakdown: list[LineItemCost] | None = None


class CostWindow(MetronomeModel):
    """One day of a customer's pending costs (``GET /v1/customers/{id}/costs``)."""

    start_timestamp: str
    end_timestamp: str
    credit_types: dict[str, CreditTypeCost]

    @property
    def window_start(self) -> str:
        return self.start_timestamp

    @property
    def window_end(self) -> str:
        return self.end_timestamp


class CreditType(MetronomeModel):
    id: str
    name: str


class InvoiceLineItem(MetronomeModel):
    """A line item of an invoice breakdown."""

    name: str
    total: Number
    credit_type: CreditType | None = None
    type: str | None = None
    quantity: Number | None = None
    product_id: str | None = None
    group_key: str | None = None
    group_value: str | None = None
    presentation_group_values: dict[str, str | None] | None = None


class InvoiceBreakdown(MetronomeModel):
    """An invoice for one breakdown window (``GET /v1/customers/{id}/invoices/breakdowns``)."""

    id: str
    customer_id: str
    credit_type: CreditType
    line_items: list[InvoiceLineItem]
    status: str
    total: Number
    type: str
    breakdown_start_timestamp: str
    breakdown_end_timestamp: str

    @property
    def window_start(self) -> str:
        return self.breakdown_start_timestamp

    @property
    def window_end(self) -> str:
        return self.breakdown_end_timestamp


SourceObject = CostWindow | InvoiceBreakdown
"""An object of a per-customer daily source: a costs window or an invoice breakdown."""

ItemT = TypeVar("ItemT", bound=MetronomeModel)


class Page(BaseModel, Generic[ItemT]):
    """One page of any list endpoint."""

    data: list[ItemT]
    next_page: str | None = None
