"""Reading an output object back: its records, and a summary with exact totals, for downstream tasks."""

from __future__ import annotations

import decimal
import gzip
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from airflow_provider_metronome.models import parse_json
from airflow_provider_metronome.output.records import Record, record_amounts
from airflow_provider_metronome.output.uris import is_parquet, storage_path


def iter_output(uri: str | os.PathLike[str], *, conn_id: str | None = None) -> Iterator[Record]:
    """Read back the records of an object the operator wrote (JSON Lines, gzipped when ``.gz``; Parquet).

    Parquet records hold ``Decimal`` numbers, UTC datetimes, dicts for maps and ``extra`` as JSON.

    :param uri: The manifest's ``uri`` (an ObjectStoragePath URL, read as is: no percent-decoding),
        or a local path.
    :param conn_id: The storage connection, when the URL does not name it.
    """
    if isinstance(uri, os.PathLike):
        uri = f"file://{os.path.abspath(os.fspath(uri))}"
    path = storage_path(uri, conn_id)
    with path.open("rb") as raw:
        if is_parquet(path.name):
            from airflow_provider_metronome.output.parquet import iter_records

            yield from iter_records(raw)
            return
        stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw
        # readline, not iteration: Airflow 2's file wrapper has no __iter__.
        for line in iter(stream.readline, b""):
            if line.strip():
                yield parse_json(line)


def summarize_output(uri: str | os.PathLike[str], *, conn_id: str | None = None) -> dict[str, Any]:
    """Count an output object's records and customers and total its costs per credit type name.

    Works for both sources and both record formats: ``totals`` adds up each credit type's cost
    (``/costs``) or invoice total (breakdowns) as exact ``Decimal`` values, whatever their magnitude.
    """
    totals: dict[str, Decimal] = {}
    customers: set[str] = set()
    records = 0
    # Exact sums: precision as large as the digits need, and an inexact result would raise.
    with decimal.localcontext(decimal.Context(prec=decimal.MAX_PREC, traps=[decimal.Inexact])):
        for record in iter_output(uri, conn_id=conn_id):
            records += 1
            customers.add(record["customer_id"])
            for name, amount in record_amounts(record):
                totals[name] = totals.get(name, Decimal(0)) + (amount or Decimal(0))
    return {
        "uri": os.fspath(uri),
        "customers": len(customers),
        "records": records,
        "totals": dict(sorted(totals.items())),
    }


__all__ = ["iter_output", "summarize_output"]
