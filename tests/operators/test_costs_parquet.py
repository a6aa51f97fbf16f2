"""Parquet output: the operator against the simulator, the lake read in place by DuckDB, every cost exact."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyarrow", reason="Parquet output needs the parquet extra")
pytest.importorskip("duckdb", reason="the lake query test needs duckdb (the test extra)")

import duckdb
import pyarrow.parquet as pq

import airflow_provider_metronome.output as output_package
from airflow_provider_metronome._compat import AirflowFailException
from airflow_provider_metronome.models import parse_json
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.output.parquet import schema
from airflow_provider_metronome.output.reading import iter_output, summarize_output
from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from tests.support.simulator import billable

FIRST = dt.date(2024, 1, 4)
DAYS = [FIRST + dt.timedelta(days=offset) for offset in range(3)]
ONE_DAY = dt.timedelta(days=1)
SOURCES = ["costs", "invoice_breakdowns"]
PATHS = {"costs": "costs", "invoice_breakdowns": "invoices/breakdowns"}
# Values decimal(38, 18) holds exactly: 19 and 20 digits before the point, 18 after, a large
# integer beyond a float's 2**53, exponents; few enough large ones that no sum outgrows 38 digits.
EXACT_TEXTS = (
    "1234567890123456789.123456789012345678",
    "9007199254740993",
    "0.000000000000000001",
    "-1.5e+3",
    "12.50",
    "1E-18",
    "0.1",
    "3",
)
# Exact inside Decimal's widest context: the expected sums never round.
EXACT = decimal.Context(prec=decimal.MAX_PREC, traps=[decimal.Inexact])


def operator(folder: Path, source: str, **kwargs: Any) -> MetronomeCostsOperator:
    kwargs.setdefault("task_id", "fetch_days")
    kwargs.setdefault("starting_on", DAYS[0].isoformat())
    kwargs.setdefault("ending_before", (DAYS[-1] + ONE_DAY).isoformat())
    kwargs.setdefault("output_uri", f"file://{folder}/date={{date}}/costs.parquet")
    kwargs.setdefault("record_format", "line_items")
    return MetronomeCostsOperator(source=source, **kwargs)  # type: ignore[arg-type]


def sent_objects(sim: MetronomeSimulator, customer_id: str, source: str) -> list[dict[str, Any]]:
    """The window's objects exactly as the simulator sent them (its last answer for the customer)."""
    body = parse_json(sim.last_body(f"/v1/customers/{customer_id}/{PATHS[source]}"))
    first = f"{DAYS[0]}T00:00:00Z"
    # The operator also asks for the day before the window (the evidence of a late day): not written.
    key = "start_timestamp" if source == "costs" else "breakdown_start_timestamp"
    return [item for item in body["data"] if item[key] >= first]


def sent_costs(item: dict[str, Any], source: str) -> list[tuple[str, Decimal]]:
    """(credit type name, cost) of each line item record Metronome's object makes, in record order."""
    if source == "costs":
        return [
            (credit_type["name"], line["cost"])
            for credit_type in item["credit_types"].values()
            for line in credit_type.get("line_item_breakdown") or [credit_type]
        ]
    lines = item["line_items"] or [{"credit_type": item["credit_type"], "total": item["total"]}]
    return [((line.get("credit_type") or item["credit_type"])["name"], line["total"]) for line in lines]


def expected_totals(sim: MetronomeSimulator, ids: list[str], source: str) -> dict[tuple[str, str], Decimal]:
    totals: dict[tuple[str, str], Decimal] = {}
    with decimal.localcontext(EXACT):
        for customer_id in ids:
            for item in sent_objects(sim, customer_id, source):
                for name, cost in sent_costs(item, source):
                    key = (customer_id, name)
                    totals[key] = totals.get(key, Decimal(0)) + cost
    return totals


