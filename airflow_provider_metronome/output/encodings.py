"""How records become bytes: JSON Lines, one compact line per record, numbers as Metronome sent them.

The one encoder of both record formats; gzip is the writer's (:mod:`~airflow_provider_metronome.output.writers`).
:class:`JsonLinesStream` and :class:`JsonLinesSpool` are the JSON Lines side of what the sinks
write and spool (the Parquet side is in :mod:`~airflow_provider_metronome.output.parquet`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import IO

from airflow_provider_metronome.models import SourceObject, dump_json, refuse_non_finite
from airflow_provider_metronome.output.records import Record, to_day_records
from airflow_provider_metronome.output.writers import AtomicObjectWriter
from airflow_provider_metronome.vocabulary import RecordFormat

DayLines = list[tuple[dt.date, list[bytes]]]
"""One customer's encoded lines grouped by the UTC day of their object, in day order."""
# Line and paragraph separators that some JSON Lines readers (JavaScript's, Python's str.splitlines)
# take for the end of a line: written as escapes, so every reader sees one record a line.
_LINE_BREAKING = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def encode_record(record: Record) -> bytes:
    """One JSON Lines line: compact JSON, keys in the record's order, UTF-8, ending with a newline.

    Numbers are written with the digits Metronome sent (:func:`~airflow_provider_metronome.models.dump_json`);
    U+2028, U+2029 and U+0085 are escaped; a NaN or infinite float is refused.
    """
    refuse_non_finite(record)
    return _encode_line(record)


def _encode_line(record: Record) -> bytes:
    """:func:`encode_record` of a record made from a validated answer, which holds no float at all."""
    line = dump_json(record)
    # In valid JSON these bytes occur only inside strings, where the escape means the same character.
    for raw, escaped in _LINE_BREAKING:
        if raw in line:
            line = line.replace(raw, escaped)
    return line + b"\n"


def to_day_lines(
    record_format: RecordFormat, customer_id: str, day_objects: Sequence[tuple[dt.date, SourceObject]]
) -> DayLines:
    """One customer's day-ordered objects as encoded lines of ``record_format``, grouped by day."""
    return [
        (day, [_encode_line(record) for record in records])
        for day, records in to_day_records(record_format, customer_id, day_objects)
    ]


class JsonLinesStream:
    """Writes encoded lines into one object through an open :class:`AtomicObjectWriter`."""

    def __init__(self, writer: AtomicObjectWriter) -> None:
        self._writer = writer

    def add(self, lines: Sequence[bytes]) -> None:
        for line in lines:
            self._writer.write(line)

    def close(self) -> None:
        return None

    def abandon(self) -> None:
        return None


class JsonLinesSpool:
    """One day's lines on local disk, read back one line at a time."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def add(self, lines: Sequence[bytes]) -> None:
        self._file.writelines(lines)

    def chunks(self) -> Iterator[list[bytes]]:
        """The lines spooled, one a chunk: readline, not a list, so one line is in memory at a time."""
        self._file.flush()
        self._file.seek(0)
        for line in iter(self._file.readline, b""):
            yield [line]

    def close(self) -> None:
        self._file.close()


__all__ = ["JsonLinesSpool", "JsonLinesStream", "encode_record", "to_day_lines"]
