"""Where the operator's records go and how they come back: the one home of the output format.

Records are JSON Lines (:func:`encode_record`), gzipped when the object's name ends in ``.gz``;
:func:`iter_output` and :func:`summarize_output` read a written object back, for downstream tasks
and checks.

A URI may hold ``str.format`` placeholders filled from the resolved window (the date of the data,
never of the run): ``{date}`` (first day), ``{start_date}``, ``{end_date}`` (last day, inclusive),
``{map_index}``, ``{source}`` and ``{customer_id}``. The dates are ``datetime.date`` objects, so a
format spec works too: ``{date:%Y/%m/%d}``.

:class:`AtomicJsonLinesWriter` makes an object appear whole or not at all: a direct upload on object
stores (discarded on failure), temp-then-rename on file systems. :func:`check_output_uri` refuses
unknown schemes and relative ``file://`` paths (when the DAG is parsed, for a literal URI) and
:func:`open_output` refuses a store whose file system is not installed, naming the package, before
the operator sends any request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import gzip
import hashlib
import importlib
import logging
import os
import posixpath
import string
import uuid
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import fsspec

from airflow_provider_metronome._compat import ObjectStoragePath
from airflow_provider_metronome.models import SourceObject, dump_json, parse_json, refuse_non_finite
from airflow_provider_metronome.utils.records import Record, record_amounts, to_day_records
from airflow_provider_metronome.utils.validation import RecordFormat
from airflow_provider_metronome.utils.window import DayWindow

PLACEHOLDERS: tuple[str, ...] = ("date", "start_date", "end_date", "map_index", "source", "customer_id")
# Local paths (and only they) need their directory created and are renamed rather than copied.
LOCAL_PROTOCOLS = frozenset({"file", "local"})
S3_PROTOCOLS = frozenset({"s3", "s3a", "s3n"})
# Stores where an upload becomes visible only once complete: written in place, aborted on failure.
DIRECT_UPLOAD_PROTOCOLS = S3_PROTOCOLS | {"gs", "gcs", "az", "abfs", "abfss"}
# Bytes a direct upload buffers before sending a part: S3's smallest part (GCS chunks are a multiple
# of 256 KiB), since the memory an upload holds is a few times this; below it an object is one PUT.
UPLOAD_BLOCK_SIZE = 5 * 2**20
# Temporaries of a target younger than this may belong to a run still writing; older ones were left
# by killed runs and the next successful run of the target removes them.
STALE_TEMPORARY_AGE = dt.timedelta(hours=1)
# What each store needs installed: the modules Airflow's ObjectStoragePath imports for it, and the
# pip requirement that brings them.
STORE_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    **dict.fromkeys(S3_PROTOCOLS, (("airflow.providers.amazon", "s3fs"), "'airflow-provider-metronome[s3]'")),
    **dict.fromkeys(
        ("gs", "gcs"), (("airflow.providers.google", "gcsfs"), "apache-airflow-providers-google gcsfs")
    ),
    **dict.fromkeys(
        ("az", "abfs", "abfss"),
        (("airflow.providers.microsoft.azure", "adlfs"), "apache-airflow-providers-microsoft-azure adlfs"),
    ),
}
# Bytes read at a time when comparing a new object with the stored one.
COMPARE_CHUNK_SIZE = 2**20
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


def check_output_uri(template: str) -> None:
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
    _check_scheme(template, parts.scheme)
    # A connection named in the URL (file://conn_id@/data/...) is not a host.
    if parts.scheme in LOCAL_PROTOCOLS and parts.netloc.rpartition("@")[2] not in ("", "localhost"):
        raise ValueError(
            f"output_uri={template!r} is a relative file:// path (it would be written under whatever "
            "folder the worker runs in); write an absolute one with three slashes, such as "
            f"'file:///{parts.netloc}{parts.path}'."
        )
    if sample.endswith("/") or not parts.path.rstrip("/"):
        raise ValueError(
            f"output_uri={template!r} names a folder; it must name the object to write, for example "
            "'.../costs-{date}.jsonl'."
        )


def _check_scheme(template: str, scheme: str) -> None:
    """Refuse a scheme no file system serves; whether its package is installed is checked at run time."""
    if scheme in LOCAL_PROTOCOLS or scheme in STORE_PACKAGES or scheme in fsspec.available_protocols():
        return
    raise ValueError(
        f"output_uri={template!r} uses the unknown scheme {scheme}://; write to file:///..., s3://..., "
        "gs://... or abfs://... (any store Airflow's ObjectStoragePath serves)."
    )


def open_output(url: str, conn_id: str | None = None) -> ObjectStoragePath:
    """The object at ``url``, once its store's file system is known to be there (no request is sent).

    :raises ValueError: naming the package to install, when the store's file system is missing.
    """
    path = storage_path(url, conn_id)
    scheme = path.protocol
    modules, requirement = STORE_PACKAGES.get(scheme, ((), ""))
    hint = (
        f"pip install {requirement}"
        if requirement
        else f"install the Airflow provider that serves {scheme}://"
    )
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(
                f"output_uri {public_uri(url)} needs the {scheme}:// file system, which is not installed "
                f"({err}): {hint}."
            ) from None
    try:
        _ = path.fs
    except (ImportError, ValueError) as err:
        raise ValueError(f"output_uri {public_uri(url)} cannot be written here ({err}): {hint}.") from None
    return path


def check_split_uri(template: str) -> None:
    """``split_by_day`` writes one object per day: the (rendered) ``output_uri`` must hold ``{date}``."""
    if "date" not in placeholders_in(template):
        raise ValueError(
            f"output_uri={template!r} has no {{date}}, so split_by_day=True would write every day to "
            "the same object: add it, for example '.../costs/date={date}/costs.jsonl.gz'."
        )


def render_output_uri(
    template: str, window: DayWindow, *, map_index: int, source: str, customer_id: str | None
) -> str:
    """Fill ``template``'s placeholders from the resolved window and task (see the module docstring)."""
    check_output_uri(template)
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