@pytest.mark.parametrize("source", SOURCES)
def test_duckdb_reads_the_split_lake_in_place_with_exact_totals(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    ids = billable(sim)[:5]
    # One customer's money and quantities are long decimals and large integers, sent verbatim.
    sim.inject(Fault.exact_numbers(EXACT_TEXTS), f"/v1/customers/{ids[0]}/")

    manifest = operator(tmp_path, source, customer_ids=ids, split_by_day=True).execute({})

    rows = duckdb.sql(
        f"""
        SELECT customer_id, credit_type_name, sum(cost) AS total, count(*) AS records,
               min(date) AS first_day, max(date) AS last_day
        FROM read_parquet('{tmp_path}/date=*/costs.parquet', hive_partitioning=true)
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    expected = expected_totals(sim, ids, source)
    assert {(row[0], row[1]): row[2] for row in rows} == expected
    # The exact values made it in: totals with more digits than a float or a double-based sum keeps.
    assert any(len(total.as_tuple().digits) > 30 for key, total in expected.items() if key[0] == ids[0])
    assert sum(row[3] for row in rows) == manifest["records"]
    # The day partitions, read from the paths, are the window's days.
    assert {row[4] for row in rows} | {row[5] for row in rows} <= set(DAYS)
    assert duckdb.sql(
        f"SELECT typeof(cost), typeof(start_timestamp) FROM read_parquet('{tmp_path}/date=*/costs.parquet') LIMIT 1"
    ).fetchall() == [("DECIMAL(38,18)", "TIMESTAMP WITH TIME ZONE")]


@pytest.mark.parametrize("source", SOURCES)
def test_every_cost_in_parquet_is_metronomes_value_exactly(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    customer = billable(sim)[0]
    sim.inject(Fault.exact_numbers(EXACT_TEXTS), f"/v1/customers/{customer}/")
    target = tmp_path / "costs.parquet"

    manifest = operator(tmp_path, source, customer_ids=customer, output_uri=f"file://{target}").execute({})

    sent = [cost for item in sent_objects(sim, customer, source) for _, cost in sent_costs(item, source)]
    table = pq.read_table(target)
    assert table.schema == schema(source)  # type: ignore[arg-type]
    assert table.column("cost").to_pylist() == sent
    assert {str(cost) for cost in sent} <= set(EXACT_TEXTS)
    assert manifest["records"] == len(sent) == table.num_rows
    # The project's reader totals them exactly, as it does JSON Lines.
    totals = expected_totals(sim, [customer], source)
    assert summarize_output(target)["totals"] == {name: total for (_, name), total in sorted(totals.items())}


def test_breakdown_rows_carry_the_line_items_fields_typed(sim: MetronomeSimulator, tmp_path: Path) -> None:
    customer = billable(sim)[1]
    target = tmp_path / "costs.parquet"

    operator(tmp_path, "invoice_breakdowns", customer_ids=customer, output_uri=f"file://{target}").execute({})

    # (A day without usage has an invoice without line items: one record, its line-item fields null.)
    records = [record for record in iter_output(target) if record["line_item_name"] is not None]
    sent = [
        (item, line)
        for item in sent_objects(sim, customer, "invoice_breakdowns")
        for line in item["line_items"]
    ]
    assert len(records) == len(sent) > 0
    utc = dt.timezone.utc
    for record, (item, line) in zip(records, sent, strict=True):
        assert record["unit_price"] == line["unit_price"]
        assert record["quantity"] == line["quantity"]
        assert record["product_type"] == line["product_type"]
        assert record["presentation_group_values"] == line.get("presentation_group_values")
        assert record["pricing_group_values"] == line.get("pricing_group_values")
        assert record["start_timestamp"] == dt.datetime.fromisoformat(
            item["breakdown_start_timestamp"][:-1]
        ).replace(tzinfo=utc)
        assert record["invoice_start_timestamp"] == dt.datetime(2024, 1, 1, tzinfo=utc)
        assert record["invoice_end_timestamp"] == dt.datetime(2024, 2, 1, tzinfo=utc)
        assert record["start_timestamp"].utcoffset() == dt.timedelta(0)
        # A field the schema does not know (the line item's ending_before) is kept as JSON.
        assert record["extra"] == {"ending_before": line["ending_before"]}


def test_a_value_the_column_cannot_hold_fails_naming_it_and_writes_nothing(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    customer = billable(sim)[0]
    sim.inject(Fault.exact_numbers(["123456789012345678901234567890.01"]), f"/v1/customers/{customer}/")

    with pytest.raises(
        AirflowFailException,
        match=r"the cost 123456789012345678901234567890\.01, which the Parquet column decimal\(38, 18\) cannot hold exactly",
    ):
        operator(tmp_path, "costs", customer_ids=customer, split_by_day=True).execute({})

    assert not tmp_path.exists() or os.listdir(tmp_path) == []


@pytest.mark.parametrize("source", SOURCES)
def test_split_days_equal_one_day_runs_and_unchanged_days_are_left_alone(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    ids = billable(sim)[:6]
    for day in DAYS:
        operator(
            tmp_path / "daily",
            source,
            customer_ids=ids,
            starting_on=day.isoformat(),
            ending_before=(day + ONE_DAY).isoformat(),
        ).execute({})
    split = operator(tmp_path / "split", source, customer_ids=ids, split_by_day=True)

    first = split.execute({})
    stamps = [(tmp_path / "split" / f"date={day}" / "costs.parquet").stat().st_mtime_ns for day in DAYS]
    again = split.execute({})

    for day in DAYS:
        daily = (tmp_path / "daily" / f"date={day}" / "costs.parquet").read_bytes()
        assert (tmp_path / "split" / f"date={day}" / "costs.parquet").read_bytes() == daily
        assert daily[:4] == daily[-4:] == b"PAR1"
    assert first["changed_days"] == [str(day) for day in DAYS]
    assert again["changed_days"] == []
    assert stamps == [
        (tmp_path / "split" / f"date={day}" / "costs.parquet").stat().st_mtime_ns for day in DAYS
    ]
    assert sorted(os.listdir(tmp_path / "split")) == [f"date={day}" for day in DAYS]


def test_raw_records_to_parquet_are_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(
        ValueError,
        match=r"is Parquet, which holds flat records of one schema: use record_format='line_items'",
    ):
        MetronomeCostsOperator(
            task_id="raw", output_uri="s3://bucket/costs/{date}.parquet", record_format="raw"
        )


def test_templated_raw_parquet_is_refused_after_rendering_before_any_request(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    op = operator(
        tmp_path,
        "costs",
        customer_ids=billable(sim)[:2],
        record_format="raw",
        output_uri="{{ params.base }}/{date}.parquet",
    )
    op.output_uri = f"file://{tmp_path}/{{date}}.parquet"  # as Jinja renders it

    with pytest.raises(ValueError, match=r"or keep record_format='raw' with JSON Lines"):
        op.execute({})

    assert sim.requests == []


def test_parquet_without_pyarrow_fails_before_any_request_naming_the_extra(
    sim: MetronomeSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyarrow not installed: importing it fails, as it does without the extra.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.delitem(sys.modules, "airflow_provider_metronome.output.parquet")
    monkeypatch.delattr(output_package, "parquet")

    with pytest.raises(
        ValueError, match=r"needs pyarrow .*: pip install 'airflow-provider-metronome\[parquet\]'"
    ):
        operator(tmp_path, "costs", customer_ids=billable(sim)[:2]).execute({})

    assert sim.requests == []
    assert not tmp_path.exists() or os.listdir(tmp_path) == []


def test_a_gzipped_parquet_name_is_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match=r"gzips a Parquet name: Parquet compresses its own columns"):
        MetronomeCostsOperator(
            task_id="gz", output_uri="file:///data/{date}.parquet.gz", record_format="line_items"
        )
