"""Pydantic models of the Metronome objects this provider reads, with every number exact.

Metronome keeps money as arbitrary-precision decimals, so no number passes through a float here:
:func:`parse_json` reads an answer with each JSON number as a :class:`JsonNumber` (a ``Decimal``
that remembers the digits as sent), and the models accept only numbers where the API documents one
(a string such as ``"12.50"`` or a boolean is a broken answer, never a cost).

Models keep fields they do not know (Metronome adds fields over time). A costs window or a breakdown
also keeps the object exactly as it was sent (:attr:`DayObject.sent`): the ``raw`` record format
writes that, key order and digits included.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    StrictFloat,
    StrictInt,
    ValidatorFunctionWrapHandler,
    model_validator,
    with_config,
)
from typing_extensions import NotRequired, TypedDict


class JsonNumber(Decimal):
    """A JSON number exactly as sent: a ``Decimal`` whose ``str()`` is the text of the answer.

    ``JsonNumber("1e5") == 100000`` and ``str(JsonNumber("1e5")) == "1e5"``; arithmetic gives plain
    ``Decimal`` values.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonNumber:
        number = super().__new__(cls, text)
        if not number.is_finite():
            # NaN and Infinity are not JSON: a number that is one is a broken answer, never a cost.
            raise ValueError(f"{text} is not a JSON number")
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"JsonNumber({self.text!r})"

    def __reduce__(self) -> tuple[type[JsonNumber], tuple[str]]:
        return (JsonNumber, (self.text,))


class BrokenJsonError(ValueError):
    """JSON that can be read but not trusted: a key twice in one object, or NaN / Infinity."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BrokenJsonError(
                    f'names the key "{key}" twice in one object, so which value is meant cannot be known'
                )
            seen.add(key)
    return obj


def _refuse_constant(name: str) -> Any:
    raise BrokenJsonError(f"holds a value outside JSON (NaN or Infinity): {name}")


def parse_json(data: str | bytes | bytearray) -> Any:
    """Parse JSON with every number a :class:`JsonNumber`; a key repeated in an object is refused.

    Which of two values under one key is the real one cannot be known (parsers disagree), so a
    duplicate key makes the answer broken rather than taking either.

    :raises BrokenJsonError: a key twice in one object, or NaN / Infinity.
    :raises ValueError: not JSON at all.
    """
    return json.loads(
        data,
        parse_float=JsonNumber,
        parse_int=JsonNumber,
        parse_constant=_refuse_constant,
        object_pairs_hook=_unique_keys,
    )


def _exact(value: Any) -> msgspec.Raw:
    if isinstance(value, JsonNumber):
        return msgspec.Raw(value.text.encode())
    if isinstance(value, Decimal) and value.is_finite():
        return msgspec.Raw(str(value).encode())
    raise TypeError(f"{type(value).__name__} {value!r} cannot be written as JSON")


_ENCODER = msgspec.json.Encoder(enc_hook=_exact)


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``, each :class:`JsonNumber` written with the digits it was sent with.

    Keys keep their order. A float that is NaN or infinite would be written as null: values parsed
    or validated here never hold one; see :func:`refuse_non_finite` for any other value.
    """
    return _ENCODER.encode(value)


