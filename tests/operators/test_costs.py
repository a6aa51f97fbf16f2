"""MetronomeCostsOperator against the simulator over real HTTP: outputs, failures, concurrency, memory."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re
import subprocess
import sys
import time
import tracemalloc
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from airflow_provider_metronome import _compat
from airflow_provider_metronome._compat import AirflowFailException
from airflow_provider_metronome.engine.fetch import RETRIES_PER_CUSTOMER
from airflow_provider_metronome.exceptions import (
    MetronomeAuthenticationError,
    MetronomeClientError,
    MetronomeTransientError,
)
from airflow_provider_metronome.hooks.retry import RetryPolicy
from airflow_provider_metronome.models import CostWindow, InvoiceBreakdown
from airflow_provider_metronome.operators.costs import (
    MetronomeCostsOperator,
    MetronomeCustomerLink,
)
from airflow_provider_metronome.output.encodings import encode_record
from airflow_provider_metronome.output.reading import summarize_output
from airflow_provider_metronome.output.records import to_records
from airflow_provider_metronome.output.sinks import plain_json
from airflow_provider_metronome.output.uris import check_output_uri, public_uri, render_output_uri
from airflow_provider_metronome.output.writers import AtomicJsonLinesWriter
from airflow_provider_metronome.testing import DEFAULT_TOKEN, Fault, MetronomeSimulator
from airflow_provider_metronome.validation import check_customer_ids
from airflow_provider_metronome.window import DayWindow, WindowError
from tests.support.simulator import billable

DAY = dt.date(2024, 1, 5)
UNKNOWN_CUSTOMER = "00000000-0000-4000-8000-0000000000ff"


@pytest.fixture
def no_retry_wait(mocker: MockerFixture) -> None:
    mocker.patch.object(RetryPolicy, "sleep")


def operator(**kwargs: Any) -> MetronomeCostsOperator:
    kwargs.setdefault("task_id", "fetch_costs")
    kwargs.setdefault("starting_on", DAY.isoformat())
    kwargs.setdefault("ending_before", (DAY + dt.timedelta(days=1)).isoformat())
    return MetronomeCostsOperator(**kwargs)


def days(start: dt.date, count: int) -> list[dt.date]:
    return [start + dt.timedelta(days=offset) for offset in range(count)]


def expected_records(
    sim: MetronomeSimulator, ids: list[str], source: str, record_format: str, count: int = 1
) -> list[dict[str, Any]]:
    """What the operator must produce, built from the simulator's own data."""
    records: list[dict[str, Any]] = []
    for customer_id in sorted(ids):
        objects: list[CostWindow | InvoiceBreakdown]
        if source == "costs":
            objects = [CostWindow.model_validate(sim.costs_for(customer_id, day)) for day in days(DAY, count)]
        else:
            answers = sim.breakdowns_for(customer_id, DAY, DAY + dt.timedelta(days=count))
            objects = [InvoiceBreakdown.model_validate(answer) for answer in answers]
        records.extend(to_records(record_format, customer_id, objects))  # type: ignore[arg-type]
    # As a JSON reader (XCom, json.loads of a line) sees them.
    return plain_json(records)  # type: ignore[no-any-return]


def read_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return [json.loads(line) for line in data.splitlines()]


