"""Every active customer's costs for a day, fanned out in batches with dynamic task mapping.

``list_customer_batches`` lists the active customers through the hook and splits them into
batches; one mapped ``MetronomeCostsOperator`` per batch writes its own object (``{map_index}``
keeps the names apart), and ``report`` sums up what was written: customers, records, totals
per credit type, and the customers skipped (for example plans with a UNIQUE-type metric, which
``/costs`` does not serve).

The operator gates on availability itself: when Metronome has not produced the day for some
customer of a batch yet, that batch's task fails before writing anything (its message names the
customer and the day) and is retried later, so the DAG never publishes an empty or partial day.
Add a ``MetronomeCostsSensor`` before the batches (as ``metronome_daily_costs`` does) to wait for
the day without spending retries.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import pendulum

from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.utils.storage import summarize_output

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

with DAG(
    dag_id="metronome_costs_all_customers",
    description="All active customers' Metronome costs for a day, one object per customer batch.",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # A batch whose day Metronome has not produced yet fails without writing; retry until it has.
    default_args={"retries": 6, "retry_delay": timedelta(minutes=30)},
    tags=["metronome"],
):
    # [START customer_batches]
    @task
    def list_customer_batches() -> list[list[str]]:
        ids = MetronomeHook().list_active_customer_ids()
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
        summaries = [summarize_output(manifest["uri"]) for manifest in manifests]
        totals: dict[str, float] = {}
        for summary in summaries:
            for credit_type, cost in summary["totals"].items():
                totals[credit_type] = round(totals.get(credit_type, 0) + cost, 2)
        result = {
            "objects": [manifest["uri"] for manifest in manifests],
            "customers": sum(manifest["customers"] for manifest in manifests),
            "records": sum(manifest["records"] for manifest in manifests),
            "totals": totals,
            "skipped": [skip for manifest in manifests for skip in manifest["skipped"]],
        }
        log.info("Wrote %s", result)
        return result

    report(fetch.output)
