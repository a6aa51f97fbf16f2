"""The Parquet encoding: its schemas, the same bytes for the same rows, atomic and kill-safe objects."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

pytest.importorskip("pyarrow", reason="Parquet output needs the parquet extra")

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_provider_metronome._compat import AirflowException
from airflow_provider_metronome.models import CostWindow, InvoiceBreakdown
from airflow_provider_metronome.output import parquet
from airflow_provider_metronome.output.records import BREAKDOWN_LINE_ITEM_FIELDS, COSTS_LINE_ITEM_FIELDS
from airflow_provider_metronome.output.sinks import DaySplitSink, ObjectSink, object_encoding
from airflow_provider_metronome.output.uris import storage_path
from airflow_provider_metronome.output.writers import AtomicObjectWriter
from airflow_provider_metronome.testing import MetronomeSimulator

DAYS = [dt.date(2024, 1, 5) + dt.timedelta(days=offset) for offset in range(3)]
DECIMAL = "decimal128(38, 18)"
TIMESTAMP = "timestamp[us, tz=UTC]"


@pytest.fixture(scope="module")
def data() -> MetronomeSimulator:
    return MetronomeSimulator(now=dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc))


def day_objects(data: MetronomeSimulator, customer_id: str) -> list[tuple[dt.date, InvoiceBreakdown]]:
    return [
        (day, InvoiceBreakdown.model_validate(answer))
        for day in DAYS
        for answer in data.breakdowns_for(customer_id, day, day + dt.timedelta(days=1))
    ]


def writer(path: Path) -> AtomicObjectWriter:
    return AtomicObjectWriter(storage_path(f"file://{path}"), uri=f"file://{path}")


def write(path: Path, batches: Sequence[pa.RecordBatch]) -> bytes:
    encoding = object_encoding(f"file://{path}", "line_items", "invoice_breakdowns")
    with ObjectSink(encoding, writer(path), logging.getLogger("test")) as sink:
        for batch in batches:
            sink.add("c", [(DAYS[0], batch)])
    return path.read_bytes()


def add_then_crash(sink: ObjectSink, customer_id: str, prepared: parquet.DayBatches) -> None:
    """Add a customer's rows, then fail inside the sink's block, as a run failing midway does."""
    with sink:
        sink.add(customer_id, prepared)
        raise RuntimeError("crash")


def test_each_source_has_its_documented_schema() -> None:
    costs = parquet.schema("costs")
    breakdowns = parquet.schema("invoice_breakdowns")

    assert tuple(costs.names) == COSTS_LINE_ITEM_FIELDS
    assert tuple(breakdowns.names) == BREAKDOWN_LINE_ITEM_FIELDS
    types = {field.name: str(field.type) for field in breakdowns}
    assert {name for name, kind in types.items() if kind == DECIMAL} == {"cost", "quantity", "unit_price"}
    assert {name for name, kind in types.items() if kind == TIMESTAMP} == {
        "start_timestamp",
        "end_timestamp",
        "invoice_start_timestamp",
        "invoice_end_timestamp",
    }
    assert {name for name, kind in types.items() if kind.startswith("map<")} == {
        "presentation_group_values",
        "pricing_group_values",
    }
    assert {name for name, kind in types.items() if kind == "string"} == set(BREAKDOWN_LINE_ITEM_FIELDS) - {
        "cost",
        "quantity",
        "unit_price",
        "start_timestamp",
        "end_timestamp",
        "invoice_start_timestamp",
        "invoice_end_timestamp",
        "presentation_group_values",
        "pricing_group_values",
    }


def test_the_same_rows_give_the_same_bytes_however_they_arrive(
    data: MetronomeSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small row groups, so that rows from several customers share one and one customer spans two.
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 7)
    batches = [
        batch
        for customer_id in data.active_customer_ids[:6]
        for _, batch in parquet.to_day_batches(
            "invoice_breakdowns", customer_id, day_objects(data, customer_id)
        )
    ]
    whole = pa.Table.from_batches(batches).combine_chunks().to_batches()

    one_by_one = write(tmp_path / "small.parquet", batches)
    at_once = write(tmp_path / "whole.parquet", whole)

    assert one_by_one == at_once
    stored = pq.ParquetFile(tmp_path / "small.parquet")
    rows = sum(batch.num_rows for batch in batches)
    assert stored.metadata.num_rows == rows > 14
    assert [stored.metadata.row_group(index).num_rows for index in range(stored.num_row_groups)] == [7] * (
        rows // 7
    ) + ([rows % 7] if rows % 7 else [])


def test_a_day_without_records_is_an_empty_object_of_the_schema(tmp_path: Path) -> None:
    target = tmp_path / "empty.parquet"

    write(target, [])

    table = pq.read_table(target)
    assert table.num_rows == 0
    assert table.schema == parquet.schema("invoice_breakdowns")


def test_a_failure_midway_leaves_the_previous_object_and_no_temporary(
    data: MetronomeSimulator, tmp_path: Path
) -> None:
    target = tmp_path / "costs.parquet"
    target.write_bytes(b"previous")
    customer_id = data.active_customer_ids[0]
    prepared = parquet.to_day_batches("invoice_breakdowns", customer_id, day_objects(data, customer_id))
    encoding = object_encoding(f"file://{target}", "line_items", "invoice_breakdowns")

    with pytest.raises(RuntimeError, match="crash"):
        add_then_crash(ObjectSink(encoding, writer(target), logging.getLogger("t")), customer_id, prepared)

    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == [target.name]


def test_a_kill_between_two_days_leaves_whole_days_and_the_others_as_they_were(
    data: MetronomeSimulator, tmp_path: Path
) -> None:
    paths = {day: tmp_path / f"{day}.parquet" for day in DAYS}
    for path in paths.values():
        path.write_bytes(b"previous")
    customer_id = data.active_customer_ids[0]
    windows = [(day, CostWindow.model_validate(data.costs_for(customer_id, day))) for day in DAYS]
    encoding = object_encoding(f"file://{tmp_path}/{{date}}.parquet", "line_items", "costs")

    def killed_after_the_first_day(written: Sequence[dt.date]) -> None:
        if written:
            raise AirflowException("killed")

    sink = DaySplitSink(
        encoding,
        {day: writer(path) for day, path in paths.items()},
        logging.getLogger("t"),
        killed_after_the_first_day,
    )
    with pytest.raises(AirflowException, match="killed"), sink:
        sink.add(customer_id, sink.prepare(customer_id, windows))

    first = pq.read_table(paths[DAYS[0]])
    assert first.num_rows == len(list(encoding.prepare(customer_id, windows[:1])[0][1].to_pylist())) > 0
    assert set(first.column("customer_id").to_pylist()) == {customer_id}
    assert [paths[day].read_bytes() for day in DAYS[1:]] == [b"previous"] * 2
    assert sorted(os.listdir(tmp_path)) == sorted(path.name for path in paths.values())
