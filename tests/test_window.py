"""The time rules shared by the hook, operator, sensor and trigger: parsing, formatting, day windows."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest

from airflow_provider_metronome.window import (
    DayWindow,
    WindowError,
    check_range,
    format_timestamp,
    resolve_window,
    to_utc,
)

UTC = dt.timezone.utc
PLUS_2 = dt.timezone(dt.timedelta(hours=2))


@pytest.mark.parametrize(
    "value",
    [
        "2024-01-05T10:00:00Z",
        "2024-01-05T10:00:00z",
        "2024-01-05t10:00:00Z",
        "2024-01-05T10:00Z",
        "2024-01-05T12:00:00+02:00",
        "2024-01-05T12:00:00+0200",
        "2024-01-05 10:00:00+00:00",  # str() of a pendulum or stdlib datetime, as templates render it
        "2024-01-05T10:00:00",  # no offset: UTC
        "  2024-01-05T10:00:00Z\n",
        dt.datetime(2024, 1, 5, 10),  # naive: UTC
        dt.datetime(2024, 1, 5, 12, tzinfo=PLUS_2),
        pendulum.datetime(2024, 1, 5, 5, tz="America/New_York"),
        pendulum.naive(2024, 1, 5, 10),
    ],
)
def test_to_utc_reads_every_form_as_the_same_instant(value: Any) -> None:
    result = to_utc(value)

    assert result == dt.datetime(2024, 1, 5, 10, tzinfo=UTC)
    assert result.utcoffset() == dt.timedelta(0)
    assert isinstance(result, pendulum.DateTime)


@pytest.mark.parametrize("value", ["2024-01-05", dt.date(2024, 1, 5), pendulum.date(2024, 1, 5)])
def test_a_date_means_its_midnight_utc(value: Any) -> None:
    assert to_utc(value) == dt.datetime(2024, 1, 5, tzinfo=UTC)


def test_fractions_of_a_second_are_kept() -> None:
    assert to_utc("2019-12-27T18:11:19.117Z") == dt.datetime(2019, 12, 27, 18, 11, 19, 117000, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "1",
        "2024",
        "12:00",
        "P1D",
        "2024-13-01",
        "2024-02-30",
        "2024-01-05T25:00:00Z",
        "05/01/2024",
    ],
)
def test_anything_else_is_refused_with_an_example(value: str) -> None:
    with pytest.raises(
        ValueError, match=r"ending_before=.* is not a valid RFC 3339 timestamp or date"
    ) as err:
        to_utc(value, name="ending_before")

    assert "use e.g. '2024-01-05T00:00:00Z' or '2024-01-05'" in str(err.value)


def test_other_types_are_refused() -> None:
    with pytest.raises(
        TypeError, match="starting_on must be an RFC 3339 string, a datetime or a date, not int"
    ):
        to_utc(20240105, name="starting_on")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2024, 1, 5, tzinfo=UTC), "2024-01-05T00:00:00Z"),
        (dt.datetime(2024, 1, 5, 1, 30, tzinfo=PLUS_2), "2024-01-04T23:30:00Z"),
        (dt.datetime(2024, 1, 5), "2024-01-05T00:00:00Z"),
        (dt.datetime(2024, 1, 5, 0, 0, 0, 500, tzinfo=UTC), "2024-01-05T00:00:00.000500Z"),
    ],
)
def test_format_timestamp_is_utc_with_z(value: dt.datetime, expected: str) -> None:
    assert format_timestamp(value) == expected
    assert to_utc(format_timestamp(value)) == to_utc(value)


def test_check_range() -> None:
    assert check_range("2024-01-01", dt.datetime(2024, 1, 1, 0, 0, 1)) == (
        dt.datetime(2024, 1, 1, tzinfo=UTC),
        dt.datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC),
    )
    with pytest.raises(
        ValueError, match=r"starting_on \(2024-01-02T00:00:00Z\) must be before ending_before"
    ):
        check_range("2024-01-02", "2024-01-01")
    with pytest.raises(ValueError, match="ending_before is exclusive"):
        check_range("2024-01-01T00:00:00+00:00", dt.date(2024, 1, 1))
    with pytest.raises(ValueError, match="starting_on='soon'"):
        check_range("soon", "2024-01-01")


def test_day_window() -> None:
    window = DayWindow.of("2024-02-28", dt.date(2024, 3, 2))

    assert window.days == [dt.date(2024, 2, 28), dt.date(2024, 2, 29), dt.date(2024, 3, 1)]
    assert list(window.iter_days()) == window.days
    assert window.first_day == dt.date(2024, 2, 28)
    assert window.describe() == "2024-02-28..2024-03-01"
    assert DayWindow.of("2024-02-28", "2024-02-29").describe() == "2024-02-28"
    assert window.as_dict() == {
        "starting_on": "2024-02-28T00:00:00Z",
        "ending_before": "2024-03-02T00:00:00Z",
    }


@pytest.mark.parametrize(
    ("start", "end", "bound"),
    [
        ("2024-01-01T06:00:00Z", "2024-01-02", "start"),
        ("2024-01-01", "2024-01-02T00:00:00+01:00", "end"),  # 23:00 UTC
        (pendulum.datetime(2024, 1, 1, tz="Europe/Paris"), pendulum.datetime(2024, 1, 2, tz="UTC"), "start"),
    ],
)
def test_day_window_refuses_partial_days_and_says_why(start: Any, end: Any, bound: str) -> None:
    with pytest.raises(WindowError, match=f"does not {bound} at midnight UTC") as err:
        DayWindow.of(start, end, origin="the DAG run's data interval")

    message = str(err.value)
    assert "(from the DAG run's data interval)" in message
    assert "Use a schedule in UTC" in message
    assert isinstance(err.value, ValueError)


# -- resolve_window: explicit > non-empty data interval > the UTC day before the logical date -----


def _day(day: int) -> pendulum.DateTime:
    return pendulum.datetime(2024, 1, day, tz="UTC")


def test_explicit_bounds_win() -> None:
    context = {"data_interval_start": _day(1), "data_interval_end": _day(2), "logical_date": _day(1)}

    window = resolve_window(context, "2024-01-10", "2024-01-12")

    assert (window.start, window.end) == (_day(10), _day(12))


def test_a_non_empty_data_interval_is_the_window() -> None:
    context = {"data_interval_start": _day(3), "data_interval_end": _day(5), "logical_date": _day(3)}

    assert resolve_window(context) == DayWindow(_day(3), _day(5))


@pytest.mark.parametrize("logical_date", [_day(5), _day(5).add(hours=10), dt.datetime(2024, 1, 5, 10)])
def test_otherwise_the_utc_day_before_the_logical_date(logical_date: Any) -> None:
    # Airflow 3 cron schedules: a zero-length interval at the logical date.
    context = {
        "data_interval_start": logical_date,
        "data_interval_end": logical_date,
        "logical_date": logical_date,
    }

    assert resolve_window(context) == DayWindow(_day(4), _day(5))


def test_a_manual_run_without_logical_date_uses_run_after() -> None:
    context = {"logical_date": None, "dag_run": SimpleNamespace(run_after=_day(7).add(hours=15))}

    assert resolve_window(context) == DayWindow(_day(6), _day(7))


def test_a_non_midnight_data_interval_is_refused() -> None:
    context = {"data_interval_start": _day(3).add(hours=6), "data_interval_end": _day(4).add(hours=6)}

    with pytest.raises(WindowError, match=r"\(from the DAG run's data interval\)"):
        resolve_window(context)


@pytest.mark.parametrize(
    ("start", "end"), [("2024-01-01", None), (None, "2024-01-02"), ("", ""), ("2024-01-01", "")]
)
def test_half_given_bounds_are_refused(start: Any, end: Any) -> None:
    with pytest.raises(WindowError, match="Pass both starting_on and ending_before, or neither"):
        resolve_window({"logical_date": _day(5)}, start, end)


def test_explicit_bounds_must_be_whole_days() -> None:
    with pytest.raises(WindowError, match=r"\(from starting_on/ending_before\)"):
        resolve_window({}, "2024-01-01T12:00:00Z", "2024-01-02T12:00:00Z")


def test_no_dates_at_all_is_explained() -> None:
    with pytest.raises(
        WindowError, match="neither a data interval nor a logical date; pass starting_on/ending_before"
    ):
        resolve_window({"dag_run": SimpleNamespace(run_after=None)})


@pytest.mark.parametrize(
    "key", ["2024-01-09", "2024-01-09T00:00:00", "2024-01-09T00:00:00Z", "2024-01-09T01:00:00+01:00"]
)
def test_a_partition_key_naming_a_utc_day_is_the_window(key: str) -> None:
    # A partitioned run (CronPartitionTimetable) has no data interval; its logical date is the tick.
    context = {"partition_key": key, "logical_date": _day(10).add(hours=2)}

    assert resolve_window(context) == DayWindow(_day(9), _day(10))


def test_the_partition_key_is_read_from_the_dag_run_too() -> None:
    context = {"dag_run": SimpleNamespace(partition_key="2024-01-09", run_after=_day(10))}

    assert resolve_window(context) == DayWindow(_day(9), _day(10))


def test_explicit_bounds_win_over_the_partition_key_which_wins_over_the_data_interval() -> None:
    context = {"partition_key": "2024-01-09", "data_interval_start": _day(3), "data_interval_end": _day(5)}

    assert resolve_window(context, "2024-01-10", "2024-01-12") == DayWindow(_day(10), _day(12))
    assert resolve_window(context) == DayWindow(_day(9), _day(10))


@pytest.mark.parametrize("key", ["2024-01-09T02:00:00", "2024-01-09T00:00:00+02:00", "us", "2024-01-09|eu"])
def test_a_partition_key_not_naming_a_utc_day_is_refused_with_the_fix(key: str) -> None:
    with pytest.raises(WindowError, match=r"does not name a UTC day.*key_format='%Y-%m-%d'") as raised:
        resolve_window({"partition_key": key, "logical_date": _day(10)})

    assert repr(key) in str(raised.value)


def test_an_empty_partition_key_is_no_partition() -> None:
    context = {"partition_key": None, "dag_run": SimpleNamespace(partition_key=None, run_after=_day(7))}

    assert resolve_window(context) == DayWindow(_day(6), _day(7))
