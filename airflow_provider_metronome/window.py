"""Time handling shared by the hook, the operator, the sensor and the trigger.

The rule for which day a task run covers lives here and nowhere else:

1. explicit ``starting_on`` / ``ending_before`` win;
2. otherwise the run's partition key (Airflow 3.2+ partitioned runs), which must name a UTC day:
   ``2024-01-09``, or a timestamp at midnight UTC such as ``2024-01-09T00:00:00`` (the default key
   format of ``CronPartitionTimetable``);
3. otherwise a non-empty data interval ``[data_interval_start, data_interval_end)``;
4. otherwise (Airflow 3 ``@daily`` cron schedules and manual runs have a zero-length interval)
   the whole UTC day before the logical date (or before ``run_after`` when a manual Airflow 3
   run has no logical date).

The resulting window must be whole UTC days, because Metronome's costs are daily windows from
midnight UTC to midnight UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pendulum

from airflow_provider_metronome.validation import is_templated

UTC = pendulum.UTC
TimestampLike = str | dt.datetime | dt.date
# A calendar date, optionally with a time of day and a UTC offset (``T`` or a space between them).
_TIMESTAMP_SHAPE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?)?"
)


class WindowError(ValueError):
    """A time window that Metronome cannot serve as whole UTC days."""


def to_utc(value: TimestampLike, *, name: str = "timestamp") -> pendulum.DateTime:
    """Parse an RFC 3339 string, a datetime or a date into an aware UTC datetime.

    Naive datetimes (and strings without an offset) are read as UTC; a date means its midnight UTC.
    """
    if isinstance(value, str):
        value = _parse_timestamp(value, name)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return pendulum.instance(value).in_timezone(UTC)
    if isinstance(value, dt.date):
        return pendulum.datetime(value.year, value.month, value.day, tz=UTC)
    raise TypeError(f"{name} must be an RFC 3339 string, a datetime or a date, not {type(value).__name__}.")


def _parse_timestamp(text: str, name: str) -> dt.datetime | dt.date:
    # The shape is checked first because pendulum's lenient parser reads "1" or "12:00" as dates in
    # the current month or day, which would silently fetch the wrong window.
    stripped = text.strip()
    if _TIMESTAMP_SHAPE.fullmatch(stripped):
        try:
            parsed = pendulum.parse(stripped.upper(), tz=UTC, strict=True)
        except (ValueError, TypeError, OverflowError):
            pass
        else:
            if isinstance(parsed, (dt.datetime, dt.date)):
                return parsed
    raise ValueError(
        f"{name}={text!r} is not a valid RFC 3339 timestamp or date; use e.g. '2024-01-05T00:00:00Z' "
        "or '2024-01-05'."
    )


def format_timestamp(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, the form Metronome documents (``2024-01-01T00:00:00Z``)."""
    utc = to_utc(value)
    if utc.microsecond:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_range(
    starting_on: TimestampLike, ending_before: TimestampLike
) -> tuple[pendulum.DateTime, pendulum.DateTime]:
    """Parse a ``[starting_on, ending_before)`` pair and check it is not empty."""
    start = to_utc(starting_on, name="starting_on")
    end = to_utc(ending_before, name="ending_before")
    if start >= end:
        raise ValueError(
            f"starting_on ({format_timestamp(start)}) must be before ending_before ({format_timestamp(end)}); "
            "ending_before is exclusive."
        )
    return start, end


@dataclass(frozen=True)
class DayWindow:
    """A ``[start, end)`` range of whole UTC days."""

    start: pendulum.DateTime
    end: pendulum.DateTime

    @classmethod
    def of(cls, starting_on: TimestampLike, ending_before: TimestampLike, *, origin: str = "") -> DayWindow:
        """Build a window, failing with an explanation unless both bounds are UTC midnights."""
        start, end = check_range(starting_on, ending_before)
        for name, bound in (("start", start), ("end", end)):
            if bound != bound.start_of("day"):
                source = f" (from {origin})" if origin else ""
                raise WindowError(
                    f"The window {format_timestamp(start)} .. {format_timestamp(end)}{source} does not "
                    f"{name} at midnight UTC. Metronome reports costs in whole UTC days, so a partial day "
                    "would silently miss or double-count costs. Use a schedule in UTC (for example "
                    "start_date=pendulum.datetime(2024, 1, 1, tz='UTC') with '@daily'), or pass "
                    "starting_on/ending_before at midnight UTC."
                )
        return cls(start, end)

    @property
    def days(self) -> list[dt.date]:
        """The UTC dates covered, in order."""
        return list(self.iter_days())

    def iter_days(self) -> Iterator[dt.date]:
        day = self.start
        while day < self.end:
            yield day.date()
            day = day.add(days=1)

    @property
    def first_day(self) -> dt.date:
        return self.start.date()

    def describe(self) -> str:
        """A short human form: ``2024-01-05`` for one day, ``2024-01-05..2024-01-07`` for several."""
        last = self.end.subtract(days=1).date()
        return str(self.first_day) if last == self.first_day else f"{self.first_day}..{last}"

    def as_dict(self) -> dict[str, str]:
        """The window as ``starting_on`` / ``ending_before`` RFC 3339 strings (XCom, trigger payloads)."""
        return {"starting_on": format_timestamp(self.start), "ending_before": format_timestamp(self.end)}

    @classmethod
    def from_dict(cls, bounds: Mapping[str, str]) -> DayWindow:
        """The inverse of :meth:`as_dict`."""
        return cls.of(bounds["starting_on"], bounds["ending_before"])

    @classmethod
    def check_literal(
        cls, starting_on: TimestampLike | None, ending_before: TimestampLike | None
    ) -> DayWindow | None:
        """Check explicit bounds known when the DAG is parsed; the window, or None until the run knows it."""
        _check_pair(starting_on, ending_before)
        if (
            starting_on is None
            or ending_before is None
            or is_templated(starting_on)
            or is_templated(ending_before)
        ):
            return None
        return cls.of(starting_on, ending_before, origin="starting_on/ending_before")


