"""How a costs task announces what it wrote: its manifest in the events of its ``Asset`` outlets.

On Airflow 3.3+ a partitioned announcement is one asset event per day whose object changed, keyed by
the day (``2024-01-09``), and none when no day changed; DAGs on ``PartitionedAssetTimetable`` then
run once per changed day. Otherwise the run has one event, as on every Airflow line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_metronome._compat import RUNTIME_PARTITIONS, Asset, BaseOperator, Context
from airflow_provider_metronome.window import DayWindow, partition_key


def is_partitioned_run(context: Context) -> bool:
    """A run with a partition key, or of a DAG whose partitions are named at run time."""
    timetable = getattr(context.get("dag"), "timetable", None)
    return partition_key(context) is not None or bool(getattr(timetable, "partitioned_at_runtime", False))


def changed_days(manifest: Mapping[str, Any]) -> list[str]:
    """The days whose objects this run changed: a split run's ``changed_days``, or the window's days."""
    if "changed_days" in manifest:
        return sorted(manifest["changed_days"])
    if not manifest.get("changed"):
        return []
    return [str(day) for day in DayWindow.from_dict(manifest["window"]).iter_days()]


def announce(
    operator: BaseOperator, context: Context, manifest: Mapping[str, Any], partitioned: bool | None
) -> list[str] | None:
    """Put ``manifest`` (without its skipped list) in each ``Asset`` outlet's event.

    :param partitioned: per-day events (True), one event (False), or as the run is (None).
    :return: the days the events are keyed by, or None for one unpartitioned event.
    """
    events = context.get("outlet_events")
    assets = [outlet for outlet in operator.outlets or () if isinstance(outlet, Asset)]
    if events is None or not assets:  # an empty accessor is falsy until first used
        return None
    extra = {key: value for key, value in manifest.items() if key != "skipped"}
    days = changed_days(manifest) if _per_day(context, partitioned) else None
    for asset in assets:
        accessor = events[asset]
        accessor.extra.update(extra)
        if days:
            accessor.add_partitions(days)
    if days == []:
        # Airflow gives every declared outlet an event when the task succeeds; a run that changed no
        # day has nothing to announce, so its outlets are withdrawn for this run.
        operator.outlets = [outlet for outlet in operator.outlets if not isinstance(outlet, Asset)]
    return days


def _per_day(context: Context, partitioned: bool | None) -> bool:
    if not RUNTIME_PARTITIONS:
        return False
    return is_partitioned_run(context) if partitioned is None else partitioned
