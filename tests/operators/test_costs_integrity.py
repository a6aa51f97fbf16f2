"""MetronomeCostsOperator writes a day complete and exact, or not at all (local files; S3 in test_costs_s3).

Against the simulator over real HTTP: wrong answers (a window twice, a window outside the range)
and days Metronome has not produced fail the task before anything is written, unless missing days
are accepted, and then the manifest lists them. Bad output URIs fail before any request.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_metronome._compat import AirflowException
from airflow_provider_metronome.exceptions import MetronomeResponseError
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from tests.support.simulator import billable, not_produced_yet

DAY = dt.date(2024, 1, 5)
SOURCES = ["costs", "invoice_breakdowns"]
PREVIOUS = b'{"customer_id":"previous run"}\n'


def operator(**kwargs: Any) -> MetronomeCostsOperator:
    kwargs.setdefault("task_id", "fetch_costs")
    kwargs.setdefault("starting_on", DAY.isoformat())
    kwargs.setdefault("ending_before", (DAY + dt.timedelta(days=3)).isoformat())
    return MetronomeCostsOperator(**kwargs)


def endpoint(source: str, customer_id: str) -> str:
    return f"/v1/customers/{customer_id}/" + ("costs" if source == "costs" else "invoices/breakdowns")


def planted(tmp_path: Path, name: str = "2024-01-05.jsonl") -> Path:
    """A previous run's object, which a failed run must leave byte-identical."""
    path = tmp_path / name
    path.write_bytes(PREVIOUS)
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return [json.loads(line) for line in data.splitlines()]


# -- wrong answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault.duplicate_window(), r"2024-01-0\d twice|twice for 2024-01-0\d"),
        (Fault.out_of_range_window(), r"a window for 2019-01-01, outside 2024-01-04\.\.2024-01-07"),
    ],
    ids=["duplicate", "out_of_range"],
)
def test_a_window_twice_or_outside_the_range_fails_with_nothing_written(
    sim: MetronomeSimulator, tmp_path: Path, source: str, fault: Fault, message: str
) -> None:
    ids = billable(sim)[:5]
    bad = ids[3]
    previous = planted(tmp_path)
    sim.inject(fault, path=endpoint(source, bad), times=None)

    with pytest.raises(MetronomeResponseError, match=message) as caught:
        operator(customer_ids=ids, source=source, output_uri=f"file://{tmp_path}/{{date}}.jsonl").execute({})

    # The error names the customer and the endpoint; the previous object and nothing else is left.
    assert bad in str(caught.value)
    assert endpoint(source, bad) in str(caught.value)
    assert previous.read_bytes() == PREVIOUS
    assert sorted(os.listdir(tmp_path)) == [previous.name]


@pytest.mark.parametrize("source", SOURCES)
def test_a_wrong_answer_fails_xcom_mode_too(sim: MetronomeSimulator, source: str) -> None:
    ids = billable(sim)[:2]
    sim.inject(Fault.duplicate_window(), path=endpoint(source, ids[0]), times=None)

    with pytest.raises(MetronomeResponseError, match=ids[0]):
        operator(customer_ids=ids, source=source).execute({})


# -- days Metronome has not produced ----------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_a_missing_day_fails_before_writing_and_points_to_the_sensor(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    ids = billable(sim)[:6]
    not_produced_yet(sim, ids, [DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)])
    previous = planted(tmp_path)

    with pytest.raises(AirflowException) as caught:
        operator(customer_ids=ids, source=source, output_uri=f"file://{tmp_path}/{{date}}.jsonl").execute({})

    message = str(caught.value)
    assert ids[0] in message
    assert "2024-01-06..2024-01-07" in message
    assert "MetronomeCostsSensor" in message
    assert "on_missing_days='accept'" in message
    assert previous.read_bytes() == PREVIOUS
    assert sorted(os.listdir(tmp_path)) == [previous.name]


def test_a_missing_day_fails_xcom_mode_too(sim: MetronomeSimulator) -> None:
    ids = billable(sim)[:3]
    not_produced_yet(sim, ids, [DAY + dt.timedelta(days=2)])

    with pytest.raises(AirflowException, match=f"customer {ids[0]}, .* on 2024-01-07 "):
        operator(customer_ids=ids).execute({})


@pytest.mark.parametrize("source", SOURCES)
def test_accepted_missing_days_are_written_and_listed_per_day(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    ids = billable(sim)[:6]
    first = ids[1]
    # The last day is late for the account; one customer also has nothing billed on the first.
    not_produced_yet(sim, ids, [DAY + dt.timedelta(days=2)])
    sim.withhold(first, [DAY])

    manifest = operator(
        customer_ids=ids,
        source=source,
        record_format="raw",
        on_missing_days="accept",
        output_uri=f"file://{tmp_path}/{{date}}.jsonl",
    ).execute({})

    assert manifest["missing_days"] == {"2024-01-07": ids}
    assert manifest["not_billed"] == {"2024-01-05": {"customers": 1, "customer_ids": [first]}}
    records = read_lines(tmp_path / "2024-01-05.jsonl")
    assert len(records) == manifest["records"] > 0
    # What Metronome had is written: the late customer's one available day, nothing of the others.
    day_field = "start_timestamp" if source == "costs" else "breakdown_start_timestamp"
    first_days = {record[day_field][:10] for record in records if record["customer_id"] == first}
    assert first_days == {"2024-01-06"}


def test_the_manifest_counts_customers_whose_records_were_written(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    ids = billable(sim)[:4]
    # One customer has none of the window's days yet, so no record of it is written.
    sim.withhold(ids[0], [DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)])

    manifest = operator(
        customer_ids=ids, on_missing_days="accept", output_uri=f"file://{tmp_path}/{{date}}.jsonl"
    ).execute({})

    written = {record["customer_id"] for record in read_lines(tmp_path / "2024-01-05.jsonl")}
    assert ids[0] not in written
    assert manifest["customers"] == len(written) == 3


def test_on_missing_days_is_checked_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match=r"on_missing_days='skip' must be one of 'fail', 'accept'"):
        operator(on_missing_days="skip")


# -- output URIs that cannot work ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("foo://bucket/{date}.jsonl", r"unknown scheme foo://"),
        ("file://relative-dir/{date}.jsonl", r"relative file:// path .* 'file:///relative-dir/"),
    ],
)
def test_unknown_schemes_and_relative_paths_fail_when_the_dag_is_parsed(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        operator(output_uri=uri)


def test_a_rendered_bad_uri_fails_before_any_request(sim: MetronomeSimulator) -> None:
    op = operator(customer_ids=None, output_uri="{{ 'foo' }}://bucket/{date}.jsonl")

    op.render_template_fields({})

    with pytest.raises(ValueError, match="unknown scheme foo://"):
        op.execute({})

    assert sim.requests == []


def test_s3_without_its_filesystem_names_the_package_before_any_request(
    sim: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a machine without the s3 extra: importing s3fs fails.
    monkeypatch.setitem(sys.modules, "s3fs", None)
    op = operator(customer_ids=None, output_uri="s3://my-bucket/costs/{date}.jsonl.gz")

    with pytest.raises(ValueError, match=r"pip install 'airflow-provider-metronome\[s3\]'"):
        op.execute({})

    assert sim.requests == []
