"""Daily Metronome costs for every customer of the day, one object per data day.

Runs once a day (UTC), for the UTC day that just ended. On Airflow 3.3+ it is a partitioned DAG: a
``CronPartitionTimetable`` runs it at 02:00 UTC with the day before as the run's partition key
(``2024-01-09``), which is the day it fetches, and its asset event is keyed by that day, so a
consumer on ``PartitionedAssetTimetable`` runs once per day written (none when a re-run changed
nothing). On earlier lines it runs ``@daily`` at midnight, with one event per run.
``catchup=False``: unpaused, it makes one run, for the latest day, not one for every day since
``start_date``. Past days are loaded on
purpose: past months with ``metronome_costs_history`` (one run per month), the last 34 days or
fewer with a manual run of ``metronome_costs_restatement`` (its ``days`` param).

The sensor waits (deferred, without holding a worker slot) until Metronome has produced the day,
then the operator writes it to ``<base>/costs/date=<data day>/costs.jsonl.gz``, replacing the
object atomically if the day is ever re-run with different data (and leaving it untouched if not).

The customers of the day are those that existed on it: the active ones and those archived since the
day began, without those created after it ended (a backfill covers customers archived since). A
customer with nothing billed that day (no contract, a contract that ended) does not hold the day
up; the manifest names it under ``not_billed``.

The sensor is a cheap gate: while the day is missing, each check asks one customer (the one that
lacked it last time) after listing the customers; once it is there, the first customer of its
sample that has the day is enough (it asks at most three, spread over the list). The operator then
verifies every customer's day itself before writing anything, and fails (to be retried) if the day
is still missing.

``metronome_costs_history`` fills the same layout for past months, and
``metronome_costs_restatement`` re-fetches the trailing days, which may still change.

Waits and retries are set for production: the sensor checks every 15 minutes for up to 12 hours,
and a failed task is retried twice, 5 minutes apart. For a first try, set the environment variable
``METRONOME_EXAMPLES_FIRST_TRY=1`` where the DAG files are parsed (the DAG processor or, on Airflow
2, the scheduler, and the workers): the sensor then checks every minute for up to 30 minutes and
nothing is retried, so a failure shows at once, with its reason. Or edit ``RETRIES``,
``POKE_INTERVAL`` and ``SENSOR_TIMEOUT`` below.

The base URI is the Airflow Variable ``metronome_costs_base_uri`` (also settable as the environment
variable ``AIRFLOW_VAR_METRONOME_COSTS_BASE_URI``), for example ``s3://aws_lake@my-bucket/metronome``
(``aws_lake``: the Airflow connection to write and read with); by default a ``file://`` folder under
AIRFLOW_HOME.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum

from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.sensors.costs import MetronomeCostsSensor

try:
    from airflow.sdk import DAG, Asset
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.datasets import Dataset as Asset

DEFAULT_BASE_URI = "file://" + os.path.join(
    os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "metronome"
)
BASE_URI = "{{ var.value.get('metronome_costs_base_uri', '" + DEFAULT_BASE_URI + "') }}"
# Production waits and retries; METRONOME_EXAMPLES_FIRST_TRY=1 shortens them for a first try.
FIRST_TRY = os.environ.get("METRONOME_EXAMPLES_FIRST_TRY", "").strip().lower() in {"1", "true", "yes"}
RETRIES = 0 if FIRST_TRY else 2
POKE_INTERVAL = timedelta(minutes=1 if FIRST_TRY else 15)
SENSOR_TIMEOUT = timedelta(minutes=30 if FIRST_TRY else 12 * 60)
# [START daily_dag]
try:  # Airflow 3.3+, where tasks name their events' partitions: runs keyed by the day they fetch
    from airflow.sdk import CronPartitionTimetable, PartitionedAtRuntime  # noqa: F401

    SCHEDULE: object = CronPartitionTimetable(
        "0 2 * * *", timezone="UTC", run_offset=-1, key_format="%Y-%m-%d"
    )
except ImportError:
    SCHEDULE = "@daily"
# What downstream DAGs schedule on; each event's extra names the object written and its window
# (on Airflow 3.3+ each event is keyed by the day written).
DAILY_COSTS = Asset("metronome://costs/daily")

with DAG(
    dag_id="metronome_daily_costs",
    description="Each customer's Metronome costs for the UTC day that just ended.",
    # At 02:00 UTC for the day before (its partition key) on Airflow 3.3+, else "@daily".
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    # Unpaused, one run: the day that just ended. Past days are a deliberate act (module docstring).
    catchup=False,
    max_active_runs=3,
    # 2 retries, 5 minutes apart (none on a first try).
    default_args={"retries": RETRIES, "retry_delay": timedelta(minutes=5)},
    tags=["metronome"],
) as dag:
    # Invoice breakdowns are the Contracts-era source Metronome recommends; unlike /costs they also
    # serve customers whose plan has a UNIQUE-type metric, so no customer has to be skipped.
    wait_for_costs = MetronomeCostsSensor(
        task_id="wait_for_costs",
        customer_ids=None,
        source="invoice_breakdowns",
        deferrable=True,
        # Every 15 minutes for up to 12 hours (every minute for up to 30 on a first try).
        poke_interval=POKE_INTERVAL,
        sample_customers=3,
        timeout=SENSOR_TIMEOUT,
    )
    fetch_costs = MetronomeCostsOperator(
        task_id="fetch_costs",
        customer_ids=None,
        source="invoice_breakdowns",
        output_uri=BASE_URI + "/costs/date={date}/costs.jsonl.gz",
        record_format="line_items",
        outlets=[DAILY_COSTS],
    )
    wait_for_costs >> fetch_costs
# [END daily_dag]