def storage_conn_id(url: str, conn_id: str | None = None) -> str | None:
    """The storage connection an object is read and written with: the URL's ``conn_id@``, else ``conn_id``."""
    user, at, _ = urlsplit(url).netloc.rpartition("@")
    return user if at and user else conn_id


def public_uri(url: str) -> str:
    """``url`` without the ``conn_id@`` part: the object's address for manifests, lineage and Assets."""
    parts = urlsplit(url)
    _, at, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=host).geturl() if at else url


class _CountingWriter:
    """Passes bytes on to the store's file, counting and hashing them (after compression, when gzipped).

    The hash is what tells an unchanged object from a changed one without keeping its bytes.
    """

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self.count = 0
        self.digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        written = self._target.write(data)
        size = len(data) if written is None else written
        self.count += size
        self.digest.update(data)
        return size

    def flush(self) -> None:
        self._target.flush()


def _utcnow() -> dt.datetime:
    """The current time, for the age of stale temporaries (one place for tests to move the clock)."""
    return dt.datetime.now(dt.timezone.utc)


class AtomicJsonLinesWriter:
    """Write lines to ``path`` all at once or not at all; gzip when the name ends in ``.gz``.

    Use as a context manager. How the object appears whole depends on the store:

    - **Object stores whose uploads become visible only when complete** (``s3://``, ``gs://``,
      ``abfs://``...; :data:`DIRECT_UPLOAD_PROTOCOLS`): lines are uploaded straight to the final key
      (one PUT for objects under :data:`UPLOAD_BLOCK_SIZE`, else a multipart upload). When the block
      raises, the upload is discarded (a multipart upload is aborted) and never completed, so a
      failed run uploads nothing and the previous object stays as it was.
    - **File systems** (``file://`` and others): lines go to a hidden sibling
      ``.<name>.tmp-<hex>`` (ignored by Spark, Hive, Athena and most loaders), moved over ``path``
      when the block ends without error and removed when it raises.

    After a successful write, temporaries of the same target that a killed run left behind
    (``.<name>.tmp-*`` siblings, and on S3 unfinished multipart uploads of the key) are removed once
    older than :data:`STALE_TEMPORARY_AGE`; younger ones may belong to a run still writing.

    gzip output has no timestamp or file name in its header, so the same lines always give the
    same bytes.

    With ``keep_unchanged`` (the default), an object whose new bytes equal the stored object's is
    left untouched: the new upload or temporary is discarded instead of completed, and
    :attr:`changed` is False. Telling them apart costs one size lookup, and reading the stored
    object back only when the sizes match.

    :param path: The object to (re)place.
    :param uri: The object's public address (no ``conn_id@``), for messages and manifests.
    :param keep_unchanged: Leave a byte-identical stored object as it is (no write, no new version).
    :param conn_id: The storage connection the object is written with, for manifests (None: the store's
        default credentials).
    """

    def __init__(
        self, path: ObjectStoragePath, *, uri: str, keep_unchanged: bool = True, conn_id: str | None = None
    ) -> None:
        self.path = path
        self.uri = uri
        self.conn_id = conn_id
        self.keep_unchanged = keep_unchanged
        self.changed = True
        self.direct = path.protocol in DIRECT_UPLOAD_PROTOCOLS
        # Store paths as strings: the store's file system does all the work.
        self.temp_prefix = posixpath.join(posixpath.dirname(path.path), f".{path.name}.tmp-")
        self.temp_key = None if self.direct else f"{self.temp_prefix}{uuid.uuid4().hex}"
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
            raise ValueError(f"output_uri {self.uri} is an existing folder; name a file inside it instead.")

    def __enter__(self) -> AtomicJsonLinesWriter:
        fs = self.path.fs
        if self.is_local:
            fs.makedirs(posixpath.dirname(self.path.path), exist_ok=True)
        if self.temp_key is None:
            self._raw = fs.open(self.path.path, "wb", block_size=UPLOAD_BLOCK_SIZE)
        else:
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
            self.discard()
            return
        try:
            self._close_stream()
            if self.keep_unchanged and self._same_as_stored():
                # Nothing new: the stored object (and its modification time, version, events) stays.
                self.changed = False
                self.discard()
            else:
                raw, self._raw = self._raw, None
                if raw is not None:
                    raw.close()  # completes the upload (direct) or the temporary file
                if self.temp_key is not None:
                    self.path.fs.mv(self.temp_key, self.path.path)
        except BaseException:
            self.discard()
            raise
        self._remove_stale_temporaries()

    def _same_as_stored(self) -> bool:
        """Whether the stored object holds exactly the bytes written (size first, then a hash)."""
        counter = self._counter
        if counter is None:
            return False
        fs = self.path.fs
        try:
            size = fs.info(self.path.path).get("size")
        except FileNotFoundError:
            return False
        if size != counter.count:
            return False
        stored = hashlib.sha256()
        with fs.open(self.path.path, "rb") as existing:
            for chunk in iter(lambda: existing.read(COMPARE_CHUNK_SIZE), b""):
                stored.update(chunk)
        return stored.digest() == counter.digest.digest()

    def discard(self) -> None:
        """Drop everything written so far, leaving the previous object as it was; safe to call twice.

        Never raises: it runs on the way out of an error, which it must not mask.
        """
        with contextlib.suppress(Exception):
            self._close_stream()
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                if self.direct:
                    _abandon_upload(raw)
                else:
                    raw.close()
        if self.temp_key is not None:
            try:
                fs = self.path.fs
                if fs.exists(self.temp_key):
                    fs.rm(self.temp_key)
            except Exception:
                log.warning("Could not remove the temporary object %s; delete it by hand.", self.temp_key)

    def _close_stream(self) -> None:
        """Finish the gzip stream (its trailer goes to the store's file); the file itself stays open."""
        stream, self._stream = self._stream, None
        if isinstance(stream, gzip.GzipFile):
            stream.close()

    def _remove_stale_temporaries(self) -> None:
        """Remove what killed runs left for this target; a failure here never fails the written run."""
        cutoff = _utcnow() - STALE_TEMPORARY_AGE
        try:
            removed = _remove_stale_siblings(self.path.fs, self.temp_prefix, cutoff)
            removed += _abort_stale_uploads(self.path, cutoff)
        except Exception as err:
            log.warning("Could not look for temporaries left beside %s by killed runs: %s", self.uri, err)
            return
        if removed:
            log.info("Removed %d temporary object(s) left beside %s by killed runs", removed, self.uri)