def entries(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden ones included."""
    return sorted(os.listdir(folder))


# -- construction and render-time validation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "usage"}, r"source='usage' must be one of 'costs', 'invoice_breakdowns'"),
        ({"record_format": "csv"}, r"record_format='csv' must be one of 'raw', 'line_items'"),
        ({"max_workers": 0}, r"max_workers=0 must be an integer of at least 1"),
        ({"max_workers": True}, r"max_workers=True must be an integer"),
        ({"max_workers": "8"}, r"max_workers='8' must be an integer"),
        ({"requests_per_second": 0}, r"requests_per_second=0 must be a positive number"),
        ({"requests_per_second": -2.5}, r"requests_per_second=-2.5 must be a positive number"),
        ({"on_customer_error": "ignore"}, r"on_customer_error='ignore' must be one of 'fail', 'skip'"),
        ({"max_xcom_bytes": 0}, r"max_xcom_bytes=0 must be an integer of at least 1"),
        ({"customer_ids": "acme-corp"}, r"customer_id='acme-corp' is not a Metronome customer id"),
        ({"customer_ids": ["d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc", "x"]}, r"customer_id='x' is not"),
        ({"customer_ids": 42}, r"customer_ids must be a customer id, a list of ids or None, not int"),
        ({"output_uri": "file:///data/{day}.jsonl"}, r"unknown placeholder \{day\}; the placeholders are"),
        ({"output_uri": "file:///data/{date.year}.jsonl"}, r"unknown placeholder \{date.year\}"),
        ({"output_uri": "file:///data/{}.jsonl"}, r"unknown placeholder \{\}"),
        ({"output_uri": "file:///data/{date.jsonl"}, r"unbalanced braces"),
        ({"output_uri": "file:///data/{map_index:%Y}.jsonl"}, r"format spec that does not apply"),
        ({"output_uri": "/data/costs.jsonl"}, r"has no scheme; write a URL such as 'file:///data"),
        ({"output_uri": "s3://bucket/costs/"}, r"names a folder; it must name the object"),
        ({"output_uri": ""}, r"must be a non-empty URL"),
        ({"do_xcom_push": False}, r"do_xcom_push=False would throw away"),
        ({"ending_before": None}, r"Pass both starting_on and ending_before, or neither"),
        ({"starting_on": "2024-01-05T06:00:00Z"}, r"does not start at midnight UTC"),
        ({"starting_on": "2024-01-06"}, r"must be before ending_before"),
        ({"starting_on": "yesterday"}, r"not a valid RFC 3339 timestamp"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        operator(**kwargs)


def test_templated_arguments_wait_for_render_time() -> None:
    op = operator(
        customer_ids=["{{ params.customer }}", "d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc"],
        output_uri="{{ var.value.base }}/{date}.jsonl",
        starting_on="{{ ds }}",
        ending_before="{{ macros.ds_add(ds, 1) }}",
    )

    assert op.template_fields == ("customer_ids", "output_uri", "starting_on", "ending_before")
    assert op.output_uri == "{{ var.value.base }}/{date}.jsonl"


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("customer_ids", "acme-corp", ValueError, r"customer_id='acme-corp' is not a Metronome"),
        ("customer_ids", "  ", ValueError, r"customer_ids rendered to an empty string"),
        ("customer_ids", "[1, 2", ValueError, r"looks like a list but is not one"),
        ("output_uri", "{when}", ValueError, r"unknown placeholder \{when\}"),
        ("output_uri", "{customer_id}", ValueError, r"\{customer_id\}, which needs exactly one"),
        ("starting_on", "2024-01-05T00:00:00+01:00", WindowError, r"does not start at midnight UTC"),
        ("ending_before", "", WindowError, r"Pass both starting_on and ending_before"),
    ],
)
def test_bad_rendered_values_fail_before_any_request(
    sim: MetronomeSimulator, field: str, value: str, error: type[Exception], message: str
) -> None:
    template = "file:///tmp/{{ params.value }}.jsonl" if field == "output_uri" else "{{ params.value }}"
    op = operator(**{"customer_ids": sim.active_customer_ids[:2], field: template})
    context: Any = {"params": {"value": value}}
    op.render_template_fields(context)

    with pytest.raises(error, match=message):
        op.execute(context)

    assert sim.requests == []


def test_existing_folder_as_target_fails_before_any_request(sim: MetronomeSimulator, tmp_path: Path) -> None:
    (tmp_path / "2024-01-05").mkdir()
    op = operator(customer_ids=billable(sim)[:1], output_uri=f"file://{tmp_path}/{{date}}")

    with pytest.raises(ValueError, match="is an existing folder; name a file inside it"):
        op.execute({})

    assert sim.requests == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ([], []),
        ("D7ABD0CD-4AE9-4DB7-8676-E986A4EBD8DC", ["d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc"]),
        (
            "f728b4fa-4248-4e3a-8a5d-2f346baa9455, d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc,",
            ["d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc", "f728b4fa-4248-4e3a-8a5d-2f346baa9455"],
        ),
        (
            "['f728b4fa-4248-4e3a-8a5d-2f346baa9455', 'd7abd0cd-4ae9-4db7-8676-e986a4ebd8dc']",
            ["d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc", "f728b4fa-4248-4e3a-8a5d-2f346baa9455"],
        ),
        (
            '["d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc", "d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc"]',
            ["d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc"],
        ),
        ({uuid.UUID("d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc")}, ["d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc"]),
    ],
)
def test_customer_ids_forms(value: Any, expected: list[str] | None) -> None:
    assert check_customer_ids(value) == expected


def test_customer_link_names_the_one_customer() -> None:
    assert MetronomeCustomerLink().name == "Metronome customer"
    assert MetronomeCustomerLink().xcom_key == "metronome_customer_url"
    assert isinstance(MetronomeCostsOperator.operator_extra_links[0], MetronomeCustomerLink)


# -- output_uri placeholders ------------------------------------------------------------------------


def test_placeholders_are_filled_from_the_data_window_not_the_run() -> None:
    window = DayWindow.of("2024-12-30", "2025-01-02")

    url = render_output_uri(
        "s3://lake/{source}/{date:%Y/%m/%d}/{start_date}_{end_date}/part-{map_index:03d}-{customer_id}.jsonl",
        window,
        map_index=7,
        source="invoice_breakdowns",
        customer_id="d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc",
    )

    assert url == (
        "s3://lake/invoice_breakdowns/2024/12/30/2024-12-30_2025-01-01/"
        "part-007-d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc.jsonl"
    )


def test_connection_part_is_left_out_of_the_public_uri() -> None:
    check_output_uri("gs://my_conn@bucket/{date}.jsonl.gz")

    assert public_uri("s3://aws_prod@bucket/k/{date}.jsonl") == "s3://bucket/k/{date}.jsonl"
    assert public_uri("file:///data/x.jsonl") == "file:///data/x.jsonl"


# -- XCom mode -----------------------------------------------------------------------------------------


def test_xcom_mode_returns_the_records_sorted_by_customer_then_window(sim: MetronomeSimulator) -> None:
    ids = billable(sim)[:5]
    # Unsorted, repeated, upper-case: the operator normalizes them.
    given = [ids[3].upper(), ids[0], ids[4], ids[1], ids[2], ids[0]]

    records = operator(customer_ids=given, ending_before="2024-01-08").execute({})

    assert records == expected_records(sim, ids, "costs", "raw", count=3)
    assert [(r["customer_id"], r["start_timestamp"]) for r in records] == sorted(
        (r["customer_id"], r["start_timestamp"]) for r in records
    )
    assert json.loads(json.dumps(records)) == records


def test_xcom_guard_counts_what_airflow_stores(sim: MetronomeSimulator) -> None:
    ids = billable(sim)[:4]
    # Airflow stores an XCom value as json.dumps(value) with the default separators.
    stored_size = len(json.dumps(expected_records(sim, ids, "costs", "line_items")))

    at_limit = operator(customer_ids=ids, record_format="line_items", max_xcom_bytes=stored_size)
    assert len(json.dumps(at_limit.execute({}))) == stored_size

    over = operator(customer_ids=ids, record_format="line_items", max_xcom_bytes=stored_size - 1)
    with pytest.raises(AirflowFailException, match=r"outgrew max_xcom_bytes=\d+.*set output_uri") as raised:
        over.execute({})
    assert "'s3://my-bucket/metronome/costs/{date}.jsonl.gz'" in str(raised.value)


def test_xcom_guard_stops_reading_customers_early(sim: MetronomeSimulator) -> None:
    ids = billable(sim)
    sizes = [len(json.dumps(record)) + 2 for record in expected_records(sim, ids, "costs", "raw")]
    limit = sum(sizes[:3])
    op = operator(customer_ids=ids, max_workers=1, max_xcom_bytes=limit)

    with pytest.raises(AirflowFailException, match=f"max_xcom_bytes={limit}"):
        op.execute({})

    # The fourth customer broke the limit; one worker reads at most two customers ahead.
    assert len(sim.requests_for("/costs")) <= 4 + 2 < len(ids)


# -- object storage output -----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["costs", "invoice_breakdowns"])
@pytest.mark.parametrize("record_format", ["raw", "line_items"])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_file_output(
    sim: MetronomeSimulator, tmp_path: Path, source: str, record_format: str, suffix: str
) -> None:
    ids = billable(sim)[:6]
    op = operator(
        customer_ids=ids,
        source=source,
        record_format=record_format,
        ending_before="2024-01-07",
        output_uri=f"file://{tmp_path}/{{source}}/{{date}}{suffix}",
    )

    manifest = op.execute({})

    path = tmp_path / source / f"2024-01-05{suffix}"
    expected = expected_records(sim, ids, source, record_format, count=2)
    assert read_lines(path) == expected
    stored = path.read_bytes()
    if suffix.endswith(".gz"):
        # gzip magic, and a zero timestamp so that re-runs give the same bytes.
        assert (stored[:2], stored[4:8]) == (b"\x1f\x8b", b"\0\0\0\0")
    plain = gzip.decompress(stored) if suffix.endswith(".gz") else stored
    assert plain == b"".join(encode_record(record) for record in expected)
    assert manifest == {
        "uri": f"file://{tmp_path}/{source}/2024-01-05{suffix}",
        "source": source,
        "record_format": record_format,
        "window": {"starting_on": "2024-01-05T00:00:00Z", "ending_before": "2024-01-07T00:00:00Z"},
        # Customers whose records were written: one without line items in the window does not count.
        "customers": len({record["customer_id"] for record in expected}),
        "records": len(expected),
        "bytes": path.stat().st_size,
        "changed": True,
        "conn_id": None,
        "missing_days": {},
        "not_billed": {},
        "skipped": [],
    }
    assert entries(path.parent) == [path.name]


def test_summaries_agree_across_sources_and_formats(sim: MetronomeSimulator, tmp_path: Path) -> None:
    ids = billable(sim)[:8]
    summaries = []
    for source in ("costs", "invoice_breakdowns"):
        for record_format in ("raw", "line_items"):
            manifest = operator(
                customer_ids=ids,
                source=source,
                record_format=record_format,
                output_uri=f"file://{tmp_path}/{source}-{record_format}.jsonl.gz",
            ).execute({})
            summary = summarize_output(manifest["uri"])
            assert summary["records"] == manifest["records"]
            assert summary["customers"] <= len(ids)
            summaries.append(summary["totals"])

    expected: dict[str, Decimal] = {}
    for customer_id in ids:
        for credit_type in sim.costs_for(customer_id, DAY)["credit_types"].values():
            expected[credit_type["name"]] = expected.get(credit_type["name"], Decimal(0)) + Decimal(
                str(credit_type["cost"])
            )
    assert summaries[0] == dict(sorted(expected.items()))
    assert all(totals == summaries[0] for totals in summaries), summaries
    # A local path works as well as the manifest's URI.
    assert summarize_output(tmp_path / "costs-raw.jsonl.gz")["totals"] == summaries[0]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_reruns_write_byte_identical_objects(sim: MetronomeSimulator, tmp_path: Path, suffix: str) -> None:
    kwargs = {
        "customer_ids": None,
        "on_customer_error": "skip",
        "record_format": "line_items",
        "output_uri": f"file://{tmp_path}/costs-{{date}}{suffix}",
    }
    path = tmp_path / f"costs-2024-01-05{suffix}"
    first = operator(**kwargs).execute({})
    first_bytes, first_stat = path.read_bytes(), path.stat()

    second = operator(max_workers=3, **kwargs).execute({})

    # The same bytes: the stored object is left as it was, not replaced by a copy.
    assert path.read_bytes() == first_bytes
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (first_stat.st_ino, first_stat.st_mtime_ns)
    assert first["changed"] is True
    assert second == {**first, "changed": False}
    assert entries(tmp_path) == [f"costs-2024-01-05{suffix}"]


def test_rerun_replaces_the_object_of_its_day(sim: MetronomeSimulator, tmp_path: Path) -> None:
    target = tmp_path / "2024-01-05.jsonl"
    target.write_bytes(b'{"stale": true}\n' * 1000)
    ids = billable(sim)[:2]

    manifest = operator(customer_ids=ids, output_uri=f"file://{tmp_path}/{{date}}.jsonl").execute({})

    assert read_lines(target) == expected_records(sim, ids, "costs", "raw")
    assert manifest["changed"] is True


def test_empty_customer_list_writes_an_empty_object(sim: MetronomeSimulator, tmp_path: Path) -> None:
    manifest = operator(customer_ids=[], output_uri=f"file://{tmp_path}/{{date}}.jsonl.gz").execute({})

    assert gzip.decompress((tmp_path / "2024-01-05.jsonl.gz").read_bytes()) == b""
    assert (manifest["customers"], manifest["records"]) == (0, 0)
    assert sim.requests == []


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_crash_midway_leaves_the_previous_object_and_no_partial_one(
    sim: MetronomeSimulator, tmp_path: Path, mocker: MockerFixture, suffix: str
) -> None:
    target = tmp_path / f"2024-01-05{suffix}"
    target.write_bytes(b"the previous, complete object")
    seen_while_writing: list[tuple[str, int]] = []
    real_write = AtomicJsonLinesWriter.write

    def write_then_crash(writer: AtomicJsonLinesWriter, line: bytes) -> None:
        if len(seen_while_writing) < 1000:
            seen_while_writing.append(("", 0))
            real_write(writer, line)
            return
        temporary = [name for name in entries(tmp_path) if name != target.name]
        seen_while_writing[:] = [(name, (tmp_path / name).stat().st_size) for name in temporary]
        raise OSError("No space left on device")

    mocker.patch.object(AtomicJsonLinesWriter, "write", autospec=True, side_effect=write_then_crash)
    op = operator(
        customer_ids=billable(sim),
        record_format="line_items",
        ending_before="2024-01-15",
        output_uri=f"file://{tmp_path}/{{date}}{suffix}",
    )

    with pytest.raises(OSError, match="No space left on device"):
        op.execute({})

    # The records so far went to a hidden sibling, never to the target...
    [(temporary, size)] = seen_while_writing
    assert temporary.startswith(f".{target.name}.tmp-")
    if suffix == ".jsonl":  # gzip holds this much in its own buffers
        assert size > 0
    # ...which is gone, while the previous object is untouched.
    assert target.read_bytes() == b"the previous, complete object"
    assert entries(tmp_path) == [target.name]


def test_customer_error_in_fail_mode_writes_nothing(sim: MetronomeSimulator, tmp_path: Path) -> None:
    op = operator(customer_ids=None, output_uri=f"file://{tmp_path}/{{date}}.jsonl")

    with pytest.raises(MetronomeClientError, match=r"HTTP 400.*UNIQUE-type billable metric") as raised:
        op.execute({})

    assert raised.value.status_code == 400
    assert entries(tmp_path) == []


def test_skip_mode_skips_customers_answering_4xx_and_lists_them(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    ids = [*billable(sim)[:3], *sim.unique_metric_customer_ids, UNKNOWN_CUSTOMER]
    op = operator(customer_ids=ids, on_customer_error="skip", output_uri=f"file://{tmp_path}/{{date}}.jsonl")

    manifest = op.execute({})

    assert manifest["customers"] == 3
    assert sorted(manifest["skipped"], key=lambda skip: skip["customer_id"]) == sorted(
        [
            *(
                {
                    "customer_id": customer_id,
                    "status_code": 400,
                    "message": "Costs are not supported for customers whose plan includes a UNIQUE-type "
                    "billable metric",
                }
                for customer_id in sim.unique_metric_customer_ids
            ),
            {"customer_id": UNKNOWN_CUSTOMER, "status_code": 404, "message": "Customer not found"},
        ],
        key=lambda skip: skip["customer_id"],
    )
    assert read_lines(tmp_path / "2024-01-05.jsonl") == expected_records(
        sim, billable(sim)[:3], "costs", "raw"
    )


def test_skip_mode_still_fails_on_errors_that_outlast_the_retries(
    sim: MetronomeSimulator, tmp_path: Path, no_retry_wait: None
) -> None:
    ids = billable(sim)[:6]
    sim.inject(Fault.status(503), path=f"/v1/customers/{ids[3]}/costs", times=None)
    op = operator(customer_ids=ids, on_customer_error="skip", output_uri=f"file://{tmp_path}/{{date}}.jsonl")

    with pytest.raises(MetronomeTransientError, match="HTTP 503"):
        op.execute({})

    # Metronome's SDK policy, the first attempt and two retries, for each of the engine's tries.
    assert len(sim.requests_for(f"/v1/customers/{ids[3]}/costs")) == 3 * (1 + RETRIES_PER_CUSTOMER)
    assert entries(tmp_path) == []


def test_skip_mode_still_fails_on_authentication_errors(sim: MetronomeSimulator, tmp_path: Path) -> None:
    ids = billable(sim)[:4]
    sim.inject(Fault.status(403, message="Forbidden"), path=f"/v1/customers/{ids[1]}/costs", times=None)
    op = operator(customer_ids=ids, on_customer_error="skip", output_uri=f"file://{tmp_path}/{{date}}.jsonl")

    with pytest.raises(MetronomeAuthenticationError, match="HTTP 403"):
        op.execute({})

    assert entries(tmp_path) == []


def test_retries_are_the_hooks(sim: MetronomeSimulator, no_retry_wait: None) -> None:
    ids = billable(sim)[:3]
    sim.inject(Fault.status(429, headers={"retry-after": "1"}), path=f"/v1/customers/{ids[1]}/costs", times=1)

    records = operator(customer_ids=ids).execute({})

    assert records == expected_records(sim, ids, "costs", "raw")
    assert len(sim.requests_for(f"/v1/customers/{ids[1]}/costs")) == 2


def test_all_customers_mode_lists_every_active_customer_across_pages(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    sim.set_customer_count(230)
    op = operator(customer_ids=None, on_customer_error="skip", output_uri=f"file://{tmp_path}/{{date}}.jsonl")

    manifest = op.execute({})

    listings = [request for request in sim.requests if request.path == "/v1/customers"]
    # Three pages of active customers, then the one page of archived ones (all archived long before).
    assert [request.query["only_archived"] for request in listings] == [["false"]] * 3 + [["true"]]
    written = [record["customer_id"] for record in read_lines(tmp_path / "2024-01-05.jsonl")]
    assert written == billable(sim)
    assert not set(written) & set(sim.archived_customer_ids)
    assert {skip["customer_id"] for skip in manifest["skipped"]} == set(sim.unique_metric_customer_ids)
    assert manifest["customers"] == 230 - len(sim.unique_metric_customer_ids)


# -- concurrency, rate, progress, memory --------------------------------------------------------------


def test_customers_are_fetched_concurrently_over_pooled_connections(sim: MetronomeSimulator) -> None:
    sim.latency = 0.05
    ids = billable(sim)[:16]

    records = operator(customer_ids=ids, max_workers=4).execute({})

    assert records == expected_records(sim, ids, "costs", "raw")
    assert 1 < sim.max_in_flight <= 4
    assert len({request.connection_id for request in sim.requests}) <= 4


def test_one_worker_fetches_one_customer_at_a_time(sim: MetronomeSimulator) -> None:
    sim.latency = 0.01

    operator(customer_ids=billable(sim)[:5], max_workers=1).execute({})

    assert sim.max_in_flight == 1


def test_rate_cap_is_honoured_across_workers(sim: MetronomeSimulator) -> None:
    ids = billable(sim)[:12]

    began = time.monotonic()  # the simulator's clock for started_at
    operator(customer_ids=ids, max_workers=8, requests_per_second=25).execute({})

    starts = sorted(request.started_at for request in sim.requests)
    assert len(starts) == 12
    # Each request waits for its own slot, 40 ms after the previous one's, and the first slot is no
    # earlier than the run: so the k-th arrival comes at least k slots after it began. A thread that
    # is late on a busy machine only makes its arrival later, so the bound holds however loaded.
    for k, start in enumerate(starts):
        assert start - began >= k / 25, (k, start - began)


def test_progress_is_logged_and_per_customer_summaries_are_quiet(
    sim: MetronomeSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    ids = billable(sim)[:12]
    op = operator(customer_ids=ids)
    op.progress_interval = 0.0

    records = op.execute({})

    logged = capfd.readouterr().out
    for done in range(1, 12):
        assert f"Progress: {done}/12 customers" in logged
    assert f"Done: 12/12 customers, {len(records)} records" in logged
    assert "customers/s" in logged
    assert "CostWindow in 1 page(s)" not in logged
    assert sim.token not in logged


def test_the_last_line_counts_customers_records_requests_and_429s(
    sim: MetronomeSimulator, capfd: pytest.CaptureFixture[str]
) -> None:
    sim.inject(Fault.status(429, headers={"retry-after-ms": "1"}), path="/costs", times=2)

    records = operator(customer_ids=billable(sim)[0]).execute({})

    logged = capfd.readouterr().out
    assert re.search(
        rf"Done: 1/1 customers, {len(records)} records, [\d.]+ customers/s; 3 requests \([\d.]+ requests/s\), "
        r"2 throttled \(429\)",
        logged,
    )
    assert "Read 1 CostWindow" not in logged  # the hook's page counts stay at DEBUG


def _start_simulator_process(customers: int, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A simulator in its own process, so that its memory is not counted with the operator's."""
    port_file = tmp_path / f"port-{customers}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_metronome.testing",
            "--customers",
            str(customers),
            "--now",
            "2024-02-01T00:00:00Z",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the simulator process did not start")
        time.sleep(0.02)
    return process, int(port_file.read_text())


def _peak_memory(
    customers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, dict[str, Any]]:
    process, port = _start_simulator_process(customers, tmp_path)
    try:
        connection = {"conn_type": "metronome", "host": f"http://127.0.0.1:{port}", "password": DEFAULT_TOKEN}
        monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", json.dumps(connection))
        op = operator(
            customer_ids=None,
            source="invoice_breakdowns",
            ending_before="2024-01-08",
            output_uri=f"file://{tmp_path}/{customers}/{{date}}.jsonl",
        )
        op.execute({})  # warm up: imports and caches are not what this test measures
        tracemalloc.start()
        try:
            manifest = op.execute({})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return peak, manifest


def test_memory_stays_flat_as_customers_grow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_peak, small = _peak_memory(40, tmp_path, monkeypatch)
    large_peak, large = _peak_memory(400, tmp_path, monkeypatch)

    assert large["customers"] == 400
    assert large["bytes"] > 9 * small["bytes"]
    # Holding even just the encoded lines would grow the peak by the extra bytes written (~2.9 MB),
    # the parsed records by several times that; streaming grows it by the customer list and a page
    # of the customer listing.
    assert large_peak - small_peak < (large["bytes"] - small["bytes"]) / 3, (small_peak, large_peak)


# -- lineage ------------------------------------------------------------------------------------------


@pytest.fixture
def lineage_collector(mocker: MockerFixture) -> Any:
    """A real collector in place of the no-op one Airflow picks when no lineage reader is installed.

    The choice is a process-wide singleton made at first use from installed plugins, so a test cannot
    install a reader for itself.
    """
    try:
        from airflow.sdk.lineage import HookLineageCollector
    except ImportError:
        from airflow.lineage.hook import HookLineageCollector  # type: ignore[no-redef]
    collector = HookLineageCollector()
    mocker.patch.object(_compat, "get_hook_lineage_collector", return_value=collector)
    return collector


def _output_uris(collector: Any) -> list[str]:
    if hasattr(collector, "collected_assets"):
        return [info.asset.uri for info in collector.collected_assets.outputs]
    return [info.dataset.uri for info in collector.collected_datasets.outputs]


def test_the_written_object_is_the_tasks_lineage_output(
    sim: MetronomeSimulator, tmp_path: Path, lineage_collector: Any
) -> None:
    op = operator(
        customer_ids=billable(sim)[:2],
        output_conn_id="local_files",
        output_uri=f"file://{tmp_path}/{{date}}.jsonl.gz",
    )

    manifest = op.execute({})

    assert manifest["uri"] == f"file://{tmp_path}/2024-01-05.jsonl.gz"
    assert _output_uris(lineage_collector) == [manifest["uri"]]


def test_connection_in_the_url_is_used_and_kept_out_of_the_manifest(
    sim: MetronomeSimulator, tmp_path: Path, lineage_collector: Any
) -> None:
    manifest = operator(
        customer_ids=billable(sim)[:1], output_uri=f"file://local_files@{tmp_path}/{{date}}.jsonl"
    ).execute({})

    assert manifest["uri"] == f"file://{tmp_path}/2024-01-05.jsonl"
    assert (tmp_path / "2024-01-05.jsonl").exists()
    assert _output_uris(lineage_collector) == [manifest["uri"]]


def test_xcom_mode_reports_no_lineage(sim: MetronomeSimulator, lineage_collector: Any) -> None:
    operator(customer_ids=billable(sim)[:1]).execute({})

    assert _output_uris(lineage_collector) == []
