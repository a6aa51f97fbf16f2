"""Load past months of Metronome costs into the layout the daily DAG writes, one month per run.

Each run covers one calendar month (its data interval) and fetches it with one request per
customer (invoice breakdowns serve 35 days a page: one or two requests), then writes one object per
day to ``<base>/costs/date=<day>/costs.jsonl.gz`` (``split_by_day=True``), byte-identical to what
``metronome_daily_costs`` writes for that day, so history, daily runs and restatements mix freely.

``catchup=False``: unpaused, it makes one run, for the month that last ended, then one as each month
ends (a last pass over the month, which leaves the days the daily DAG wrote untouched unless they
changed). Earlier months are loaded on purpose, with a backfill: one run per month whose first day
lies between the two dates given, both included (January to June 2024 here)::

    # Airflow 3: the scheduler runs them, one month at a time
    airflow backfill create --dag-id metronome_costs_history \\
        --from-date 2024-01-01 --to-date 2024-06-01 --max-active-runs 1
    # Airflow 2: the command runs them itself, and returns once they are done
    airflow dags backfill metronome_costs_history -s 2024-01-01 -e 2024-06-01

Its asset events are the daily DAG's: on Airflow 3.3+ one per day whose object changed, keyed by
the day (``partition_outlets=True``), so the consumer runs once per day loaded; on earlier lines one
per month.

A 90-day history is three runs instead of 90 daily ones. A run refuses windows over 100 days, which
is why history loads in monthly runs. Days already stored with the same bytes are left untouched,
so re-running a month is cheap for the store.

The sensor holds the newest month until Metronome has produced its last day (it asks at most three
customers spread over the list); the operator verifies every customer's days before writing. Each
month covers the customers that existed in it, those archived since included.

Waits and retries are set for production: the sensor checks every 30 minutes for up to 12 hours,
and a failed task is retried twice, 30 minutes apart. For a first try, set the environment variable
``METRONOME_EXAMPLES_FIRST_TRY=1`` where the DAG files are parsed (the DAG processor or, on Airflow
2, the scheduler, and the workers): the sensor then checks every minute for up to 30 minutes and
nothing is retried. Or edit ``RETRIES``, ``POKE_INTERVAL`` and ``SENSOR_TIMEOUT`` below.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum

from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.sensors.costs import MetronomeCostsSensor

try:
    from airflow.sdk import DAG, Asset, CronDataIntervalTimetable
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.timetables.interval import CronDataIntervalTimetable

DEFAULT_BASE_URI = "file://" + os.path.join(
    os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "metronome"
)
BASE_URI = "{{ var.value.get('metronome_costs_base_uri', '" + DEFAULT_BASE_URI + "') }}"
# Production waits and retries; METRONOME_EXAMPLES_FIRST_TRY=1 shortens them for a first try.
FIRST_TRY = os.environ.get("METRONOME_EXAMPLES_FIRST_TRY", "").strip().lower() in {"1", "true", "yes"}
RETRIES = 0 if FIRST_TRY else 2
POKE_INTERVAL = timedelta(minutes=1 if FIRST_TRY else 30)
SENSOR_TIMEOUT = timedelta(minutes=30 if FIRST_TRY else 12 * 60)
# The daily DAG's asset: the consumer hears of the days loaded too.
DAILY_COSTS = Asset("metronome://costs/daily")

# [START history_dag]
with DAG(
    dag_id="metronome_costs_history",
    description="Past months of Metronome costs, one object per day, in the daily DAG's layout.",
    # A data interval of one whole month on both Airflow lines ("@monthly" alone is a zero-length
    # interval on Airflow 3, which would fetch the day before the run's date).
    schedule=CronDataIntervalTimetable("@monthly", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    # Unpaused, one run: the month that last ended. Earlier months: a backfill (module docstring).
    catchup=False,
    max_active_runs=2,
    # 2 retries, 30 minutes apart (none on a first try).
    default_args={"retries": RETRIES, "retry_delay": timedelta(minutes=30)},
    tags=["metronome"],
):
    wait_for_month = MetronomeCostsSensor(
        task_id="wait_for_month",
        customer_ids=None,
        source="invoice_breakdowns",
        sample_customers=3,
        deferrable=True,
        # Every 30 minutes for up to 12 hours (every minute for up to 30 on a first try).
        poke_interval=POKE_INTERVAL,
        timeout=SENSOR_TIMEOUT,
    )
    load_month = MetronomeCostsOperator(
        task_id="load_month",
        customer_ids=None,
        source="invoice_breakdowns",
        split_by_day=True,
        output_uri=BASE_URI + "/costs/date={date}/costs.jsonl.gz",
        record_format="line_items",
        outlets=[DAILY_COSTS],
        # One asset event per changed day, keyed by the day (Airflow 3.3+; one event before).
        partition_outlets=True,
    )
    wait_for_month >> load_month
# [END history_dag]
