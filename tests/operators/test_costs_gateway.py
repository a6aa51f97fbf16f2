"""A long breakdowns window the gateway times out on: split, and written byte for byte as an unsplit run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.testing import GatewayTimeout, MetronomeSimulator

FIRST, END = dt.date(2024, 1, 1), dt.date(2024, 4, 10)  # 100 days


def run(tmp_path: Path, name: str) -> bytes:
    MetronomeCostsOperator(
        task_id="breakdowns",
        source="invoice_breakdowns",
        starting_on=FIRST.isoformat(),
        ending_before=END.isoformat(),
        output_uri=f"file://{tmp_path}/{name}.jsonl",
    ).execute({})  # type: ignore[arg-type]
    return (tmp_path / f"{name}.jsonl").read_bytes()


def test_a_timed_out_window_is_split_and_the_output_is_byte_identical(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    sim.now = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
    unsplit = run(tmp_path, "unsplit")
    per_customer = [
        sum(len(invoice["line_items"]) for invoice in sim.breakdowns_for(customer, FIRST, END))
        for customer in sim.active_customer_ids
    ]
    # Every customer's 100 days time out; a quarter of the smallest one's fits.
    sim.gateway_timeout = GatewayTimeout(max_line_items=min(per_customer) // 4)
    sim.clear_requests()

    split = run(tmp_path, "split")

    assert split == unsplit
    assert sim.request_counts.by_status[504] >= len(per_customer)
