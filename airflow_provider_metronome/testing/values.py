"""Values written exactly as given, and the page faults that bend a page's values.

Money is decimal inside Metronome, and JSON numbers may carry any number of digits: a page spoiled here
carries the texts it was given verbatim (:class:`Raw`), never rounded through a Python float.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import cycle
from typing import Any, Literal

from airflow_provider_metronome.testing.accounts import BilledSource
from airflow_provider_metronome.testing.data import JsonObject

WrongType = Literal["string", "boolean"]
"""What ``Fault.wrong_type`` writes instead of a number: its text as a JSON string, or ``true``."""

# The number grammar of RFC 8259: whatever matches is valid JSON text for a number.
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
# LINE SEPARATOR, PARAGRAPH SEPARATOR and NEXT LINE: valid unescaped in JSON strings, yet line breaks to
# JavaScript (before ES2019), to str.splitlines() and to many CSV and log tools.
ODD_TEXT = "\u2028\u2029\u0085"

# Where dumps() leaves a Raw value: NUL is always escaped by json, and no generated text contains it.
_PLACEHOLDER = "\x00raw:{}\x00"
_ENCODED_PLACEHOLDER = re.compile(r'"\\u0000raw:([0-9]+)\\u0000"')
_MONEY_KEYS: dict[BilledSource, frozenset[str]] = {
    "costs": frozenset({"cost"}),
    "invoice_breakdowns": frozenset({"total"}),
}
# Quantities and unit prices: exact numbers too, though no total adds them up.
_QUANTITY_KEYS: dict[BilledSource, frozenset[str]] = {
    "costs": frozenset(),
    "invoice_breakdowns": frozenset({"quantity", "unit_price"}),
}
_LINE_ITEM_LISTS = frozenset({"line_item_breakdown", "line_items"})

Node = tuple[Any, Any, Any]
"""A JSON value and where it is: (the list or object holding it, its index or key, the value)."""


@dataclass(frozen=True)
class Raw:
    """JSON text that :func:`dumps` writes verbatim where this value stands."""

    text: str


def dumps(payload: object) -> bytes:
    """``payload`` as compact UTF-8 JSON, with each :class:`Raw` written as its text.

    NaN and Infinity are written as bare tokens, which is what ``Fault.nan_body`` wants and nothing
    else makes.
    """
    raws: list[str] = []

    def placeholder(value: object) -> str:
        if not isinstance(value, Raw):
            raise TypeError(f"not JSON serializable: {value!r}")
        raws.append(value.text)
        return _PLACEHOLDER.format(len(raws) - 1)

    text = json.dumps(payload, separators=(",", ":"), default=placeholder)
    if raws:
        text = _ENCODED_PLACEHOLDER.sub(lambda match: raws[int(match.group(1))], text)
    return text.encode()


def number_texts(texts: Sequence[str]) -> tuple[str, ...]:
    """``texts`` checked to be JSON numbers (at least one), so a spoiled page stays valid JSON."""
    if isinstance(texts, str) or not texts:
        raise ValueError("give a non-empty sequence of number texts")
    for text in texts:
        if not isinstance(text, str) or not JSON_NUMBER.fullmatch(text):
            raise ValueError(f"not a JSON number: {text!r}")
    return tuple(texts)


def _nodes(value: Any, holder: Any = None, where: Any = None) -> Iterator[Node]:
    """Every value inside ``value``, itself first, in the order a JSON document writes them."""
    yield holder, where, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, value, key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, value, index)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(items: list[JsonObject], keys: frozenset[str]) -> Iterator[Node]:
    return (node for node in _nodes(items) if node[1] in keys and _is_number(node[2]))


def exact_numbers(
    items: list[JsonObject], source: BilledSource, texts: Sequence[str]
) -> list[JsonObject] | None:
    """``items`` with every money, quantity and unit price number replaced, in document order, by the next of ``texts``.

    None when they hold no such number.
    """
    spoiled = copy.deepcopy(items)
    found = list(_numbers(spoiled, _MONEY_KEYS[source] | _QUANTITY_KEYS[source]))
    for (holder, key, _), text in zip(found, cycle(texts)):
        holder[key] = Raw(text)
    return spoiled if found else None


def wrong_type(items: list[JsonObject], source: BilledSource, kind: WrongType) -> list[JsonObject] | None:
    """``items`` with their first money number (in document order) a JSON string of its text, or ``true``."""
    spoiled = copy.deepcopy(items)
    for holder, key, value in _numbers(spoiled, _MONEY_KEYS[source]):
        holder[key] = json.dumps(value) if kind == "string" else True
        return spoiled
    return None


def duplicate_key(items: list[JsonObject], source: BilledSource) -> list[JsonObject] | None:
    """``items`` whose first object with a money field writes that key twice: its value, then another.

    Python's ``json`` keeps the last value, other parsers the first, strict ones refuse the page.
    """
    spoiled = copy.deepcopy(items)
    for holder, where, value in _nodes(spoiled):
        if not isinstance(value, dict):
            continue
        key = next((key for key in value if key in _MONEY_KEYS[source] and _is_number(value[key])), None)
        if key is not None:
            holder[where] = Raw(_object_text(value, key, _other_amount(value[key])))
            return spoiled
    return None


def _other_amount(amount: float) -> float:
    # In hundredths, as the data is made: a float sum such as 0.1 + 1 would print as 1.1000000000000001.
    return (round(amount * 100) + 100) / 100


def _object_text(value: JsonObject, twice: str, second: float) -> str:
    fields = [f"{json.dumps(key)}:{json.dumps(item, separators=(',', ':'))}" for key, item in value.items()]
    position = list(value).index(twice)
    fields.insert(position + 1, f"{json.dumps(twice)}:{json.dumps(second)}")
    return "{" + ",".join(fields) + "}"


def odd_text(items: list[JsonObject]) -> list[JsonObject] | None:
    """``items`` whose first line item name has :data:`ODD_TEXT` in its middle, written as raw UTF-8."""
    spoiled = copy.deepcopy(items)
    for _, key, value in _nodes(spoiled):
        if key in _LINE_ITEM_LISTS and value and isinstance(value[0].get("name"), str):
            name = value[0]["name"]
            middle = len(name) // 2
            value[0]["name"] = Raw(json.dumps(name[:middle] + ODD_TEXT + name[middle:], ensure_ascii=False))
            return spoiled
    return None


def foreign_customer(items: list[JsonObject], other_customer_id: str | None) -> list[JsonObject] | None:
    """``items`` (invoices) whose first one names ``other_customer_id`` as its customer."""
    if other_customer_id is None or "customer_id" not in items[0]:
        return None
    spoiled = copy.deepcopy(items[0])
    spoiled["customer_id"] = other_customer_id
    return [spoiled, *items[1:]]
