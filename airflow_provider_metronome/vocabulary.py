"""The names every layer shares: what can be fetched, in which format, with which policies.

One home, so that the hook, the engine, the output and the operators all speak of the same values.
"""

from __future__ import annotations

from typing import Literal

Source = Literal["costs", "invoice_breakdowns"]
"""Where a customer's daily objects come from: ``/costs`` (plans) or ``/invoices/breakdowns`` (contracts)."""
SOURCES: tuple[Source, ...] = ("costs", "invoice_breakdowns")

RecordFormat = Literal["raw", "line_items"]
"""``raw``: each object as Metronome sent it; ``line_items``: one flat record per line item."""
RECORD_FORMATS: tuple[RecordFormat, ...] = ("raw", "line_items")

CustomerErrorPolicy = Literal["fail", "skip"]
"""What a customer's own 4xx does to a run: fail it, or skip that customer and name it in the manifest."""
CUSTOMER_ERROR_POLICIES: tuple[CustomerErrorPolicy, ...] = ("fail", "skip")

MissingDaysPolicy = Literal["fail", "accept"]
"""What a day Metronome has not produced yet does to a run: fail it, or write it and list it."""
MISSING_DAYS_POLICIES: tuple[MissingDaysPolicy, ...] = ("fail", "accept")

DEFAULT_MAX_WORKERS = 8
"""Customers fetched at once by one task."""
MAX_PAGE_SIZE = 100
"""The most items Metronome returns in one page."""

__all__ = [
    "CUSTOMER_ERROR_POLICIES",
    "DEFAULT_MAX_WORKERS",
    "MAX_PAGE_SIZE",
    "MISSING_DAYS_POLICIES",
    "RECORD_FORMATS",
    "SOURCES",
    "CustomerErrorPolicy",
    "MissingDaysPolicy",
    "RecordFormat",
    "Source",
]