def _abandon_upload(raw: IO[bytes]) -> None:
    """Throw away a direct upload so that nothing of it is ever completed.

    fsspec's ``discard`` aborts the multipart upload (s3fs) or resumable session (gcsfs) begun so
    far. The file must then count as closed: closing it, or letting the garbage collector close it,
    would upload what it buffered (s3fs sends small objects with one PUT on close).
    """
    discard = getattr(raw, "discard", None)
    if callable(discard):
        discard()
    raw.closed = True  # type: ignore[misc]


def _modified(fs: Any, key: str, info: Mapping[str, Any]) -> dt.datetime | None:
    """When ``key`` was last written (UTC), from its listing entry or the store; None if unknown."""
    moment: Any = info.get("LastModified") or info.get("mtime") or info.get("updated")
    if moment is None:
        try:
            moment = fs.modified(key)
        except (NotImplementedError, OSError, KeyError):
            return None
    return _as_utc(moment)


def _as_utc(moment: Any) -> dt.datetime | None:
    """A store's timestamp (epoch seconds, ISO text or a datetime) as an aware UTC datetime, or None."""
    if isinstance(moment, (int, float)):
        return dt.datetime.fromtimestamp(moment, dt.timezone.utc)
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if not isinstance(moment, dt.datetime):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def _remove_stale_siblings(fs: Any, temp_prefix: str, cutoff: dt.datetime) -> int:
    """Remove ``<temp_prefix>*`` siblings last written before ``cutoff``; returns how many."""
    parent = posixpath.dirname(temp_prefix)
    try:
        entries = fs.ls(parent, detail=True)
    except FileNotFoundError:
        return 0
    removed = 0
    for info in entries:
        key = str(info["name"]).rstrip("/")
        if info.get("type") == "directory" or not posixpath.basename(key).startswith(
            posixpath.basename(temp_prefix)
        ):
            continue
        modified = _modified(fs, key, info)
        if modified is not None and modified < cutoff:
            fs.rm(key)
            removed += 1
    return removed


