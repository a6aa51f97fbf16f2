"""Where the operator's records go: ``output_uri`` placeholders and the atomic JSON Lines writer.

A URI may hold ``str.format`` placeholders filled from the resolved window (the date of the data,
never of the run): ``{date}`` (first day), ``{start_date}``, ``{end_date}`` (last day, inclusive),
``{map_index}``, ``{source}`` and ``{customer_id}``. The dates are ``datetime.date`` objects, so a
format spec works too: ``{date:%Y/%m/%d}``.

:class:`AtomicJsonLinesWriter` writes to a hidden temporary sibling and moves it into place only
when everything was written, so a reader never sees a partial object and a failed run leaves the
previous object untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import logging
import posixpath
import string
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

from airflow_provider_metronome._compat import ObjectStoragePath, add_output_lineage
from airflow_provider_metronome.window import DayWindow

PLACEHOLDERS: tuple[str, ...] = ("date", "start_date", "end_date", "map_index", "source", "customer_id")
# Local paths (and only they) need their directory created and are renamed rather than copied.
LOCAL_PROTOCOLS = frozenset({"file", "local"})
GZIP_LEVEL = 6  # zlib's default: level 9 costs far more CPU for a few percent.
log = logging.getLogger(__name__)
_SAMPLE_VALUES: dict[str, Any] = {
    "date": dt.date(2024, 1, 1),
    "start_date": dt.date(2024, 1, 1),
    "end_date": dt.date(2024, 1, 1),
    "map_index": 0,
    "source": "costs",
    "customer_id": "00000000-0000-4000-8000-000000000000",
}


def placeholders_in(template: str) -> set[str]:
    """The placeholder names used in ``template``; raises ValueError on a malformed or unknown one."""
    names: set[str] = set()
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as err:
        raise ValueError(
            f"output_uri={template!r} has unbalanced braces ({err}); placeholders look like {{date}}."
        ) from None
    for field in fields:
        if field not in PLACEHOLDERS:
            raise ValueError(
                f"output_uri={template!r} uses the unknown placeholder {{{field}}}; the placeholders are "
                f"{', '.join('{' + name + '}' for name in PLACEHOLDERS)} (dates take a format spec such as "
                "{date:%Y/%m/%d})."
            )
        names.add(field)
    return names


def validate_output_uri(template: str) -> None:
    """Check a (Jinja-rendered) ``output_uri`` before any request: scheme, object name, placeholders."""
    if not isinstance(template, str) or not template.strip():
        raise ValueError(
            f"output_uri={template!r} must be a non-empty URL such as 's3://bucket/costs/{{date}}.jsonl'."
        )
    placeholders_in(template)
    try:
        sample = template.format(**_SAMPLE_VALUES)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"output_uri={template!r} has a placeholder format spec that does not apply: {err}."
        ) from None
    parts = urlsplit(sample)
    if not parts.scheme or "://" not in sample:
        raise ValueError(
            f"output_uri={template!r} has no scheme; write a URL such as 'file:///data/costs/{{date}}.jsonl' "
            "or 's3://bucket/costs/{date}.jsonl.gz'."
        )
    if sample.endswith("/") or not parts.path.rstrip("/"):
        raise ValueError(
            f"output_uri={template!r} names a folder; it must name the object to write, for example "
            "'.../costs-{date}.jsonl'."
        )


def render_output_uri(
    template: str, window: DayWindow, *, map_index: int, source: str, customer_id: str | None
) -> str:
    """Fill ``template``'s placeholders from the resolved window and task (see the module docstring)."""
    validate_output_uri(template)
    if "customer_id" in placeholders_in(template) and customer_id is None:
        raise ValueError(
            f"output_uri={template!r} uses {{customer_id}}, which needs exactly one customer per task; "
            "pass a single id in customer_ids (for example with .expand(customer_ids=[...])) or use {map_index}."
        )
    values: Mapping[str, Any] = {
        "date": window.first_day,
        "start_date": window.first_day,
        "end_date": window.end.subtract(days=1).date(),
        "map_index": map_index,
        "source": source,
        "customer_id": customer_id or "",
    }
    return template.format(**values)


