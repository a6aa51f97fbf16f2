"""Where one run's records go: the task's XCom return value, one object, or one object per UTC day.

The operator runs one loop over the fetch engine's results and hands each customer's objects, grouped
by day, to a sink made for its record format (:func:`open_sink`); the sink owns the rest of the
pipeline (records, encoding, writers) and says what the task returns (:class:`SinkResult`).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from types import TracebackType
from typing import IO, Any, Protocol

from airflow_provider_metronome._compat import AirflowFailException, add_output_lineage
from airflow_provider_metronome.models import JsonNumber, SourceObject
from airflow_provider_metronome.output.encodings import JsonLinesSpool, JsonLinesStream, to_day_lines
from airflow_provider_metronome.output.records import DayRecords, Record, to_day_records
from airflow_provider_metronome.output.uris import (
    PARQUET_REQUIREMENT,
    check_output_format,
    is_parquet,
    open_output,
    public_uri,
    storage_conn_id,
)
from airflow_provider_metronome.output.writers import AtomicObjectWriter
from airflow_provider_metronome.vocabulary import RecordFormat, Source

DayObjects = Sequence[tuple[dt.date, SourceObject]]


@dataclass(frozen=True)
class SinkResult:
    """What a run leaves: the task's return value, and the manifest when the records went to storage.

    :param return_value: The records (XCom) or the manifest.
    :param manifest: The manifest of the objects written; None when the records are the return value.
    """

    return_value: Any
    manifest: dict[str, Any] | None = None


class RecordSink(Protocol):
    """Receives each customer's objects in order; ``finish`` says what the run leaves.

    ``prepare`` turns one customer's objects into what ``add`` takes (records, encoded lines, or Arrow rows) in
    the sink's record format; the fetch engine runs it in its worker threads.
    """

    def __enter__(self) -> RecordSink: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def describe(self) -> str: ...

    def prepare(self, customer_id: str, day_objects: DayObjects) -> Any: ...

    def add(self, customer_id: str, prepared: Any) -> None: ...

    def finish(self, summary: Mapping[str, Any], facts: Mapping[str, Any]) -> SinkResult:
        """The result; ``summary`` opens the manifest and the run's ``facts`` close it."""
        ...


class ObjectStream(Protocol):
    """Encodes prepared chunks into one open writer's object: ``close`` finishes it, ``abandon`` drops it."""

    def add(self, chunk: Any) -> None: ...

    def close(self) -> None: ...

    def abandon(self) -> None: ...


class DaySpool(Protocol):
    """One day's prepared chunks in a local temporary file, read back in order by ``chunks``."""

    def add(self, chunk: Any) -> None: ...

    def chunks(self) -> Iterable[Any]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ObjectEncoding:
    """How a run's objects are made: prepared chunks (in the fetch engine's threads), written or spooled.

    :param prepare: One customer's objects as ``(day, chunk)`` pairs (encoded lines, or Arrow rows).
    :param stream: The stream that writes chunks into an open writer.
    :param spool: The spool of one day, over a nameless temporary file.
    """

    prepare: Callable[[str, DayObjects], list[tuple[dt.date, Any]]]
    stream: Callable[[AtomicObjectWriter], ObjectStream]
    spool: Callable[[IO[bytes]], DaySpool]


def object_encoding(url: str, record_format: RecordFormat, source: Source) -> ObjectEncoding:
    """JSON Lines, or Parquet for a name ending in ``.parquet`` (checked before any request).

    :raises ValueError: ``raw`` records to Parquet, or Parquet without pyarrow (naming the extra).
    """
    check_output_format(url, record_format)
    if not is_parquet(url):
        return ObjectEncoding(partial(to_day_lines, record_format), JsonLinesStream, JsonLinesSpool)
    try:
        from airflow_provider_metronome.output import parquet
    except ImportError as err:
        raise ValueError(
            f"output_uri {public_uri(url)} is Parquet, which needs pyarrow ({err}): {PARQUET_REQUIREMENT}."
        ) from None
    return ObjectEncoding(
        partial(parquet.to_day_batches, source),
        partial(parquet.ParquetStream, source=source),
        partial(parquet.ParquetSpool, source=source),
    )


@contextmanager
def written_object(writer: AtomicObjectWriter, encoding: ObjectEncoding) -> Iterator[ObjectStream]:
    """The stream of one object, written atomically when the block ends, discarded when it raises."""
    with writer:
        stream = encoding.stream(writer)
        try:
            yield stream
            stream.close()
        except BaseException:
            stream.abandon()
            raise


