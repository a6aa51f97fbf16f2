"""Every customer's costs for a day, fanned out in batches with dynamic task mapping.

``list_customer_batches`` lists the customers of the day the batches fetch (the window the operator
resolves: the run's data interval, else the UTC day before its logical date) through the hook: the
active ones and those archived after the day began, without those created after it ended, each
once, so that a backfill also covers customers archived since. It splits them into batches; one
mapped ``MetronomeCostsOperator`` per batch writes its own object (``{map_index}`` keeps the names
apart), and ``report`` reads the objects back, through the storage connection each was written with
(the manifest's ``conn_id``), and sums up what was written: customers, records, exact totals per
credit type, and the customers skipped (for example plans with a UNIQUE-type metric, which
``/costs`` does not serve).

The operator gates on availability itself: when Metronome has not produced the day for some
customer of a batch yet, that batch's task fails before writing anything (its message names the
customer and the day) and is retried later, so the DAG never publishes an empty or partial day.
Add a ``MetronomeCostsSensor`` before the batches (as ``metronome_daily_costs`` does) to wait for
the day without spending retries.

Unpaused, it makes one run (``catchup=False``), for the UTC day that just ended. A batch is retried
6 times, 30 minutes apart: three hours for Metronome to produce the day. For a first try, set the
environment variable ``METRONOME_EXAMPLES_FIRST_TRY=1`` where the DAG files are parsed (the DAG
processor or, on Airflow 2, the scheduler, and the workers): nothing is retried then, so a day not
produced yet fails at once, naming the customer and the day. Or edit ``RETRIES`` below.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pendulum

from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.output.reading import summarize_output
from airflow_provider_metronome.window import resolve_window

try:
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task

log = logging.getLogger(__name__)
BATCH_SIZE = 100
DEFAULT_BASE_URI = "file://" + os.path.join(
    os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "metronome"
)
BASE_URI = "{{ var.value.get('metronome_costs_base_uri', '" + DEFAULT_BASE_URI + "') }}"
# Production retries; METRONOME_EXAMPLES_FIRST_TRY=1 turns them off for a first try.
FIRST_TRY = os.environ.get("METRONOME_EXAMPLES_FIRST_TRY", "").strip().lower() in {"1", "true", "yes"}
RETRIES = 0 if FIRST_TRY else 6

with DAG(
    dag_id="metronome_costs_all_customers",
    description="All customers' Metronome costs for a day, one object per customer batch.",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # A batch whose day Metronome has not produced yet fails without writing; retry until it has:
    # 6 retries, 30 minutes apart (none on a first try).
    default_args={"retries": RETRIES, "retry_delay": timedelta(minutes=30)},
    tags=["metronome"],
):
    # [START customer_batches]
    @task
    def list_customer_batches(**context: Any) -> list[list[str]]:
        # The customers of the day the batches fetch, by the operator's own rule: a backfill's day
        # includes customers archived since, and leaves out those created after it.
        day = resolve_window(context)
        ids = MetronomeHook().list_window_customers(day.start, day.end).ids
        return [ids[start : start + BATCH_SIZE] for start in range(0, len(ids), BATCH_SIZE)]

    fetch = MetronomeCostsOperator.partial(
        task_id="fetch_batch",
        output_uri=BASE_URI + "/costs-by-batch/date={date}/batch-{map_index}.jsonl.gz",
        record_format="line_items",
        on_customer_error="skip",
    ).expand(customer_ids=list_customer_batches())
    # [END customer_batches]

    @task
    def report(manifests: list[dict[str, Any]]) -> dict[str, Any]:
        # Each object is read through the storage connection it was written with (its conn_id@).
        summaries = [
            summarize_output(manifest["uri"], conn_id=manifest.get("conn_id")) for manifest in manifests
        ]
        totals: dict[str, Decimal] = {}
        for summary in summaries:
            for credit_type, cost in summary["totals"].items():
                totals[credit_type] = totals.get(credit_type, Decimal(0)) + cost
        result = {
            "objects": [manifest["uri"] for manifest in manifests],
            "customers": sum(manifest["customers"] for manifest in manifests),
            "records": sum(manifest["records"] for manifest in manifests),
            # Exact sums, as text: XCom would keep Decimals as floats.
            "totals": {credit_type: str(total) for credit_type, total in sorted(totals.items())},
            "skipped": [skip for manifest in manifests for skip in manifest["skipped"]],
        }
        log.info("Wrote %s", result)
        return result

    report(fetch.output)