def _check_pair(starting_on: TimestampLike | None, ending_before: TimestampLike | None) -> None:
    if (starting_on is None) != (ending_before is None) or starting_on == "" or ending_before == "":
        raise WindowError("Pass both starting_on and ending_before, or neither (to use the run's dates).")


# The largest window a run accepts. One /costs request covers it (100 daily windows a page) and
# breakdowns need 3 (35 days a page); a quarter or a 90-day history fits. Memory grows with it:
# every customer in flight holds its whole window, and a split run keeps one spool file per day.
MAX_WINDOW_DAYS = 100
# How many runs of consecutive days a message names before summarising the rest.
MAX_DESCRIBED_RUNS = 3


def check_window_length(window: DayWindow) -> None:
    """Refuse a window longer than :data:`MAX_WINDOW_DAYS`, before any request."""
    days = (window.end - window.start).days
    if days > MAX_WINDOW_DAYS:
        raise WindowError(
            f"The window {window.describe()} spans {days} days; a run fetches at most {MAX_WINDOW_DAYS} "
            "(memory grows with the days each customer holds). Split it into shorter runs, for example "
            "monthly ones: a DAG with schedule=CronDataIntervalTimetable('@monthly', timezone='UTC') and "
            "split_by_day=True fetches one month per run, and a backfill over the months you need loads "
            "the history (see the history example DAG)."
        )


def describe_days(days: Iterable[dt.date]) -> str:
    """``2024-01-05``, or ``2024-01-05..2024-01-07, 2024-01-09``: consecutive days told as one run."""
    runs: list[list[dt.date]] = []
    for day in sorted(days):
        if runs and (day - runs[-1][-1]).days == 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    told = [str(run[0]) if len(run) == 1 else f"{run[0]}..{run[-1]}" for run in runs[:MAX_DESCRIBED_RUNS]]
    hidden = sum(len(run) for run in runs[MAX_DESCRIBED_RUNS:])
    return ", ".join(told) + (f" and {hidden} more day(s)" if hidden else "")


def resolve_window(
    context: Mapping[str, Any],
    starting_on: TimestampLike | None = None,
    ending_before: TimestampLike | None = None,
) -> DayWindow:
    """Resolve the whole-UTC-day window a task run covers (see the module docstring for the rule)."""
    _check_pair(starting_on, ending_before)
    if starting_on is not None and ending_before is not None:
        return DayWindow.of(starting_on, ending_before, origin="starting_on/ending_before")
    key = partition_key(context)
    if key is not None:
        return partition_day(key)
    interval_start = context.get("data_interval_start")
    interval_end = context.get("data_interval_end")
    if interval_start is not None and interval_end is not None and interval_start < interval_end:
        return DayWindow.of(interval_start, interval_end, origin="the DAG run's data interval")
    anchor = context.get("logical_date") or _run_after(context)
    if anchor is None:
        raise WindowError(
            "The run has neither a data interval nor a logical date; pass starting_on/ending_before."
        )
    day_start = to_utc(anchor).start_of("day")
    return DayWindow(day_start.subtract(days=1), day_start)


def partition_key(context: Mapping[str, Any]) -> str | None:
    """The run's partition key (Airflow 3.2+), or None for a run without one."""
    key = context.get("partition_key") or getattr(context.get("dag_run"), "partition_key", None)
    return key if isinstance(key, str) and key else None


def partition_day(key: str) -> DayWindow:
    """The UTC day a partition key names: ``2024-01-09``, or a timestamp at midnight UTC."""
    try:
        start = to_utc(key, name="partition_key")
    except ValueError:
        start = None
    if start is None or start != start.start_of("day"):
        raise WindowError(
            f"The run's partition key {key!r} does not name a UTC day, so the window it covers is unknown. "
            "Keys name a day as '2024-01-09' or as a timestamp at midnight UTC ('2024-01-09T00:00:00'): "
            "for example CronPartitionTimetable('0 2 * * *', timezone='UTC', run_offset=-1, "
            "key_format='%Y-%m-%d') keys each run by the day before it. Or pass starting_on/ending_before."
        )
    return DayWindow(start, start.add(days=1))


def _run_after(context: Mapping[str, Any]) -> dt.datetime | None:
    dag_run = context.get("dag_run")
    return getattr(dag_run, "run_after", None)
