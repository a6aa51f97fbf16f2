"""``split_by_day=True``: one fetch per customer of the whole window, one object per UTC day, unchanged days left alone."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.testing import MetronomeSimulator
from airflow_provider_metronome.window import MAX_WINDOW_DAYS
from tests.support.simulator import billable, not_produced_yet

FIRST = dt.date(2024, 1, 4)
DAYS = [FIRST + dt.timedelta(days=offset) for offset in range(3)]
ONE_DAY = dt.timedelta(days=1)
UNKNOWN_CUSTOMER = "00000000-0000-4000-8000-0000000000ff"


def split_operator(folder: Path, **kwargs: Any) -> MetronomeCostsOperator:
    kwargs.setdefault("task_id", "fetch_days")
    kwargs.setdefault("starting_on", DAYS[0].isoformat())
    kwargs.setdefault("ending_before", (DAYS[-1] + ONE_DAY).isoformat())
    kwargs.setdefault("output_uri", f"file://{folder}/date={{date}}/costs.jsonl.gz")
    return MetronomeCostsOperator(split_by_day=True, **kwargs)


def day_path(folder: Path, day: dt.date) -> Path:
    return folder / f"date={day}" / "costs.jsonl.gz"


def stamp(path: Path) -> tuple[int, int]:
    """What changes when a file is replaced, even by identical bytes."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


@pytest.mark.parametrize("source", ["costs", "invoice_breakdowns"])
@pytest.mark.parametrize("record_format", ["raw", "line_items"])
def test_each_day_is_byte_identical_to_the_one_day_runs_object(
    sim: MetronomeSimulator, tmp_path: Path, source: str, record_format: str
) -> None:
    ids = billable(sim)[:8]
    common = {"customer_ids": ids, "source": source, "record_format": record_format}
    for day in DAYS:
        MetronomeCostsOperator(
            task_id="one_day",
            starting_on=day.isoformat(),
            ending_before=(day + ONE_DAY).isoformat(),
            output_uri=f"file://{tmp_path}/daily/date={{date}}/costs.jsonl.gz",
            **common,
        ).execute({})
    sim.clear_requests()

    manifest = split_operator(tmp_path / "split", **common).execute({})

    for day in DAYS:
        one_day = day_path(tmp_path / "daily", day).read_bytes()
        assert day_path(tmp_path / "split", day).read_bytes() == one_day
        assert len(one_day) > 20  # more than an empty gzip stream
    # One request per customer for the three days (both endpoints fit them in one page).
    assert len(sim.requests) == len(ids)
    assert [entry["date"] for entry in manifest["objects"]] == [str(day) for day in DAYS]
    assert manifest["changed_days"] == [str(day) for day in DAYS]
    for entry, day in zip(manifest["objects"], DAYS, strict=True):
        path = day_path(tmp_path / "split", day)
        assert entry["uri"] == f"file://{path}"
        assert entry["bytes"] == path.stat().st_size
        assert entry["changed"] is True
    assert manifest["records"] == sum(entry["records"] for entry in manifest["objects"])
    assert manifest["window"] == {
        "starting_on": "2024-01-04T00:00:00Z",
        "ending_before": "2024-01-07T00:00:00Z",
    }
    assert "uri" not in manifest


def test_a_rerun_rewrites_only_the_days_that_changed(sim: MetronomeSimulator, tmp_path: Path) -> None:
    ids = billable(sim)[:5]
    first = split_operator(tmp_path, customer_ids=ids).execute({})
    stale = day_path(tmp_path, DAYS[1])
    stale.write_bytes(b"an older version of the day")
    before = {day: stamp(day_path(tmp_path, day)) for day in DAYS}

    second = split_operator(tmp_path, customer_ids=ids).execute({})

    assert second["changed_days"] == [str(DAYS[1])]
    assert [entry["changed"] for entry in second["objects"]] == [False, True, False]
    # Unchanged days are the very files the first run wrote; the changed one was replaced.
    assert stamp(day_path(tmp_path, DAYS[0])) == before[DAYS[0]]
    assert stamp(day_path(tmp_path, DAYS[2])) == before[DAYS[2]]
    assert stamp(stale) != before[DAYS[1]]
    assert [entry["bytes"] for entry in second["objects"]] == [entry["bytes"] for entry in first["objects"]]
    # No temporaries are left beside any day.
    assert sorted(os.listdir(tmp_path)) == [f"date={day}" for day in DAYS]
    assert all(os.listdir(tmp_path / f"date={day}") == ["costs.jsonl.gz"] for day in DAYS)


