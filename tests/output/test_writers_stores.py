"""The atomic writer on GCS and Azure Blob Storage (their emulators), objects small and large.

Objects under ``UPLOAD_BLOCK_SIZE`` go up in one request when the write succeeds. Larger ones are
sent in parts: on GCS a resumable upload, whose object exists only once its last chunk is sent; on
Azure staged blocks, which become the blob only when the block list is committed. A write that
fails before then never sends the last chunk or the commit, so the previous object stays.
"""

from __future__ import annotations

import gc
import gzip

import pytest

from airflow_provider_metronome.output.uris import storage_path
from airflow_provider_metronome.output.writers import UPLOAD_BLOCK_SIZE, AtomicJsonLinesWriter
from tests.support.stores import Store
from tests.support.writing import line, write_then_crash

KEY = "costs/2024-01-05"


def writer(store: Store, key: str) -> AtomicJsonLinesWriter:
    return AtomicJsonLinesWriter(storage_path(store.url(key), store.conn_id), uri=store.url(key))


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@pytest.mark.parametrize("size", [1000, UPLOAD_BLOCK_SIZE + 1], ids=["one_request", "in_parts"])
def test_a_failure_midway_uploads_nothing(store: Store, suffix: str, size: int) -> None:
    key = KEY + suffix
    store.put_bytes(key, b"previous")
    stamp = store.stamp(key)

    with pytest.raises(RuntimeError, match="crash"):
        write_then_crash(writer(store, key), size)
    # A file the writer left open would be closed by the collector now, completing its upload.
    gc.collect()

    assert store.get_bytes(key) == b"previous"
    assert store.stamp(key) == stamp
    assert store.list_names() == [key]


def test_a_failure_midway_of_a_first_write_leaves_no_object(store: Store) -> None:
    key = KEY + ".jsonl"
    with pytest.raises(RuntimeError, match="crash"):
        write_then_crash(writer(store, key), UPLOAD_BLOCK_SIZE + 1)
    gc.collect()

    assert store.list_names() == []
    # Azure keeps the staged blocks of the upload, never committed: not listed, not readable, and
    # dropped by the next write of the blob (or by Azure after a week). GCS shows nothing at all.
    assert store.unfinished_uploads() == ([key] if store.name == "azure" else [])

    with writer(store, key) as target:
        target.write(b"{}\n")
    assert store.get_bytes(key) == b"{}\n"
    assert store.unfinished_uploads() == []


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_an_object_in_parts_is_written_whole_and_reads_back(store: Store, suffix: str) -> None:
    key = KEY + suffix
    lines: list[bytes] = []

    with writer(store, key) as target:
        while target.bytes_written <= UPLOAD_BLOCK_SIZE * 1.5:
            lines.append(line(len(lines)))
            target.write(lines[-1])

    stored = store.get_bytes(key)
    assert target.bytes_written == len(stored) > UPLOAD_BLOCK_SIZE
    assert (gzip.decompress(stored) if suffix.endswith(".gz") else stored) == b"".join(lines)
    # (The project's reader is checked on these stores by the operator tests: reading a large object
    # back through gcsfs takes the GCS emulator over half a minute, for nothing the bytes do not show.)
    assert store.list_names() == [key]
    assert store.unfinished_uploads() == []
