"""Where one run's records go: the task's XCom return value, one object, or one object per UTC day.

The operator runs one loop over the fetch engine's results and hands each customer's objects, grouped
by day, to a sink made for its record format (:func:`open_sink`); the sink owns the rest of the
pipeline (records, encoding, writers) and says what the task returns (:class:`SinkResult`).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import IO, Any, Protocol

from airflow_provider_metronome._compat import AirflowFailException, add_output_lineage
from airflow_provider_metronome.models import JsonNumber, SourceObject
from airflow_provider_metronome.output.encodings import DayLines, to_day_lines
from airflow_provider_metronome.output.records import DayRecords, Record, to_day_records
from airflow_provider_metronome.output.uris import open_output, public_uri, storage_conn_id
from airflow_provider_metronome.output.writers import AtomicJsonLinesWriter
from airflow_provider_metronome.vocabulary import RecordFormat

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

    ``prepare`` turns one customer's objects into what ``add`` takes (records, or encoded lines) in
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


def open_sink(
    record_format: RecordFormat,
    urls: Mapping[dt.date, str] | None,
    *,
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
    writers = {day: _writer(url, conn_id) for day, url in urls.items()}
    if not split_by_day:
        return ObjectSink(record_format, next(iter(writers.values())), log)
    return DaySplitSink(record_format, writers, log, stop_if_killed)


def _writer(url: str, conn_id: str | None) -> AtomicJsonLinesWriter:
    writer = AtomicJsonLinesWriter(
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

    def __init__(self, record_format: RecordFormat, writer: AtomicJsonLinesWriter, log: Any) -> None:
        self.record_format = record_format
        self.writer = writer
        self.log = log
        self.customers = 0

    def __enter__(self) -> ObjectSink:
        self.writer.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.writer.__exit__(exc_type, exc, tb)

    def describe(self) -> str:
        return self.writer.uri

    def prepare(self, customer_id: str, day_objects: DayObjects) -> DayLines:
        return to_day_lines(self.record_format, customer_id, day_objects)

    def add(self, customer_id: str, prepared: DayLines) -> None:
        # The manifest counts customers whose records were written, not those merely asked about.
        if any(lines for _, lines in prepared):
            self.customers += 1
        for _, lines in prepared:
            for line in lines:
                self.writer.write(line)

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
    """One object per UTC day: each day's lines spooled to a local temporary file, then written whole.

    Memory stays flat in customers (lines go to disk as they come) and in days (one open spool file
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
        record_format: RecordFormat,
        writers: Mapping[dt.date, AtomicJsonLinesWriter],
        log: Any,
        stop_if_killed: Callable[[Sequence[dt.date]], None],
    ) -> None:
        self.record_format = record_format
        self.writers = dict(writers)
        self.log = log
        self.stop_if_killed = stop_if_killed
        self.customers: dict[dt.date, int] = dict.fromkeys(self.writers, 0)
        self.all_customers = 0
        self.written: list[dt.date] = []
        self._open = False
        self._spools: dict[dt.date, IO[bytes]] = {}

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

    def prepare(self, customer_id: str, day_objects: DayObjects) -> DayLines:
        return to_day_lines(self.record_format, customer_id, day_objects)

    def add(self, customer_id: str, prepared: DayLines) -> None:
        wrote_any = False
        for day, lines in prepared:
            if not lines:
                continue
            spool = self._spool(day)
            spool.writelines(lines)
            self.customers[day] += 1
            wrote_any = True
        self.all_customers += wrote_any

    def _spool(self, day: dt.date) -> IO[bytes]:
        spool = self._spools.get(day)
        if spool is None:
            if not self._open or day not in self.writers:
                raise RuntimeError(f"DaySplitSink.add() for {day}, outside its with block or window.")
            spool = self._spools[day] = tempfile.TemporaryFile(prefix="metronome-day-")  # noqa: SIM115
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
            with writer:
                if spool is not None:
                    spool.flush()
                    spool.seek(0)
                    # readline, not iteration over a growing list: one line in memory at a time.
                    for line in iter(spool.readline, b""):
                        writer.write(line)
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


def _log_object(log: Any, writer: AtomicJsonLinesWriter) -> None:
    if writer.changed:
        log.info("Wrote %d records (%d bytes) to %s", writer.records, writer.bytes_written, writer.uri)
    else:
        log.info(
            "Left %s as it was: its %d records (%d bytes) did not change",
            writer.uri,
            writer.records,
            writer.bytes_written,
        )