def refuse_non_finite(value: Any) -> None:
    """Raise ValueError if ``value`` holds a NaN or infinite float anywhere (JSON has no such number)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"a record holds {value}, which is not JSON; it cannot be written")
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    )
    for item in children:
        refuse_non_finite(item)


def _as_json_number(value: int | float) -> JsonNumber:
    # Python numbers (a model built in code, not parsed from an answer): an int's digits, or a
    # float's shortest repr, which is what the JSON it came from said.
    return JsonNumber(repr(value))


Number = Annotated[
    InstanceOf[JsonNumber] | Annotated[StrictInt | StrictFloat, AfterValidator(_as_json_number)],
    Field(union_mode="left_to_right"),
]
"""A JSON number where the API documents one; always a :class:`JsonNumber` once validated."""


class ExactJsonModel(BaseModel):
    """A model whose JSON is read by :func:`parse_json`, so that numbers stay exact."""

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Any:
        """Validate JSON text read by :func:`parse_json` (pydantic's own reader makes numbers floats)."""
        return cls.model_validate(parse_json(json_data), **kwargs)


class MetronomeModel(ExactJsonModel):
    """Base of every API object: unknown fields kept, absent fields left out when dumped."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, allow_inf_nan=False)

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """As pydantic's, without unset fields; ``mode="json"`` gives plain JSON types (numbers as
        ``int``/``float``, so long decimals lose digits: ``mode="python"`` keeps them exact)."""
        kwargs.setdefault("exclude_unset", True)
        if kwargs.get("mode") == "json":
            kwargs["mode"] = "python"
            dumped: dict[str, Any] = json.loads(dump_json(super().model_dump(**kwargs)))
            return dumped
        return super().model_dump(**kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        """The model as JSON with every number's digits as sent (see :func:`dump_json`)."""
        kwargs.setdefault("exclude_unset", True)
        return dump_json(self.model_dump(mode="python", **kwargs)).decode()


class DayObject(MetronomeModel):
    """An object of a per-customer daily source, which remembers exactly what was sent."""

    @model_validator(mode="wrap")
    @classmethod
    def _keep_sent(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        model = handler(data)
        if isinstance(data, dict):
            # A plain instance attribute, which serializing ignores: a pydantic private attribute
            # would cost about 30 us an object, three times what validating a page's objects takes.
            object.__setattr__(model, "_sent", data)
        return model

    @property
    def sent(self) -> dict[str, Any]:
        """The object as the API sent it (its keys in their order, numbers as :class:`JsonNumber`)."""
        sent: dict[str, Any] | None = self.__dict__.get("_sent")
        return sent if sent is not None else self.model_dump(mode="python")


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


# The objects inside a costs window or a breakdown are typed dicts, checked as strictly as the
# models but not made into model instances: a page holds thousands of them, and building an
# instance for each took most of a page's CPU.
_NESTED = ConfigDict(extra="allow", allow_inf_nan=False)


@with_config(_NESTED)
class LineItemCost(TypedDict):
    """One line of a credit type's breakdown in a costs window."""

    name: str
    cost: Number
    group_key: NotRequired[str | None]
    group_value: NotRequired[str | None]


@with_config(_NESTED)
class CreditTypeCost(TypedDict):
    """Costs of one credit type (for example "USD (cents)") in a costs window."""

    name: NotRequired[str | None]
    cost: NotRequired[Number | None]
    line_item_breakdown: NotRequired[list[LineItemCost] | None]


class CostWindow(DayObject):
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


@with_config(_NESTED)
class CreditType(TypedDict):
    """A credit type as invoices name it."""

    id: str
    name: str


@with_config(_NESTED)
class InvoiceLineItem(TypedDict):
    """A line item of an invoice breakdown."""

    name: str
    total: Number
    credit_type: NotRequired[CreditType | None]
    type: NotRequired[str | None]
    quantity: NotRequired[Number | None]
    unit_price: NotRequired[Number | None]
    product_id: NotRequired[str | None]
    product_type: NotRequired[str | None]
    group_key: NotRequired[str | None]
    group_value: NotRequired[str | None]
    presentation_group_values: NotRequired[dict[str, str | None] | None]
    pricing_group_values: NotRequired[dict[str, str | None] | None]


class InvoiceBreakdown(DayObject):
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
    # The invoice's billing period (a month, say), which holds the breakdown's window.
    start_timestamp: str | None = None
    end_timestamp: str | None = None

    @property
    def window_start(self) -> str:
        return self.breakdown_start_timestamp

    @property
    def window_end(self) -> str:
        return self.breakdown_end_timestamp


SourceObject = CostWindow | InvoiceBreakdown
"""An object of a per-customer daily source: a costs window or an invoice breakdown."""

ItemT = TypeVar("ItemT", bound=MetronomeModel)


class Page(ExactJsonModel, Generic[ItemT]):
    """One page of any list endpoint."""

    data: list[ItemT]
    next_page: str | None = None
