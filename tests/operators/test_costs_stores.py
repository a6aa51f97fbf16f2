"""MetronomeCostsOperator writing to GCS and Azure Blob Storage, each served by its emulator.

``gs://`` goes to gcp-storage-emulator and ``abfs://`` to Azurite (``tests/support/stores.py``),
both real HTTP servers in child processes; the operator reaches them through Airflow's google and
azure providers and their connections, as it would the real services. Each test runs once per
store and checks what a user sees in the bucket or container: the objects, their bytes, the
previous object after a failed run, and that an unchanged day is not written again.
"""

from __future__ import annotations

import datetime as dt
import gzip
from typing import Any

import pytest

from airflow_provider_metronome.exceptions import MetronomeTransientError
from airflow_provider_metronome.models import parse_json
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.output.reading import iter_output
from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from tests.support.simulator import billable
from tests.support.stores import Store

DAY = dt.date(2024, 1, 5)
DAYS = [DAY + dt.timedelta(days=offset) for offset in range(3)]
SUFFIXES = [".jsonl", ".jsonl.gz"]


def operator(store: Store, template: str, **kwargs: Any) -> MetronomeCostsOperator:
    kwargs.setdefault("task_id", "fetch_costs")
    kwargs.setdefault("starting_on", DAY.isoformat())
    kwargs.setdefault("ending_before", (DAY + dt.timedelta(days=3)).isoformat())
    kwargs.setdefault("record_format", "line_items")
    return MetronomeCostsOperator(output_uri=store.url(template), output_conn_id=store.conn_id, **kwargs)


def decoded(data: bytes, suffix: str) -> list[dict[str, Any]]:
    plain = gzip.decompress(data) if suffix.endswith(".gz") else data
    return [parse_json(line) for line in plain.splitlines()]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_writes_the_object_and_it_reads_back(
    sim: MetronomeSimulator,
    store: Store,
    suffix: str,
) -> None:
    ids = billable(sim)[:6]
    key = f"costs/2024-01-05{suffix}"

    manifest = operator(store, f"costs/{{date}}{suffix}", customer_ids=ids).execute({})

    stored = store.get_bytes(key)
    assert manifest["uri"] == store.url(key)
    assert manifest["bytes"] == len(stored)
    records = list(iter_output(manifest["uri"], conn_id=store.conn_id))
    assert records == decoded(stored, suffix)
    assert len(records) == manifest["records"] > 0
    # Straight to the final name: no temporary object, no upload left open.
    assert store.list_names() == [key]
    assert store.unfinished_uploads() == []


def test_split_run_writes_one_object_per_day_and_a_rerun_leaves_them_untouched(
    sim: MetronomeSimulator,
    store: Store,
) -> None:
    ids = billable(sim)[:6]
    template = "costs/date={date}/costs.jsonl.gz"
    keys = [f"costs/date={day}/costs.jsonl.gz" for day in DAYS]

    first = operator(store, template, customer_ids=ids, split_by_day=True).execute({})
    stamps = [store.stamp(key) for key in keys]
    second = operator(store, template, customer_ids=ids, split_by_day=True).execute({})

    assert store.list_names() == keys
    assert [entry["uri"] for entry in first["objects"]] == [store.url(key) for key in keys]
    assert first["changed_days"] == [str(day) for day in DAYS]
    # Same bytes: no day is uploaded again, so each object keeps its generation / ETag.
    assert second["changed_days"] == []
    assert [store.stamp(key) for key in keys] == stamps
    for entry, key in zip(first["objects"], keys, strict=True):
        assert entry["bytes"] == len(store.get_bytes(key))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_rerun_with_the_same_bytes_leaves_the_object_untouched(
    sim: MetronomeSimulator,
    store: Store,
    suffix: str,
) -> None:
    key = f"costs/2024-01-05{suffix}"
    kwargs: dict[str, Any] = {"customer_ids": billable(sim)[:6]}

    first = operator(store, f"costs/{{date}}{suffix}", **kwargs).execute({})
    stamp = store.stamp(key)
    second = operator(store, f"costs/{{date}}{suffix}", max_workers=3, **kwargs).execute({})

    assert first["changed"] is True
    assert second == {**first, "changed": False}
    assert store.stamp(key) == stamp
    assert store.list_names() == [key]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_run_leaves_the_previous_object_intact(
    sim: MetronomeSimulator,
    store: Store,
    suffix: str,
) -> None:
    ids = billable(sim)[:8]
    key = f"costs/2024-01-05{suffix}"
    operator(store, f"costs/{{date}}{suffix}", customer_ids=ids).execute({})
    previous, stamp = store.get_bytes(key), store.stamp(key)
    # The last customer fails for good after the others' records have gone to the writer.
    sim.inject(Fault.status(500), path=f"/v1/customers/{ids[-1]}/costs", times=None)

    with pytest.raises(MetronomeTransientError, match="HTTP 500"):
        operator(store, f"costs/{{date}}{suffix}", customer_ids=ids, ending_before="2024-01-12").execute({})

    assert store.get_bytes(key) == previous
    assert store.stamp(key) == stamp
    assert store.list_names() == [key]
    assert store.unfinished_uploads() == []

    sim.clear_faults()
    operator(store, f"costs/{{date}}{suffix}", customer_ids=ids, ending_before="2024-01-12").execute({})
    assert store.get_bytes(key) != previous
    assert store.list_names() == [key]


def test_failed_first_run_writes_nothing(sim: MetronomeSimulator, store: Store) -> None:
    ids = billable(sim)[:4]
    sim.inject(Fault.status(500), path=f"/v1/customers/{ids[-1]}/costs", times=None)

    with pytest.raises(MetronomeTransientError, match="HTTP 500"):
        operator(store, "costs/{date}.jsonl.gz", customer_ids=ids).execute({})

    assert store.list_names() == []
    assert store.unfinished_uploads() == []