def _abort_stale_uploads(path: ObjectStoragePath, cutoff: dt.datetime) -> int:
    """On S3, abort unfinished multipart uploads of ``path``'s key begun before ``cutoff``.

    A run killed with SIGKILL while uploading a large object leaves one; it is invisible to
    listings but billed until aborted (the bucket's lifecycle rule for incomplete multipart uploads
    catches the ones no later run of the same key cleans).
    """
    fs = path.fs
    if path.protocol not in S3_PROTOCOLS or not callable(getattr(fs, "call_s3", None)):
        return 0
    bucket, key, _ = fs.split_path(path.path)
    answer = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
    stale = [
        upload["UploadId"]
        for upload in answer.get("Uploads", [])
        # An upload of unknown age counts as young: it may be a run still writing.
        if upload.get("Key") == key and (_as_utc(upload.get("Initiated")) or _utcnow()) < cutoff
    ]
    for upload_id in stale:
        fs.abort_mpu(bucket, key, upload_id)
    return len(stale)


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


def iter_output(uri: str | os.PathLike[str], *, conn_id: str | None = None) -> Iterator[Record]:
    """Read back the records of an object the operator wrote (JSON Lines, gzipped when ``.gz``).

    :param uri: The manifest's ``uri`` (an ObjectStoragePath URL, read as is: no percent-decoding),
        or a local path.
    :param conn_id: The storage connection, when the URL does not name it.
    """
    if isinstance(uri, os.PathLike):
        uri = f"file://{os.path.abspath(os.fspath(uri))}"
    path = storage_path(uri, conn_id)
    with path.open("rb") as raw:
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


__all__ = [
    "DIRECT_UPLOAD_PROTOCOLS",
    "PLACEHOLDERS",
    "STALE_TEMPORARY_AGE",
    "AtomicJsonLinesWriter",
    "DayLines",
    "check_output_uri",
    "check_split_uri",
    "encode_record",
    "iter_output",
    "open_output",
    "placeholders_in",
    "public_uri",
    "render_output_uri",
    "storage_conn_id",
    "storage_path",
    "summarize_output",
    "to_day_lines",
]