def open_sink(
    record_format: RecordFormat,
    urls: Mapping[dt.date, str] | None,
    *,
    source: Source,
    conn_id: str | None,
    split_by_day: bool,
    xcom_limit: tuple[int, Callable[[int], str]],
    log: Any,
    stop_if_killed: Callable[[Sequence[dt.date]], None],
) -> RecordSink:
    """The sink of a run, its objects' targets checked before any request.

    :param urls: The rendered ``output_uri`` of each object, keyed by its first day (one per day with
        ``split_by_day``); None for XCom.
    :param conn_id: The storage connection, when the URLs do not name it.
    :param xcom_limit: The largest XCom return value in bytes, and the message for one too big.
    """
    if urls is None:
        return XComSink(record_format, *xcom_limit)
    encoding = object_encoding(next(iter(urls.values())), record_format, source)
    writers = {day: _writer(url, conn_id) for day, url in urls.items()}
    if not split_by_day:
        return ObjectSink(encoding, next(iter(writers.values())), log)
    return DaySplitSink(encoding, writers, log, stop_if_killed)


def _writer(url: str, conn_id: str | None) -> AtomicObjectWriter:
    writer = AtomicObjectWriter(
        open_output(url, conn_id), uri=public_uri(url), conn_id=storage_conn_id(url, conn_id)
    )
    writer.check_target()
    return writer


def plain_json(value: Any) -> Any:
    """``value`` with each exact number as the plain JSON type that holds it exactly, for XCom.

    XCom keeps JSON, whose readers turn numbers into ``int`` or ``float``; a number a float cannot
    hold exactly (more than about 15 significant digits) fails the task, naming it, instead of
    reaching XCom rounded.
    """
    if isinstance(value, dict):
        return {key: plain_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_json(item) for item in value]
    if isinstance(value, JsonNumber):
        if value == value.to_integral_value() and not any(mark in value.text for mark in ".eE"):
            return int(value)
        number = float(value)
        if Decimal(number) != value and Decimal(repr(number)) != value:
            raise AirflowFailException(
                f"Metronome sent the number {value.text}, which XCom (JSON read as floats) cannot hold "
                "exactly: set output_uri to write the records to object storage with every digit kept."
            )
        return number
    return value


class XComSink:
    """Keeps the records for the return value, failing early once they outgrow ``max_bytes`` of JSON.

    :param too_big: Builds the failure message from the size reached.
    """

    def __init__(self, record_format: RecordFormat, max_bytes: int, too_big: Callable[[int], str]) -> None:
        self.record_format = record_format
        self.max_bytes = max_bytes
        self.too_big = too_big
        self.records: list[Record] = []
        # XCom stores json.dumps(records): each record plus ", " (the brackets stand in for the last one).
        self.size = 0

    def __enter__(self) -> XComSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def describe(self) -> str:
        return "XCom"

    def prepare(self, customer_id: str, day_objects: DayObjects) -> DayRecords:
        return [
            (day, [plain_json(record) for record in records])
            for day, records in to_day_records(self.record_format, customer_id, day_objects)
        ]

    def add(self, customer_id: str, prepared: DayRecords) -> None:
        for _, day_records in prepared:
            for record in day_records:
                self.size += len(json.dumps(record)) + 2
                if self.size > self.max_bytes:
                    raise AirflowFailException(self.too_big(self.size))
                self.records.append(record)

    def finish(self, summary: Mapping[str, Any], facts: Mapping[str, Any]) -> SinkResult:
        return SinkResult(self.records)


class ObjectSink:
    """Writes every record into one object, atomically, and returns the run's manifest."""

    def __init__(self, encoding: ObjectEncoding, writer: AtomicObjectWriter, log: Any) -> None:
        self.encoding = encoding
        self.writer = writer
        self.log = log
        self.customers = 0
        self._exit = ExitStack()
        self._stream: ObjectStream | None = None

    def __enter__(self) -> ObjectSink:
        self._stream = self._exit.enter_context(written_object(self.writer, self.encoding))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stream = None
        self._exit.__exit__(exc_type, exc, tb)

    def describe(self) -> str:
        return self.writer.uri

    def prepare(self, customer_id: str, day_objects: DayObjects) -> list[tuple[dt.date, Any]]:
        return self.encoding.prepare(customer_id, day_objects)

    def add(self, customer_id: str, prepared: list[tuple[dt.date, Any]]) -> None:
        if self._stream is None:
            raise RuntimeError("ObjectSink.add() outside its with block.")
        # The manifest counts customers whose records were written, not those merely asked about.
        if any(len(chunk) for _, chunk in prepared):
            self.customers += 1
        for _, chunk in prepared:
            self._stream.add(chunk)

    def finish(self, summary: Mapping[str, Any], facts: Mapping[str, Any]) -> SinkResult:
        writer = self.writer
        # Reported only now that the object is in place: a failed run has no output to trace.
        add_output_lineage(writer.path, writer.uri)
        _log_object(self.log, writer)
        manifest = {
            "uri": writer.uri,
            **summary,
            "customers": self.customers,
            "records": writer.records,
            "bytes": writer.bytes_written,
            "changed": writer.changed,
            "conn_id": writer.conn_id,
            **facts,
        }
        return SinkResult(manifest, manifest)


