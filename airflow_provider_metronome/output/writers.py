"""Atomic object writers: an object appears whole or not at all, and is left alone when unchanged.

:class:`AtomicObjectWriter` writes a direct upload on object stores (discarded on failure) and
temp-then-rename on file systems; gzip when the name ends in ``.gz``. It takes encoded bytes of any
format: JSON Lines, or Parquet (:mod:`~airflow_provider_metronome.output.parquet`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import logging
import posixpath
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any

from airflow_provider_metronome._compat import ObjectStoragePath
from airflow_provider_metronome.output.uris import (
    DIRECT_UPLOAD_PROTOCOLS,
    LOCAL_PROTOCOLS,
    S3_PROTOCOLS,
)

# Bytes a direct upload buffers before sending a part: S3's smallest part (GCS chunks are a multiple
# of 256 KiB), since the memory an upload holds is a few times this; below it an object is one PUT.
UPLOAD_BLOCK_SIZE = 5 * 2**20
# Temporaries of a target younger than this may belong to a run still writing; older ones were left
# by killed runs and the next successful run of the target removes them.
STALE_TEMPORARY_AGE = dt.timedelta(hours=1)
# Bytes read at a time when comparing a new object with the stored one: small, since it adds to
# the peak memory of a run; reads from object storage are buffered by fsspec anyway.
COMPARE_CHUNK_SIZE = 2**16
GZIP_LEVEL = 6  # zlib's default: level 9 costs far more CPU for a few percent.
log = logging.getLogger(__name__)


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


class AtomicObjectWriter:
    """Write bytes to ``path`` all at once or not at all; gzip when the name ends in ``.gz``.

    Use as a context manager. How the object appears whole depends on the store:

    - **Object stores whose uploads become visible only when complete** (``s3://``, ``gs://``,
      ``abfs://``...; :data:`DIRECT_UPLOAD_PROTOCOLS`): bytes are uploaded straight to the final key
      (one request for objects under :data:`UPLOAD_BLOCK_SIZE`, else an upload in parts: an S3
      multipart upload, a GCS resumable upload, Azure staged blocks). When the block raises, the
      upload is discarded and never completed (the multipart upload aborted, the resumable session
      cancelled, the block list never committed), so a failed run uploads nothing and the previous
      object stays as it was. Azure keeps the staged blocks of such an upload, unreadable and
      unlisted, until the next write of the blob or for a week.
    - **File systems** (``file://`` and others): bytes go to a hidden sibling
      ``.<name>.tmp-<hex>`` (ignored by Spark, Hive, Athena and most loaders), moved over ``path``
      when the block ends without error and removed when it raises.

    After a successful write, temporaries of the same target that a killed run left behind
    (``.<name>.tmp-*`` siblings, and on S3 unfinished multipart uploads of the key) are removed once
    older than :data:`STALE_TEMPORARY_AGE`; younger ones may belong to a run still writing.

    gzip output has no timestamp or file name in its header, so the same lines always give the
    same bytes (Parquet's encoder, too, gives the same bytes for the same records).

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

    def __enter__(self) -> AtomicObjectWriter:
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

    def write(self, data: bytes, records: int = 1) -> None:
        """Append encoded bytes that hold ``records`` records (one JSON Lines line by default)."""
        if self._stream is None:
            raise RuntimeError("AtomicObjectWriter.write() outside its with block.")
        self._stream.write(data)
        self.records += records

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


# Its name from before it wrote Parquet too, still imported by users' code.
AtomicJsonLinesWriter = AtomicObjectWriter


def _abandon_upload(raw: IO[bytes]) -> None:
    """Throw away a direct upload so that nothing of it is ever completed.

    fsspec's ``discard`` aborts the multipart upload (s3fs) or resumable session (gcsfs) begun so
    far; adlfs has none, and its staged blocks stay uncommitted. The file must then count as
    closed, even when the discard fails: closing it, or letting the garbage collector close it,
    would upload what it buffered (s3fs sends small objects with one PUT on close) or finish the
    upload (gcsfs sends the last chunk, adlfs commits the block list).
    """
    discard = getattr(raw, "discard", None)
    try:
        if callable(discard):
            discard()
    finally:
        # Even when the discard itself fails (an emulator without the cancel, a dropped connection):
        # otherwise the garbage collector closes the file later, completing the upload of a failed run.
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


__all__ = [
    "COMPARE_CHUNK_SIZE",
    "GZIP_LEVEL",
    "STALE_TEMPORARY_AGE",
    "UPLOAD_BLOCK_SIZE",
    "AtomicJsonLinesWriter",
    "AtomicObjectWriter",
]
