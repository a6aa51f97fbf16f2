"""Re-fetch the trailing days whose costs may still change, replacing each day's object.

Metronome accepts usage backdated by up to 34 days and keeps invoices in draft for a day after
their period, so a day's costs keep changing after the daily DAG first wrote them. Every day this
DAG re-fetches the last ``days`` days (a DAG param, 7 by default), one mapped task per day, each
replacing that day's object at the very place ``metronome_daily_costs`` writes it; the write is
atomic, so readers see either the old or the new version of a day, never a mix.

A day is replaced only by a complete one: if Metronome answers without the day for some customer
(it has not produced it, or answers incompletely), that day's task fails before writing and the
object the daily DAG wrote stays as it was (the operator's default ``on_missing_days="fail"``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum

from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.utils.window import resolve_window

try:
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task
    from airflow.models.param import Param

DEFAULT_BASE_URI = "file://" + os.path.join(
    os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "metronome"
)
BASE_URI = "{{ var.value.get('metronome_costs_base_uri', '" + DEFAULT_BASE_URI + "') }}"

with DAG(
    dag_id="metronome_costs_restatement",
    description="Re-fetch the trailing days of Metronome costs, which may still change.",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=30)},
    params={
        "days": Param(7, type="integer", minimum=1, maximum=34, description="Trailing days to re-fetch.")
    },
    tags=["metronome"],
):

    @task
    def trailing_windows(**context: Any) -> list[dict[str, str]]:
        # The newest day is the one the daily DAG fetches in the same run, by the same rule.
        newest = resolve_window(context)
        days = [newest.start.subtract(days=back) for back in reversed(range(int(context["params"]["days"])))]
        return [
            {"starting_on": day.isoformat(), "ending_before": day.add(days=1).isoformat()} for day in days
        ]

    MetronomeCostsOperator.partial(
        task_id="refetch_day",
        source="invoice_breakdowns",
        output_uri=BASE_URI + "/costs/date={date}/costs.jsonl.gz",
        record_format="line_items",
    ).expand_kwargs(trailing_windows())
