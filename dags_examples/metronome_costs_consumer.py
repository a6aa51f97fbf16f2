"""Data-aware consumer: runs whenever the daily, restatement or history DAG writes days, and logs their totals.

The pattern to copy: schedule on the Asset the producing task lists in ``outlets``, then read the
objects named in the triggering event's ``extra`` (the operator puts its manifest there): one
``uri`` for a single-object run, or ``objects`` (one per day) for a ``split_by_day`` run. Only the
objects whose ``changed`` is true hold anything new; the others were left as they were.

On Airflow 3.3+ the producers key their events by the day written, and this DAG is on
``PartitionedAssetTimetable``: it runs once per day that changed, with that day as its partition
key, and reads that day's object only (each event carries the producer's whole manifest, since
Airflow gives a task one ``extra`` per outlet). On earlier lines it is scheduled on the asset and
runs once per producing run, reading every changed day of it. Each object
is read through the storage connection it was written with, the manifest's ``conn_id`` (``uri`` is
the public address, without the ``conn_id@`` of ``s3://conn_id@bucket/...``).

It has no schedule of its own: unpaused, it makes no run until the daily or restatement DAG writes
days, and it sends no request to Metronome (it reads the objects written). It has no retries.
"""

from __future__ import annotations

import logging
from typing import Any

import pendulum

from airflow_provider_metronome.output.reading import summarize_output

try:
    from airflow.sdk import DAG, Asset, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import task

log = logging.getLogger(__name__)
# [START asset_consumer]
DAILY_COSTS = Asset("metronome://costs/daily")
try:  # Airflow 3.3+: one run per day written, keyed by the day
    from airflow.sdk import PartitionedAssetTimetable, PartitionedAtRuntime  # noqa: F401

    SCHEDULE: object = PartitionedAssetTimetable(assets=DAILY_COSTS)
except ImportError:  # one run per producing run
    SCHEDULE = [DAILY_COSTS]

with DAG(
    dag_id="metronome_costs_consumer",
    description="Log each day's Metronome totals as soon as the daily DAG has written them.",
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["metronome"],
):

    @task
    def log_day_totals(**context: Any) -> list[dict[str, Any]]:
        events = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
        # A partitioned run (Airflow 3.3+) is for one day: the events name every day of their run.
        day = context.get("partition_key")
        summaries, read = [], set()
        for asset_events in events.values():
            for event in asset_events:
                manifest = event.extra or {}
                objects = manifest.get("objects") or [
                    {**manifest, "date": manifest["window"]["starting_on"][:10]}
                ]
                for entry in objects:
                    if (
                        not entry.get("changed", True)
                        or entry["uri"] in read
                        or day not in (None, entry["date"])
                    ):
                        continue
                    read.add(entry["uri"])  # two producers may have written the same day meanwhile
                    # Through the storage connection it was written with (s3://<conn_id>@...).
                    summary = summarize_output(entry["uri"], conn_id=entry.get("conn_id"))
                    # Exact Decimal totals, as text: XCom would keep them as floats.
                    summary["totals"] = {name: str(total) for name, total in summary["totals"].items()}
                    log.info("%s: %s", entry["date"], summary)
                    summaries.append(summary)
        return summaries

    log_day_totals()
# [END asset_consumer]
