"""CPU cost of one 100-window ``/costs`` page: the provider's parse, validate and serialize, against ``json``.

The page is real simulator output (one customer, 100 consecutive days, the simulator's default line-item
breakdowns), fetched once over HTTP. The provider's work per page is what the operator does with it:
``Page[CostWindow].model_validate_json`` (the hook's parse), ``days_of_objects`` (the fetch engine's
check and order), and ``to_day_lines`` (the lines the operator's object sinks write). The floor turns
the same bytes into the same JSON lines with the standard library only: ``json.loads``, then one
``json.dumps`` per window.
"""

from __future__ import annotations

import datetime as dt
import json
import timeit
from collections.abc import Callable
from typing import Any

import requests

from airflow_provider_metronome.engine.fetch import days_of_objects
from airflow_provider_metronome.models import CostWindow, Page
from airflow_provider_metronome.output.encodings import to_day_lines
from airflow_provider_metronome.testing import MetronomeSimulator
from airflow_provider_metronome.vocabulary import RecordFormat
from airflow_provider_metronome.window import DayWindow
from tests.benchmarks.common import PAGE_SIZE
from tests.benchmarks.simulator_process import FROZEN_NOW

FIRST_DAY = dt.date(2023, 9, 1)
TIMING_REPEATS = 7
TARGET_SECONDS_PER_REPEAT = 0.2


def fetch_page() -> tuple[str, bytes]:
    """A customer id and the body of one full page of its costs (100 daily windows)."""
    ending_before = FIRST_DAY + dt.timedelta(days=PAGE_SIZE)
    params: dict[str, str | int] = {
        "starting_on": f"{FIRST_DAY.isoformat()}T00:00:00Z",
        "ending_before": f"{ending_before.isoformat()}T00:00:00Z",
        "limit": PAGE_SIZE,
    }
    with MetronomeSimulator(unique_metric_customers=0, now=dt.datetime.fromisoformat(FROZEN_NOW)) as sim:
        customer_id = sim.active_customer_ids[0]
        response = requests.get(
            f"{sim.url}/v1/customers/{customer_id}/costs",
            params=params,
            headers={"Authorization": f"Bearer {sim.token}"},
            timeout=30,
        )
    response.raise_for_status()
    windows = len(response.json()["data"])
    if windows != PAGE_SIZE:
        raise RuntimeError(f"expected a page of {PAGE_SIZE} windows, got {windows}")
    return customer_id, response.content


def provider_pipeline(
    customer_id: str, body: bytes, record_format: RecordFormat
) -> Callable[[], list[bytes]]:
    page_type = Page[CostWindow]
    window = DayWindow.of(FIRST_DAY, FIRST_DAY + dt.timedelta(days=PAGE_SIZE))

    def run() -> list[bytes]:
        page = page_type.model_validate_json(body)
        day_objects = days_of_objects(page.data, window, "costs", customer_id)
        # What the operator's object sinks write: each day's encoded lines.
        return [line for _, lines in to_day_lines(record_format, customer_id, day_objects) for line in lines]

    return run


def json_floor(customer_id: str, body: bytes) -> Callable[[], list[bytes]]:
    def run() -> list[bytes]:
        windows = json.loads(body)["data"]
        return [
            (
                json.dumps({"customer_id": customer_id, **window}, ensure_ascii=False, separators=(",", ":"))
                + "\n"
            ).encode()
            for window in windows
        ]

    return run


def best_seconds(function: Callable[[], Any]) -> float:
    """The best of several timeit repeats, per call: the least disturbed measurement."""
    timer = timeit.Timer(function)
    once = timer.timeit(1)
    number = max(1, int(TARGET_SECONDS_PER_REPEAT / max(once, 1e-6)))
    return min(timer.repeat(repeat=TIMING_REPEATS, number=number)) / number


def measure() -> dict[str, Any]:
    customer_id, body = fetch_page()
    floor = json_floor(customer_id, body)
    raw = provider_pipeline(customer_id, body, "raw")
    if raw() != floor():
        # Same input, same output: otherwise the comparison would not be fair.
        raise RuntimeError("the provider's raw records differ from json.loads/json.dumps of the same page")
    line_items = provider_pipeline(customer_id, body, "line_items")
    return {
        "page_bytes": len(body),
        "windows": PAGE_SIZE,
        "line_item_records": len(line_items()),
        "floor_seconds": best_seconds(floor),
        "raw_seconds": best_seconds(raw),
        "line_items_seconds": best_seconds(line_items),
    }