def storage_path(url: str, conn_id: str | None = None) -> ObjectStoragePath:
    """The object at ``url``; ``conn_id`` names its storage connection when the URL does not."""
    # Passed only when set: a conn_id=None argument would override one given in the URL.
    return ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)


def public_uri(url: str) -> str:
    """``url`` without the ``conn_id@`` part: the object's address for manifests, lineage and Assets."""
    parts = urlsplit(url)
    _, at, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=host).geturl() if at else url


class _CountingWriter:
    """Passes bytes on to the store's file and counts them (after compression, when gzipped)."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self.count = 0

    def write(self, data: Any) -> int:
        written = self._target.write(data)
        size = len(data) if written is None else written
        self.count += size
        return size

    def flush(self) -> None:
        self._target.flush()


class AtomicJsonLinesWriter:
    """Write lines to ``path`` all at once or not at all; gzip when the name ends in ``.gz``.

    Use as a context manager: lines go to a hidden sibling ``.<name>.tmp-<hex>`` (ignored by Spark,
    Hive, Athena and most loaders), which is moved over ``path`` when the block ends without error,
    and removed when it raises. gzip output has no timestamp or file name in its header, so the
    same lines always give the same bytes.

    :param path: The object to (re)place.
    :param lineage_uri: The address reported to Airflow's lineage as the task's output.
    """

    def __init__(self, path: ObjectStoragePath, *, lineage_uri: str) -> None:
        self.path = path
        self.lineage_uri = lineage_uri
        # Store paths as strings: the store's file system does all the work, and the final object is
        # the only one lineage should hear about.
        self.temp_key = posixpath.join(posixpath.dirname(path.path), f".{path.name}.tmp-{uuid.uuid4().hex}")
        self.records = 0
        self._raw: IO[bytes] | None = None
        self._counter: _CountingWriter | None = None
        self._stream: gzip.GzipFile | _CountingWriter | None = None

    @property
    def bytes_written(self) -> int:
        """Bytes of the stored object (compressed size for ``.gz``)."""
        return self._counter.count if self._counter is not None else 0

    @property
    def is_local(self) -> bool:
        return self.path.protocol in LOCAL_PROTOCOLS or not self.path.protocol

    def check_target(self) -> None:
        """Fail before any work if the target is an existing folder (a move would land inside it)."""
        if self.is_local and self.path.fs.isdir(self.path.path):
            raise ValueError(
                f"output_uri {self.lineage_uri} is an existing folder; name a file inside it instead."
            )

    def __enter__(self) -> AtomicJsonLinesWriter:
        fs = self.path.fs
        if self.is_local:
            fs.makedirs(posixpath.dirname(self.path.path), exist_ok=True)
        self._raw = fs.open(self.temp_key, "wb")
        self._counter = _CountingWriter(self._raw)
        if self.path.name.endswith(".gz"):
            self._stream = gzip.GzipFile(
                filename="", mode="wb", fileobj=self._counter, compresslevel=GZIP_LEVEL, mtime=0
            )
        else:
            self._stream = self._counter
        return self

    def write(self, line: bytes) -> None:
        """Append one encoded line."""
        if self._stream is None:
            raise RuntimeError("AtomicJsonLinesWriter.write() outside its with block.")
        self._stream.write(line)
        self.records += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._close()
            self.path.fs.mv(self.temp_key, self.path.path)
        except BaseException:
            self._discard()
            raise
        add_output_lineage(self.path, self.lineage_uri)

    def _close(self) -> None:
        stream, raw = self._stream, self._raw
        self._stream = self._raw = None
        try:
            if isinstance(stream, gzip.GzipFile):
                stream.close()
        finally:
            if raw is not None:
                raw.close()

    def _discard(self) -> None:
        """Drop the temporary object; never mask the error that got us here."""
        with contextlib.suppress(Exception):
            self._close()
        try:
            fs = self.path.fs
            if fs.exists(self.temp_key):
                fs.rm(self.temp_key)
        except Exception:
            log.warning(
                "Could not remove the temporary object %s; delete it by hand.",
                self.temp_key,
            )


__all__ = [
    "PLACEHOLDERS",
    "AtomicJsonLinesWriter",
    "placeholders_in",
    "public_uri",
    "render_output_uri",
    "storage_path",
    "validate_output_uri",
]
