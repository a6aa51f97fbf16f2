"""Re-fetch the trailing days whose costs may still change, rewriting only the days that did.

Metronome accepts usage backdated by up to 34 days and keeps invoices in draft for a day after
their period, so a day's costs keep changing after the daily DAG first wrote them. Every day this
DAG re-fetches the last ``days`` days (a DAG param, 7 by default) in one task: one request per
customer for the whole trailing window (invoice breakdowns serve 35 days a page), written as one
object per day at the very place ``metronome_daily_costs`` writes it (``split_by_day=True``). Each
day's object is byte-identical to what the daily DAG would write for it, so a day whose data did
not change is left untouched; the manifest's ``changed_days`` lists the others. On Airflow 3.3+ the
task names those days at run time: one asset event per changed day, keyed by the day
(``partition_outlets=True``), so the consumer runs once per day that changed and for no other; on
earlier lines one event carries the manifest, and the consumer reloads the days it lists. Every write is atomic: readers see
either the old or the new version of a day, never a mix.

A day is replaced only by a complete one: if Metronome has not produced some day of the window yet
(customers billed until then lack it and no customer has it), the task fails before writing any day,
and every stored object stays as it was (the operator's default ``on_missing_days="fail"``). A
customer with nothing billed on a day (created, archived or without a contract in the window) does
not hold the other customers' days up: the manifest names it under ``not_billed``.

Unpaused, it makes one run (``catchup=False``), for the trailing days up to the one that just ended.
A manual run with a larger ``days`` (up to 34; the trigger form offers it) is the deliberate way to
load recent history: one request per customer, whatever the number of days.

A failed task is retried twice, 30 minutes apart. For a first try, set the environment variable
``METRONOME_EXAMPLES_FIRST_TRY=1`` where the DAG files are parsed (the DAG processor or, on Airflow
2, the scheduler, and the workers): nothing is retried then. Or edit ``RETRIES`` below.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum

from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.window import resolve_window

try:
    from airflow.sdk import DAG, Asset, Param, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import task
    from airflow.models.param import Param

DEFAULT_BASE_URI = "file://" + os.path.join(
    os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "metronome"
)
BASE_URI = "{{ var.value.get('metronome_costs_base_uri', '" + DEFAULT_BASE_URI + "') }}"
# The daily DAG's asset: consumers hear of restated days too (one event per changed day on 3.3+).
DAILY_COSTS = Asset("metronome://costs/daily")
# Production retries; METRONOME_EXAMPLES_FIRST_TRY=1 turns them off for a first try.
FIRST_TRY = os.environ.get("METRONOME_EXAMPLES_FIRST_TRY", "").strip().lower() in {"1", "true", "yes"}
RETRIES = 0 if FIRST_TRY else 2

with DAG(
    dag_id="metronome_costs_restatement",
    description="Re-fetch the trailing days of Metronome costs, which may still change.",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # 2 retries, 30 minutes apart (none on a first try).
    default_args={"retries": RETRIES, "retry_delay": timedelta(minutes=30)},
    params={
        "days": Param(7, type="integer", minimum=1, maximum=34, description="Trailing days to re-fetch.")
    },
    tags=["metronome"],
):
    # [START restatement_task]
    @task(multiple_outputs=True)
    def trailing_window(**context: Any) -> dict[str, str]:
        # The newest day is the one the daily DAG fetches in the same run, by the same rule.
        newest = resolve_window(context)
        first = newest.start.subtract(days=int(context["params"]["days"]) - 1)
        return {"starting_on": first.isoformat(), "ending_before": newest.end.isoformat()}

    window = trailing_window()
    MetronomeCostsOperator(
        task_id="refetch_days",
        customer_ids=None,
        source="invoice_breakdowns",
        starting_on=window["starting_on"],
        ending_before=window["ending_before"],
        split_by_day=True,
        output_uri=BASE_URI + "/costs/date={date}/costs.jsonl.gz",
        record_format="line_items",
        outlets=[DAILY_COSTS],
        # One asset event per changed day, keyed by the day (Airflow 3.3+; one event before).
        partition_outlets=True,
    )
    # [END restatement_task]
