"""The output format (JSON Lines), output URIs, and the atomic writer on local files (S3: test_storage_s3)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from airflow_provider_metronome.utils import storage
from airflow_provider_metronome.utils.storage import (
    AtomicJsonLinesWriter,
    check_output_uri,
    encode_record,
    iter_output,
    open_output,
    storage_path,
)

CUSTOMER = "4e1c9b58-0a4c-4b8e-9d0e-5f0e2d7c1a3b"


def test_encode_record_is_compact_utf8_ordered_and_one_line() -> None:
    record = {"customer_id": CUSTOMER, "name": "Café \u2603", "cost": 1.5, "zero": 0, "none": None}

    line = encode_record(record)

    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert line == (
        b'{"customer_id":"' + CUSTOMER.encode() + b'","name":"Caf\xc3\xa9 \xe2\x98\x83",'
        b'"cost":1.5,"zero":0,"none":null}\n'
    )
    assert json.loads(line) == record
    assert encode_record(dict(record)) == line


def test_encode_record_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(ValueError, match="JSON"):
        encode_record({"cost": float("nan")})


# -- output URIs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "file:///data/costs/{date}.jsonl",
        "file://local_files@/data/costs/{date}.jsonl",
        "s3://bucket/costs/{date}.jsonl.gz",
        "gs://my_conn@bucket/{date}.jsonl.gz",
        "abfs://container/{date}.jsonl",
    ],
)
def test_check_output_uri_accepts_the_stores_users_write_to(uri: str) -> None:
    check_output_uri(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("foo://bucket/{date}.jsonl", r"unknown scheme foo://"),
        ("file://relative-dir/x.jsonl", r"relative file:// path .*'file:///relative-dir/x\.jsonl'"),
        ("data/{date}.jsonl", r"has no scheme"),
    ],
)
def test_check_output_uri_refuses_what_cannot_be_written(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_output_uri(uri)


@pytest.mark.parametrize("module", ["s3fs", "airflow.providers.amazon"])
def test_open_output_names_the_package_a_missing_store_needs(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a machine without it: importing the module fails.
    monkeypatch.setitem(sys.modules, module, None)

    with pytest.raises(
        ValueError, match=r"s3://bucket/k\.jsonl needs .* pip install 'airflow-provider-metronome\[s3\]'"
    ):
        open_output("s3://aws_default@bucket/k.jsonl")


# -- the writer on a local file system ------------------------------------------------------------------


def write_then_crash(writer: AtomicJsonLinesWriter, lines: int) -> None:
    """Write ``lines`` records, then fail inside the writer's block, as a run failing midway does."""
    with writer:
        for index in range(lines):
            writer.write(encode_record({"customer_id": CUSTOMER, "index": index}))
        raise RuntimeError("crash")


def local(path: Path) -> AtomicJsonLinesWriter:
    return AtomicJsonLinesWriter(storage_path(f"file://{path}"), uri=f"file://{path}")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_failure_midway_leaves_the_previous_file_and_no_temporary(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"costs{suffix}"
    target.write_bytes(b"previous")

    with pytest.raises(RuntimeError, match="crash"):
        write_then_crash(local(target), lines=10_000)

    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == [target.name]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_written_lines_read_back_and_rewrites_are_byte_identical(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / "day" / f"costs{suffix}"
    records = [{"customer_id": CUSTOMER, "index": index} for index in range(100)]
    stored: list[bytes] = []
    for _ in range(2):
        with local(target) as writer:
            for record in records:
                writer.write(encode_record(record))
        stored.append(target.read_bytes())

    assert stored[0] == stored[1]
    assert writer.bytes_written == len(stored[0])
    assert list(iter_output(target)) == records
    assert list(iter_output(f"file://{target}")) == records


def test_only_stale_temporaries_of_the_same_target_are_removed(tmp_path: Path, mocker: MockerFixture) -> None:
    target = tmp_path / "costs.jsonl"
    stale = tmp_path / ".costs.jsonl.tmp-aaaa"
    young = tmp_path / ".costs.jsonl.tmp-bbbb"
    other = tmp_path / ".other.jsonl.tmp-cccc"
    for path in (stale, young, other):
        path.write_bytes(b"partial")
    # Written two hours ago, as by a run killed then (a real file time, not a mocked one).
    two_hours_ago = time.time() - 2 * 3600
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(other, (two_hours_ago, two_hours_ago))

    with local(target) as writer:
        writer.write(b"{}\n")

    assert sorted(os.listdir(tmp_path)) == sorted([target.name, young.name, other.name])

    # A failed run removes nothing but its own temporary.
    mocker.patch.object(
        storage, "_utcnow", return_value=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    )
    with pytest.raises(RuntimeError), local(target):
        raise RuntimeError("crash")
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, young.name, other.name])

    # Later, the young one has become stale too.
    with local(target) as writer:
        writer.write(b"{}\n")
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, other.name])
