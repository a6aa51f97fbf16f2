"""The operator fetches customers while it lists them, and writes the bytes a listed-first run writes."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from airflow_provider_metronome.window import DayWindow

WINDOW = DayWindow.of("2024-01-05", "2024-01-07")


def run(tmp_path: Path, name: str, customer_ids: list[str] | None) -> bytes:
    MetronomeCostsOperator(
        task_id="costs",
        customer_ids=customer_ids,
        on_customer_error="skip",  # the simulator's customers on a UNIQUE-metric plan
        starting_on="2024-01-05",
        ending_before="2024-01-07",
        output_uri=f"file://{tmp_path}/{name}.jsonl",
    ).execute({})  # type: ignore[arg-type]
    return (tmp_path / f"{name}.jsonl").read_bytes()


def test_fetching_while_listing_writes_the_bytes_of_a_run_that_listed_first(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    sim.set_customer_count(250)
    listed = MetronomeHook().list_window_customers(WINDOW.start, WINDOW.end).ids
    costs_customers = [
        customer_id for customer_id in listed if customer_id not in sim.unique_metric_customer_ids
    ]
    listed_first = run(tmp_path, "listed-first", costs_customers)
    sim.clear_requests()
    sim.inject(Fault.hold_page(until="/costs", seconds=30))

    while_listing = run(tmp_path, "while-listing", None)

    assert while_listing == listed_first
    records = sim.requests
    second_page = next(
        record for record in records if record.path == "/v1/customers" and "next_page" in record.query
    )
    first_costs = next(index for index, record in enumerate(records) if record.path.endswith("/costs"))
    assert first_costs < (second_page.arrived_before_answer or 0)