class DaySplitSink:
    """One object per UTC day: each day's lines (or rows) spooled to a local temporary file, then written whole.

    Memory stays flat in customers (lines or rows go to disk as they come) and in days (one open spool file
    per day). Spool files have no name on disk (``tempfile.TemporaryFile``): a killed run, even with
    SIGKILL, leaves no copy of the billing data behind. Nothing is written until every customer has been fetched and checked; then each day's
    object is written atomically, in day order, through its own writer, which leaves a day whose
    bytes did not change untouched. A failure while writing leaves every day either as it was or
    wholly replaced.

    :param writers: Each day of the window and the writer of its object, in day order.
    :param stop_if_killed: Raises when the task was killed; called before each day is written, with
        the days written so far.
    """

    def __init__(
        self,
        encoding: ObjectEncoding,
        writers: Mapping[dt.date, AtomicObjectWriter],
        log: Any,
        stop_if_killed: Callable[[Sequence[dt.date]], None],
    ) -> None:
        self.encoding = encoding
        self.writers = dict(writers)
        self.log = log
        self.stop_if_killed = stop_if_killed
        self.customers: dict[dt.date, int] = dict.fromkeys(self.writers, 0)
        self.all_customers = 0
        self.written: list[dt.date] = []
        self._open = False
        self._spools: dict[dt.date, DaySpool] = {}

    def __enter__(self) -> DaySplitSink:
        self._open = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self._write_days()
        except BaseException:
            self._log_stopped()
            raise
        else:
            if exc_type is not None:
                self._log_stopped()
        finally:
            self._open = False
            for spool in self._spools.values():
                spool.close()
            self._spools.clear()

    def describe(self) -> str:
        uris = [writer.uri for writer in self.writers.values()]
        return uris[0] if len(uris) == 1 else f"{len(uris)} daily objects ({uris[0]} ... {uris[-1]})"

    def prepare(self, customer_id: str, day_objects: DayObjects) -> list[tuple[dt.date, Any]]:
        return self.encoding.prepare(customer_id, day_objects)

    def add(self, customer_id: str, prepared: list[tuple[dt.date, Any]]) -> None:
        wrote_any = False
        for day, chunk in prepared:
            if not len(chunk):
                continue
            self._spool(day).add(chunk)
            self.customers[day] += 1
            wrote_any = True
        self.all_customers += wrote_any

    def _spool(self, day: dt.date) -> DaySpool:
        spool = self._spools.get(day)
        if spool is None:
            if not self._open or day not in self.writers:
                raise RuntimeError(f"DaySplitSink.add() for {day}, outside its with block or window.")
            file = tempfile.TemporaryFile(prefix="metronome-day-")  # noqa: SIM115
            spool = self._spools[day] = self.encoding.spool(file)
        return spool

    def _log_stopped(self) -> None:
        """The last word of a run stopped on the way (killed, failed): which days it had written."""
        if self.written:
            days = ", ".join(map(str, self.written))
            self.log.warning(
                "Stopped after writing %d day(s), each whole: %s; the others are as they were.",
                len(self.written),
                days,
            )
        else:
            self.log.warning("Stopped before writing any day; every day is as it was.")

    def _write_days(self) -> None:
        for day, writer in self.writers.items():
            self.stop_if_killed(self.written)
            spool = self._spools.get(day)
            with written_object(writer, self.encoding) as stream:
                for chunk in spool.chunks() if spool is not None else ():
                    stream.add(chunk)
            self.written.append(day)
            _log_object(self.log, writer)

    def finish(self, summary: Mapping[str, Any], facts: Mapping[str, Any]) -> SinkResult:
        objects = [
            {
                "date": str(day),
                "uri": writer.uri,
                "customers": self.customers[day],
                "records": writer.records,
                "bytes": writer.bytes_written,
                "changed": writer.changed,
                "conn_id": writer.conn_id,
            }
            for day, writer in self.writers.items()
        ]
        for writer in self.writers.values():
            add_output_lineage(writer.path, writer.uri)
        changed = [str(day) for day, writer in self.writers.items() if writer.changed]
        self.log.info("%d of %d day(s) changed: %s", len(changed), len(objects), ", ".join(changed) or "none")
        manifest = {
            **summary,
            "objects": objects,
            "changed_days": changed,
            "customers": self.all_customers,
            "records": sum(entry["records"] for entry in objects),
            "bytes": sum(entry["bytes"] for entry in objects),
            **facts,
        }
        return SinkResult(manifest, manifest)


def _log_object(log: Any, writer: AtomicObjectWriter) -> None:
    if writer.changed:
        log.info("Wrote %d records (%d bytes) to %s", writer.records, writer.bytes_written, writer.uri)
    else:
        log.info(
            "Left %s as it was: its %d records (%d bytes) did not change",
            writer.uri,
            writer.records,
            writer.bytes_written,
        )