def test_a_failed_fetch_leaves_every_stored_day_as_it_was(sim: MetronomeSimulator, tmp_path: Path) -> None:
    for day in DAYS:
        path = day_path(tmp_path, day)
        path.parent.mkdir(parents=True)
        path.write_bytes(f"stored {day}".encode())
    # The last customer in id order answers 404: every other customer was fetched already.
    ids = [*billable(sim)[:4], UNKNOWN_CUSTOMER]

    with pytest.raises(Exception, match="404"):
        split_operator(tmp_path, customer_ids=ids).execute({})

    assert [day_path(tmp_path, day).read_bytes() for day in DAYS] == [
        f"stored {day}".encode() for day in DAYS
    ]
    assert all(os.listdir(tmp_path / f"date={day}") == ["costs.jsonl.gz"] for day in DAYS)


def test_a_customer_lacking_a_day_fails_before_any_day_is_written(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    ids = billable(sim)[:4]
    not_produced_yet(sim, ids, [DAYS[2]])

    with pytest.raises(Exception, match=rf"no costs yet for customer {ids[0]}, .* on {DAYS[2]}"):
        split_operator(tmp_path, customer_ids=ids).execute({})

    assert not tmp_path.exists() or os.listdir(tmp_path) == []


def test_accepted_missing_days_are_written_as_a_one_day_run_writes_them(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    ids = billable(sim)[:4]
    # Late for the account on the last day; one customer has nothing billed on the day before.
    not_produced_yet(sim, ids, [DAYS[2]])
    sim.withhold(ids[2], [DAYS[1]])

    manifest = split_operator(tmp_path / "split", customer_ids=ids, on_missing_days="accept").execute({})
    one_day = MetronomeCostsOperator(
        task_id="one_day",
        customer_ids=ids,
        starting_on=DAYS[1].isoformat(),
        ending_before=DAYS[2].isoformat(),
        on_missing_days="accept",
        output_uri=f"file://{tmp_path}/daily/{{date}}.jsonl.gz",
    ).execute({})

    assert manifest["missing_days"] == {str(DAYS[2]): ids}
    assert manifest["not_billed"] == {str(DAYS[1]): {"customers": 1, "customer_ids": [ids[2]]}}
    assert (
        day_path(tmp_path / "split", DAYS[1]).read_bytes()
        == (tmp_path / "daily" / f"{DAYS[1]}.jsonl.gz").read_bytes()
    )
    assert manifest["objects"][1]["customers"] == one_day["customers"] == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"output_uri": None},
            r"split_by_day=True writes one object per day, which needs output_uri with \{date\}",
        ),
        ({"output_uri": "file:///data/costs-{start_date}.jsonl"}, r"has no \{date\}, so split_by_day=True"),
        ({"split_by_day": "yes"}, r"split_by_day='yes' must be True or False"),
        (
            {"starting_on": "2024-01-01", "ending_before": "2024-04-11"},
            rf"spans 101 days; a run fetches at most {MAX_WINDOW_DAYS}.*monthly",
        ),
    ],
)
def test_bad_split_arguments_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("task_id", "fetch_days")
    kwargs.setdefault("split_by_day", True)
    kwargs.setdefault("output_uri", "file:///data/date={date}/costs.jsonl")
    with pytest.raises(ValueError, match=message):
        MetronomeCostsOperator(**kwargs)


def test_a_window_of_the_largest_size_is_accepted() -> None:
    MetronomeCostsOperator(
        task_id="history",
        split_by_day=True,
        output_uri="file:///data/date={date}/costs.jsonl",
        starting_on="2024-01-01",
        ending_before=(dt.date(2024, 1, 1) + dt.timedelta(days=MAX_WINDOW_DAYS)).isoformat(),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output_uri": "{{ params.base }}/costs.jsonl"}, r"has no \{date\}"),
        (
            {"output_uri": "{{ params.base }}/month={date:%Y-%m}.jsonl"},
            r"gives the same object to several days",
        ),
        ({"ending_before": "{{ params.end }}"}, r"spans 101 days"),
    ],
)
def test_bad_rendered_split_arguments_fail_before_any_request(
    sim: MetronomeSimulator, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    op = split_operator(tmp_path, customer_ids=billable(sim)[:2], **kwargs)
    op.output_uri = op.output_uri.replace("{{ params.base }}", f"file://{tmp_path}")
    if op.ending_before == "{{ params.end }}":
        op.ending_before = (DAYS[0] + dt.timedelta(days=101)).isoformat()

    with pytest.raises(ValueError, match=message):
        op.execute({})

    assert sim.requests == []
    assert not tmp_path.exists() or os.listdir(tmp_path) == []
