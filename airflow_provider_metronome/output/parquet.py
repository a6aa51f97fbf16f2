"""Parquet output: the ``line_items`` records as typed columns, one schema per source (needs pyarrow).

The columns are the record fields of :mod:`~airflow_provider_metronome.output.records`, in their
order, typed by :func:`column_type`: ids, names and statuses as strings; money, quantities and unit
prices as :data:`DECIMAL`, built from the digits Metronome sent (a value it cannot hold exactly
fails the run, never rounds); timestamps as UTC microseconds; grouping maps as maps of strings;
``extra`` (the fields no column names) as JSON text, so a new Metronome field never changes the
schema.

The same records always give the same bytes (for one pyarrow version): rows are cut into row
groups of :data:`ROW_GROUP_ROWS` whatever the customers, and each row group is written from
contiguous columns.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
from collections.abc import Iterator, Sequence
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_provider_metronome._compat import AirflowFailException
from airflow_provider_metronome.models import SourceObject, dump_json, parse_json
from airflow_provider_metronome.output.records import (
    BREAKDOWN_LINE_ITEM_FIELDS,
    COSTS_LINE_ITEM_FIELDS,
    Record,
    to_day_records,
)
from airflow_provider_metronome.output.writers import AtomicObjectWriter
from airflow_provider_metronome.vocabulary import Source
from airflow_provider_metronome.window import to_utc

DECIMAL_PRECISION = 38
DECIMAL_SCALE = 18
# decimal(38, 18): the widest decimal128 every lake engine reads (Spark's default for decimals,
# Athena/Trino, Snowflake, DuckDB; BigQuery loads it as BIGNUMERIC): 20 digits before the point,
# 18 after.
DECIMAL = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
TIMESTAMP = pa.timestamp("us", tz="UTC")
GROUP_VALUES = pa.map_(pa.string(), pa.string())
# Rows per row group: a day of 1,000 customers is one; large enough for readers, small enough that
# the rows held before a row group is written stay a few MB.
ROW_GROUP_ROWS = 65_536
# Read by Spark, Athena/Trino, Snowflake, BigQuery and DuckDB; smaller than gzip at less CPU.
COMPRESSION = "zstd"
# Every buffer of ours comes from the C library's allocator, which reuses what one customer's rows
# freed for the next; Arrow's default pool (mimalloc or jemalloc) keeps more of it, about 20 MB at
# the peak of a 90-day split run of 1,000 customers (the benchmark). The process's default pool, and
# so any other pyarrow user in the task, is left alone.
MEMORY_POOL = pa.system_memory_pool()
_DECIMAL_FIELDS = frozenset({"cost", "quantity", "unit_price"})
_TIMESTAMP_FIELDS = frozenset(
    {"start_timestamp", "end_timestamp", "invoice_start_timestamp", "invoice_end_timestamp"}
)
_MAP_FIELDS = frozenset({"presentation_group_values", "pricing_group_values"})
_JSON_FIELDS = frozenset({"extra"})
_FIELDS: dict[Source, tuple[str, ...]] = {
    "costs": COSTS_LINE_ITEM_FIELDS,
    "invoice_breakdowns": BREAKDOWN_LINE_ITEM_FIELDS,
}

DayBatches = list[tuple[dt.date, pa.RecordBatch]]
"""One customer's records as Arrow rows, grouped by the UTC day of their object, in day order."""


def column_type(field: str) -> pa.DataType:
    """The Parquet type of a ``line_items`` field."""
    if field in _DECIMAL_FIELDS:
        return DECIMAL
    if field in _TIMESTAMP_FIELDS:
        return TIMESTAMP
    if field in _MAP_FIELDS:
        return GROUP_VALUES
    return pa.string()


_SCHEMAS: dict[Source, pa.Schema] = {
    source: pa.schema([pa.field(name, column_type(name)) for name in fields])
    for source, fields in _FIELDS.items()
}


def schema(source: Source) -> pa.Schema:
    """The documented schema of a source's Parquet objects."""
    return _SCHEMAS[source]


def to_batch(source: Source, records: Sequence[Record]) -> pa.RecordBatch:
    """``records`` (``line_items`` of ``source``) as one Arrow batch of :func:`schema`.

    :raises AirflowFailException: naming a value its column cannot hold exactly.
    """
    target = schema(source)
    columns = [_column(field, [record[field.name] for record in records]) for field in target]
    return pa.RecordBatch.from_arrays(columns, schema=target)


def _column(field: pa.Field, values: list[Any]) -> pa.Array:
    try:
        return _convert(field, values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError) as err:
        raise AirflowFailException(_unfit_message(field, _first_unfit(field, values), err)) from None


def _convert(field: pa.Field, values: list[Any]) -> pa.Array:
    if field.name in _JSON_FIELDS:
        return pa.array(
            [None if value is None else dump_json(value).decode() for value in values],
            pa.string(),
            memory_pool=MEMORY_POOL,
        )
    if field.name in _TIMESTAMP_FIELDS:
        return pa.array(
            [None if value is None else _micros(value) for value in values],
            TIMESTAMP,
            memory_pool=MEMORY_POOL,
        )
    # Decimals are built from each JsonNumber's digits, never through a float; pyarrow refuses a
    # value that would need rounding or more digits than the column has.
    return pa.array(values, field.type, memory_pool=MEMORY_POOL)


