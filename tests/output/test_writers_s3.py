"""The atomic writer on S3 (moto_server over a real socket): objects large enough for multipart uploads.

Objects under ``UPLOAD_BLOCK_SIZE`` go up with one PUT when the write succeeds; larger ones as a
multipart upload, which a failed write aborts and a killed one leaves unfinished (invisible to
listings) until the next successful write of the key aborts it once stale, or the bucket's
lifecycle rule does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

pytest.importorskip("s3fs", reason="s3:// output needs the s3 extra: pip install '.[s3]'")
pytest.importorskip("airflow.providers.amazon", reason="s3:// output needs the s3 extra: pip install '.[s3]'")
pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the test extra)")

from airflow_provider_metronome.output import writers
from airflow_provider_metronome.output.reading import iter_output
from airflow_provider_metronome.output.uris import storage_path
from airflow_provider_metronome.output.writers import UPLOAD_BLOCK_SIZE, AtomicJsonLinesWriter
from tests.operators.test_costs_s3 import AWS_CONN_ID, moto_server, s3  # noqa: F401 (fixtures)
from tests.support.s3 import MotoS3
from tests.support.writing import line, write_then_crash

REPO = Path(__file__).resolve().parents[2]
KEY = "costs/2024-01-05.jsonl"
KILL_DEADLINE = 120.0


def writer(server: MotoS3, key: str) -> AtomicJsonLinesWriter:
    return AtomicJsonLinesWriter(storage_path(server.url(key), AWS_CONN_ID), uri=server.url(key))


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@pytest.mark.parametrize("size", [1000, UPLOAD_BLOCK_SIZE + 1], ids=["one_put", "multipart"])
def test_a_failure_midway_uploads_nothing(s3: MotoS3, suffix: str, size: int) -> None:  # noqa: F811
    key = KEY + suffix
    s3.put_bytes(key, b"previous")

    with pytest.raises(RuntimeError, match="crash"):
        write_then_crash(writer(s3, key), size)

    assert s3.get_bytes(key) == b"previous"
    assert s3.list_keys() == [key]
    assert s3.list_multipart_uploads() == []


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_multipart_object_is_written_whole_and_reads_back(s3: MotoS3, suffix: str) -> None:  # noqa: F811
    key = KEY + suffix
    lines: list[bytes] = []

    with writer(s3, key) as target:
        while target.bytes_written <= UPLOAD_BLOCK_SIZE * 1.5:
            lines.append(line(len(lines)))
            target.write(lines[-1])

    stored = s3.get_bytes(key)
    assert target.bytes_written == len(stored) > UPLOAD_BLOCK_SIZE
    assert (gzip.decompress(stored) if suffix.endswith(".gz") else stored) == b"".join(lines)
    assert sum(1 for _ in iter_output(s3.url(key), conn_id=AWS_CONN_ID)) == len(lines)
    assert s3.list_keys() == [key]
    assert s3.list_multipart_uploads() == []


CHILD = textwrap.dedent(
    """
    import os, sys
    from airflow_provider_metronome.output.writers import UPLOAD_BLOCK_SIZE, AtomicJsonLinesWriter
    from airflow_provider_metronome.output.uris import storage_path

    url = sys.argv[1]
    with AtomicJsonLinesWriter(storage_path(url, "aws_default"), uri=url) as writer:
        index = 0
        # Past one block: the first part is uploaded, the upload is still open.
        while writer.bytes_written <= UPLOAD_BLOCK_SIZE:
            writer.write(b'{"index":%d,"noise":"%s"}\\n' % (index, os.urandom(500).hex().encode()))
            index += 1
        sys.stdin.read()  # wait here to be killed
    """
)


@contextlib.contextmanager
def writer_process(s3: MotoS3, key: str) -> Iterator[subprocess.Popen[bytes]]:  # noqa: F811
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, s3.url(key)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdin is not None:
            process.stdin.close()


def test_sigkill_mid_upload_leaves_the_key_intact_and_the_next_write_aborts_the_upload(
    s3: MotoS3,  # noqa: F811
    mocker: MockerFixture,
) -> None:
    s3.put_bytes(KEY, b"previous")

    with writer_process(s3, KEY) as process:
        deadline = time.monotonic() + KILL_DEADLINE
        while not s3.list_multipart_uploads():
            assert process.poll() is None, f"the writer exited with {process.returncode}"
            assert time.monotonic() < deadline, "the writer did not start its multipart upload in time"
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)
        process.kill()
        process.wait()

    # The key is untouched and nothing is listable; the unfinished upload is the one thing left, the
    # case the bucket's lifecycle rule for incomplete multipart uploads exists for.
    assert s3.get_bytes(KEY) == b"previous"
    assert s3.list_keys() == [KEY]
    assert [upload["Key"] for upload in s3.list_multipart_uploads()] == [KEY]

    # Once it is older than STALE_TEMPORARY_AGE, the next successful write of the key aborts it.
    # (Younger uploads are left alone, as they may still be running; moto reports a fixed 2010
    # start time for every upload, so that half of the rule is shown on local files only.)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    mocker.patch.object(writers, "_utcnow", return_value=later)
    with writer(s3, KEY) as target:
        target.write(b"{}\n")
    assert s3.list_multipart_uploads() == []
    assert s3.list_keys() == [KEY]
    assert s3.get_bytes(KEY) == b"{}\n"
