"""Data-aware consumer: runs whenever ``metronome_daily_costs`` writes a day, and logs its totals.

The pattern to copy: schedule on the Asset the producing task lists in ``outlets``, then read the
object named in the triggering event's ``extra`` (the operator puts its manifest there).
"""

from __future__ import annotations

import logging
from typing import Any

import pendulum

from airflow_provider_metronome.utils.storage import summarize_output

try:
    from airflow.sdk import DAG, Asset, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import task

log = logging.getLogger(__name__)
DAILY_COSTS = Asset("metronome://costs/daily")

with DAG(
    dag_id="metronome_costs_consumer",
    description="Log each day's Metronome totals as soon as the daily DAG has written them.",
    schedule=[DAILY_COSTS],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["metronome"],
):

    @task
    def log_day_totals(**context: Any) -> list[dict[str, Any]]:
        events = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
        summaries = []
        for asset_events in events.values():
            for event in asset_events:
                manifest = event.extra or {}
                summary = summarize_output(manifest["uri"])
                log.info("%s: %s", manifest["window"]["starting_on"][:10], summary)
                summaries.append(summary)
        return summaries

    log_day_totals()