@functools.lru_cache(maxsize=4096)
def _micros(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 timestamp (cached: a run has few, its days and periods).

    Parsed here rather than by Arrow's cast, which would load its compute library (11 MB of RSS).
    """
    moment = to_utc(text)
    return calendar.timegm(moment.utctimetuple()) * 1_000_000 + moment.microsecond


def _first_unfit(field: pa.Field, values: list[Any]) -> Any:
    """The first value its column cannot hold (the one the failure names)."""
    for value in values:
        try:
            _convert(field, [value])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            return value
    return None


def _unfit_message(field: pa.Field, value: Any, err: Exception) -> str:
    if field.type == DECIMAL:
        return (
            f"Metronome sent the {field.name} {value}, which the Parquet column decimal({DECIMAL_PRECISION}, "
            f"{DECIMAL_SCALE}) cannot hold exactly (at most {DECIMAL_PRECISION - DECIMAL_SCALE} digits before "
            f"the point and {DECIMAL_SCALE} after); nothing was written. Write JSON Lines (an output_uri "
            "ending in .jsonl or .jsonl.gz), which keeps every digit."
        )
    return f"The {field.name} {value!r} cannot be written to a Parquet {field.type} column ({err}); nothing was written."


def to_day_batches(
    source: Source, customer_id: str, day_objects: Sequence[tuple[dt.date, SourceObject]]
) -> DayBatches:
    """One customer's day-ordered objects as ``line_items`` rows, grouped by day.

    One conversion for the whole customer (its days are slices of one batch): a batch per day
    would cost more than the rows themselves.
    """
    day_records = to_day_records("line_items", customer_id, day_objects)
    batch = to_batch(source, [record for _, records in day_records for record in records])
    batches: DayBatches = []
    offset = 0
    for day, records in day_records:
        batches.append((day, batch.slice(offset, len(records))))
        offset += len(records)
    return batches


class _ObjectBytes:
    """The file pyarrow writes a Parquet object to: the atomic writer's stream, records counted apart."""

    closed = False

    def __init__(self, writer: AtomicObjectWriter) -> None:
        self._writer = writer
        self.abandoned = False

    def write(self, data: bytes) -> int:
        # After a failure pyarrow may still close its writer (and write a footer): it goes nowhere.
        if not self.abandoned:
            self._writer.write(bytes(data), records=0)
        return len(data)

    def flush(self) -> None:
        return None


class ParquetStream:
    """Writes Arrow rows into one Parquet object through an open :class:`AtomicObjectWriter`."""

    def __init__(self, writer: AtomicObjectWriter, source: Source) -> None:
        self._writer = writer
        self._schema = schema(source)
        self._target = _ObjectBytes(writer)
        self._file = pq.ParquetWriter(
            self._target, self._schema, compression=COMPRESSION, memory_pool=MEMORY_POOL
        )
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Append rows; a row group is written each time :data:`ROW_GROUP_ROWS` rows are waiting."""
        if not batch.num_rows:
            return
        self._pending.append(batch)
        self._rows += batch.num_rows
        self._writer.records += batch.num_rows
        while self._rows >= ROW_GROUP_ROWS:
            self._write_row_group(ROW_GROUP_ROWS)

    def close(self) -> None:
        """Write the last row group and the footer."""
        if self._rows:
            self._write_row_group(self._rows)
        self._file.close()

    def abandon(self) -> None:
        """Stop without writing anything more (the writer discards what was written)."""
        self._target.abandoned = True
        self._pending.clear()
        self._file.close()

    def _write_row_group(self, rows: int) -> None:
        # Contiguous columns: how the rows arrived (customers, days) never shows in the bytes.
        table = pa.Table.from_batches(self._pending, self._schema).combine_chunks(MEMORY_POOL)
        self._file.write_table(table.slice(0, rows), row_group_size=rows)
        rest = table.slice(rows)
        self._pending = rest.to_batches()
        self._rows = rest.num_rows


class ParquetSpool:
    """One day's rows on local disk (an Arrow IPC stream in a nameless temporary file), read back in order."""

    def __init__(self, file: IO[bytes], source: Source) -> None:
        self._file = file
        self._stream = pa.ipc.new_stream(file, schema(source))

    def add(self, batch: pa.RecordBatch) -> None:
        self._stream.write_batch(batch)

    def chunks(self) -> Iterator[pa.RecordBatch]:
        """The rows spooled, batch by batch."""
        self._stream.close()
        self._file.flush()
        self._file.seek(0)
        yield from pa.ipc.open_stream(self._file, memory_pool=MEMORY_POOL)

    def close(self) -> None:
        self._file.close()


def iter_records(file: IO[bytes]) -> Iterator[Record]:
    """The records of a Parquet object: decimals as ``Decimal``, timestamps as UTC datetimes, maps as dicts."""
    for batch in pq.ParquetFile(file).iter_batches():
        for record in batch.to_pylist(maps_as_pydicts="strict"):
            if record.get("extra") is not None:
                record["extra"] = parse_json(record["extra"])
            yield record


__all__ = [
    "COMPRESSION",
    "DECIMAL",
    "ROW_GROUP_ROWS",
    "ParquetSpool",
    "ParquetStream",
    "column_type",
    "iter_records",
    "schema",
    "to_batch",
    "to_day_batches",
]
