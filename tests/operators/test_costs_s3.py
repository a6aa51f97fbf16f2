"""MetronomeCostsOperator writing to S3: real tasks against the simulator, S3 served by moto_server.

The S3 endpoint is ``python -m moto.server`` in a child process on 127.0.0.1 (see
``tests/support/s3.py``); the operator reaches it through Airflow's ``aws_default`` connection,
whose extra names the endpoint. What is checked is the behaviour a user sees in the bucket: the
final object, its bytes on re-runs, the previous object after a failed run, and which keys and
multipart uploads are left over.
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("s3fs", reason="s3:// output needs the s3 extra: pip install '.[s3]'")
pytest.importorskip("airflow.providers.amazon", reason="s3:// output needs the s3 extra: pip install '.[s3]'")
pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the test extra)")

from pytest_mock import MockerFixture

from airflow_provider_metronome._compat import AirflowException
from airflow_provider_metronome.exceptions import MetronomeResponseError, MetronomeTransientError
from airflow_provider_metronome.models import parse_json
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.output.reading import iter_output
from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from tests.operators.test_costs_kill import REQUEST_DELAY, later, stopped, task_process, wait_for_requests
from tests.support.s3 import MotoS3, forget_cached_s3_stores, free_port, moto_s3_server
from tests.support.simulator import billable, not_produced_yet

DAY = dt.date(2024, 1, 5)
BUCKET = "metronome-costs-tests"
AWS_CONN_ID = "aws_default"
SUFFIXES = [".jsonl", ".jsonl.gz"]


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoS3]:
    """One moto_server process for the module (startup takes about a second)."""
    with moto_s3_server(bucket=BUCKET) as server:
        yield server


@pytest.fixture
def s3(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    """An empty bucket on moto, with ``aws_default`` pointing at it."""
    moto_server.clear()
    monkeypatch.setenv(f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}", moto_server.connection_json)
    # Anything that missed the connection and fell back to boto3's own credential chain must fail
    # here, on a closed loopback port, instead of reaching out to AWS or the instance metadata service.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    forget_cached_s3_stores()
    yield moto_server
    forget_cached_s3_stores()


# -- helpers ------------------------------------------------------------------------------------------


def operator(**kwargs: Any) -> MetronomeCostsOperator:
    kwargs.setdefault("task_id", "fetch_costs")
    kwargs.setdefault("starting_on", DAY.isoformat())
    kwargs.setdefault("ending_before", (DAY + dt.timedelta(days=3)).isoformat())
    kwargs.setdefault("record_format", "line_items")
    return MetronomeCostsOperator(**kwargs)


def to_s3(s3: MotoS3, suffix: str, **kwargs: Any) -> MetronomeCostsOperator:
    """The operator writing ``costs/{date}<suffix>`` into the moto bucket through ``aws_default``."""
    return operator(output_uri=s3.url(f"costs/{{date}}{suffix}"), output_conn_id=AWS_CONN_ID, **kwargs)


def decoded_lines(data: bytes, suffix: str) -> list[dict[str, Any]]:
    plain = gzip.decompress(data) if suffix.endswith(".gz") else data
    return [parse_json(line) for line in plain.splitlines()]


# -- tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_writes_the_object_and_it_reads_back(
    sim: MetronomeSimulator, s3: MotoS3, tmp_path: Path, suffix: str
) -> None:
    ids = billable(sim)[:6]
    key = f"costs/2024-01-05{suffix}"

    manifest = to_s3(s3, suffix, customer_ids=ids).execute({})

    stored = s3.get_bytes(key)
    assert manifest["uri"] == f"s3://{BUCKET}/{key}"
    assert manifest["bytes"] == len(stored)
    # The project's reader, through the same connection, gives what the bytes hold.
    records = list(iter_output(manifest["uri"], conn_id=AWS_CONN_ID))
    # Customers whose records were written (one without line items in the window does not count).
    assert manifest["customers"] == len({record["customer_id"] for record in records})
    assert records == decoded_lines(stored, suffix)
    assert len(records) == manifest["records"] > 0
    # (A customer without costs in the window has no line items.)
    assert {record["customer_id"] for record in records} <= set(ids)
    if suffix.endswith(".gz"):
        # gzip magic, and a zero timestamp so that re-runs give the same bytes.
        assert (stored[:2], stored[4:8]) == (b"\x1f\x8b", b"\0\0\0\0")

    # The same task writing to a local file gives the same bytes: S3 changes where, not what.
    local = operator(customer_ids=ids, output_uri=f"file://{tmp_path}/{{date}}{suffix}").execute({})
    assert (tmp_path / f"2024-01-05{suffix}").read_bytes() == stored
    assert local["records"] == manifest["records"]

    # Only the object itself is left: the writer uploads straight to the key, never a temporary one.
    assert s3.list_keys() == [key]
    assert s3.list_multipart_uploads() == []


def test_connection_named_in_the_url(sim: MetronomeSimulator, s3: MotoS3) -> None:
    ids = billable(sim)[:2]

    manifest = operator(
        customer_ids=ids, output_uri=f"s3://{AWS_CONN_ID}@{BUCKET}/costs/{{date}}.jsonl"
    ).execute({})

    # The connection part is kept out of the manifest.
    assert manifest["uri"] == f"s3://{BUCKET}/costs/2024-01-05.jsonl"
    assert list(iter_output(manifest["uri"], conn_id=AWS_CONN_ID)) != []
    assert s3.list_keys() == ["costs/2024-01-05.jsonl"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_reruns_write_byte_identical_objects(sim: MetronomeSimulator, s3: MotoS3, suffix: str) -> None:
    key = f"costs/2024-01-05{suffix}"
    kwargs: dict[str, Any] = {"customer_ids": None, "on_customer_error": "skip"}

    first = to_s3(s3, suffix, **kwargs).execute({})
    first_bytes = s3.get_bytes(key)
    # Tag the stored object (same bytes) so that any new upload of the key would show.
    s3.client.put_object(Bucket=BUCKET, Key=key, Body=first_bytes, Metadata={"planted": "yes"})
    second = to_s3(s3, suffix, max_workers=3, **kwargs).execute({})

    assert s3.get_bytes(key) == first_bytes
    # Unchanged bytes are not uploaded again: the stored object is the one planted.
    assert s3.client.head_object(Bucket=BUCKET, Key=key)["Metadata"] == {"planted": "yes"}
    assert first["changed"] is True
    assert second == {**first, "changed": False}
    assert first["records"] > 0
    assert s3.list_keys() == [key]
    assert s3.list_multipart_uploads() == []


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_run_leaves_the_previous_object_intact(
    sim: MetronomeSimulator, s3: MotoS3, suffix: str
) -> None:
    ids = billable(sim)[:8]
    key = f"costs/2024-01-05{suffix}"
    to_s3(s3, suffix, customer_ids=ids).execute({})
    previous = s3.get_bytes(key)
    # The last customer in write order fails for good: the records of the seven before it have
    # already gone to the writer when the error ends the run.
    failing = ids[-1]
    sim.inject(Fault.status(500), path=f"/v1/customers/{failing}/costs", times=None)

    with pytest.raises(MetronomeTransientError, match="HTTP 500"):
        to_s3(s3, suffix, customer_ids=ids, ending_before="2024-01-12").execute({})

    assert len(sim.requests_for(f"/v1/customers/{failing}/costs")) >= 1
    assert s3.get_bytes(key) == previous
    assert list(iter_output(s3.url(key), conn_id=AWS_CONN_ID)) == decoded_lines(previous, suffix)
    # Nothing of the failed run remains: no temporary key and no unfinished multipart upload.
    assert s3.list_keys() == [key]
    assert s3.list_multipart_uploads() == []

    # Once the customer answers again, the next run replaces the object.
    sim.clear_faults()
    manifest = to_s3(s3, suffix, customer_ids=ids, ending_before="2024-01-12").execute({})
    replaced = s3.get_bytes(key)
    assert replaced != previous
    assert manifest["bytes"] == len(replaced)
    assert s3.list_keys() == [key]


def test_failed_first_run_writes_nothing(sim: MetronomeSimulator, s3: MotoS3) -> None:
    ids = billable(sim)[:4]
    sim.inject(Fault.status(500), path=f"/v1/customers/{ids[-1]}/costs", times=None)

    with pytest.raises(MetronomeTransientError, match="HTTP 500"):
        to_s3(s3, ".jsonl.gz", customer_ids=ids).execute({})

    # No object, no temporary key, no unfinished multipart upload.
    assert s3.list_keys() == []
    assert s3.list_multipart_uploads() == []


# -- nothing half-written: wrong answers, missing days, kills -------------------------------------------


@pytest.mark.parametrize(
    "fault", [Fault.duplicate_window(), Fault.out_of_range_window()], ids=["duplicate", "out_of_range"]
)
def test_a_wrong_answer_uploads_nothing(sim: MetronomeSimulator, s3: MotoS3, fault: Fault) -> None:
    ids = billable(sim)[:5]
    key = "costs/2024-01-05.jsonl.gz"
    s3.put_bytes(key, b"previous")
    sim.inject(fault, path=f"/v1/customers/{ids[3]}/costs", times=None)

    with pytest.raises(MetronomeResponseError, match=ids[3]):
        to_s3(s3, ".jsonl.gz", customer_ids=ids).execute({})

    assert s3.get_bytes(key) == b"previous"
    assert s3.list_keys() == [key]
    assert s3.list_multipart_uploads() == []


def test_a_missing_day_uploads_nothing_and_an_accepted_one_is_listed(
    sim: MetronomeSimulator, s3: MotoS3
) -> None:
    ids = billable(sim)[:5]
    key = "costs/2024-01-05.jsonl"
    s3.put_bytes(key, b"previous")
    not_produced_yet(sim, ids, [DAY + dt.timedelta(days=2)])

    with pytest.raises(AirflowException, match="MetronomeCostsSensor"):
        to_s3(s3, ".jsonl", customer_ids=ids).execute({})

    assert s3.get_bytes(key) == b"previous"
    assert s3.list_keys() == [key]
    assert s3.list_multipart_uploads() == []

    manifest = to_s3(s3, ".jsonl", customer_ids=ids, on_missing_days="accept").execute({})
    assert manifest["missing_days"] == {"2024-01-07": ids}
    assert s3.get_bytes(key) != b"previous"


def test_sigkill_of_the_task_leaves_the_key_intact_and_no_listable_debris(
    sim: MetronomeSimulator, s3: MotoS3, airflow_db: Path, tmp_path: Path, mocker: MockerFixture
) -> None:
    ids = billable(sim)[:12]
    key = "costs/2024-01-05.jsonl.gz"
    s3.put_bytes(key, b"previous")
    # What a killed run of an earlier version (temporary key, then copy) could leave beside the key.
    old_temporary = "costs/.2024-01-05.jsonl.gz.tmp-0123456789abcdef"
    s3.put_bytes(old_temporary, b"partial")
    sim.inject(Fault.slow(REQUEST_DELAY), path="/costs", times=None)

    with task_process(airflow_db, tmp_path, ids, s3.url("costs/{date}.jsonl.gz"), AWS_CONN_ID) as process:
        wait_for_requests(sim, process, tmp_path, 3)
        process.kill()
        stopped(process, tmp_path)

    # The upload goes straight to the final key and completes only on success: the killed run left
    # no key and, for an object this small (one PUT at the end), no multipart upload either.
    assert s3.get_bytes(key) == b"previous"
    assert s3.list_keys() == sorted([key, old_temporary])
    assert s3.list_multipart_uploads() == []

    # The next successful run replaces the key and removes the stale temporary key.
    sim.clear_faults()
    later(mocker, hours=2)
    manifest = to_s3(s3, ".jsonl.gz", customer_ids=ids, ending_before="2024-01-06").execute({})
    assert s3.list_keys() == [key]
    assert manifest["bytes"] == len(s3.get_bytes(key))
    assert s3.list_multipart_uploads() == []


# -- Parquet: the same writer, so the same guarantees ----------------------------------------------------


def test_parquet_lands_whole_is_left_alone_unchanged_and_survives_a_failed_run(
    sim: MetronomeSimulator, s3: MotoS3, tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow", reason="Parquet output needs the parquet extra")
    ids = billable(sim)[:6]
    key = "costs/2024-01-05.parquet"

    first = to_s3(s3, ".parquet", customer_ids=ids).execute({})
    stored = s3.get_bytes(key)
    operator(customer_ids=ids, output_uri=f"file://{tmp_path}/{{date}}.parquet").execute({})
    assert (tmp_path / "2024-01-05.parquet").read_bytes() == stored
    assert list(iter_output(first["uri"], conn_id=AWS_CONN_ID)) == list(
        iter_output(tmp_path / "2024-01-05.parquet")
    )
    assert first["records"] == len(list(iter_output(tmp_path / "2024-01-05.parquet"))) > 0

    # A re-run with the same answers uploads nothing: the planted object stays.
    s3.client.put_object(Bucket=BUCKET, Key=key, Body=stored, Metadata={"planted": "yes"})
    assert to_s3(s3, ".parquet", customer_ids=ids).execute({}) == {**first, "changed": False}
    assert s3.client.head_object(Bucket=BUCKET, Key=key)["Metadata"] == {"planted": "yes"}

    # A run failing after some customers were written leaves the object and no upload behind.
    sim.inject(Fault.status(500), path=f"/v1/customers/{ids[-1]}/costs", times=None)
    with pytest.raises(MetronomeTransientError, match="HTTP 500"):
        to_s3(s3, ".parquet", customer_ids=ids, ending_before="2024-01-12").execute({})
    assert s3.get_bytes(key) == stored
    assert s3.list_keys() == [key]
    assert s3.list_multipart_uploads() == []
