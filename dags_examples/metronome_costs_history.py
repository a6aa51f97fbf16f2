"""Load past months of Metronome costs into the layout the daily DAG writes, one month per run.

Each run covers one calendar month (its data interval) and fetches it with one request per
customer (invoice breakdowns serve 35 days a page: one or two requests), then writes one object per
day to ``<base>/costs/date=<day>/costs.jsonl.gz`` (``split_by_day=True``), byte-identical to what
``metronome_daily_costs`` writes for that day, so history, daily runs and restatements mix freely.

Set ``start_date`` to the first month to load: with ``catchup=True`` the scheduler runs every month
from there (a 90-day history is three runs instead of 90 daily ones). A run refuses windows over 100
days, which is why history loads in monthly runs. Days already stored with the same bytes are left
untouched, so re-running a month is cheap for the store.

The sensor holds the newest month until Metronome has produced its last day (it asks at most three
customers spread over the list); the operator verifies every customer's days before writing. Each
month covers the customers that existed in it, those archived since included.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum

from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.sensors.costs import MetronomeCostsSensor

try:
    from airflow.sdk import DAG, CronDataIntervalTimetable
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.timetables.interval import CronDataIntervalTimetable

DEFAULT_BASE_URI = "file://" + os.path.join(
    os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "metronome"
)
BASE_URI = "{{ var.value.get('metronome_costs_base_uri', '" + DEFAULT_BASE_URI + "') }}"

# [START history_dag]
with DAG(
    dag_id="metronome_costs_history",
    description="Past months of Metronome costs, one object per day, in the daily DAG's layout.",
    # A data interval of one whole month on both Airflow lines ("@monthly" alone is a zero-length
    # interval on Airflow 3, which would fetch the day before the run's date).
    schedule=CronDataIntervalTimetable("@monthly", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=True,
    max_active_runs=2,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=30)},
    tags=["metronome"],
):
    wait_for_month = MetronomeCostsSensor(
        task_id="wait_for_month",
        customer_ids=None,
        source="invoice_breakdowns",
        sample_customers=3,
        deferrable=True,
        poke_interval=30 * 60,
        timeout=int(timedelta(hours=12).total_seconds()),
    )
    load_month = MetronomeCostsOperator(
        task_id="load_month",
        customer_ids=None,
        source="invoice_breakdowns",
        split_by_day=True,
        output_uri=BASE_URI + "/costs/date={date}/costs.jsonl.gz",
        record_format="line_items",
    )
    wait_for_month >> load_month
# [END history_dag]
