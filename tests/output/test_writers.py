"""Atomic writers on local files."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from airflow_provider_metronome.output import writers
from airflow_provider_metronome.output.encodings import encode_record
from airflow_provider_metronome.output.reading import iter_output
from airflow_provider_metronome.output.uris import storage_path
from airflow_provider_metronome.output.writers import AtomicJsonLinesWriter

CUSTOMER = "4e1c9b58-0a4c-4b8e-9d0e-5f0e2d7c1a3b"


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
        writers, "_utcnow", return_value=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    )
    with pytest.raises(RuntimeError), local(target):
        raise RuntimeError("crash")
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, young.name, other.name])

    # Later, the young one has become stale too.
    with local(target) as writer:
        writer.write(b"{}\n")
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, other.name])
