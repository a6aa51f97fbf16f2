"""The sinks: a run stopped while writing days says which were written; XCom gets exact plain JSON."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from airflow_provider_metronome._compat import AirflowException, AirflowFailException
from airflow_provider_metronome.models import JsonNumber, parse_json
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.output.sinks import DaySplitSink, object_encoding, plain_json
from airflow_provider_metronome.output.uris import storage_path
from airflow_provider_metronome.output.writers import AtomicJsonLinesWriter

DAYS = [dt.date(2024, 1, 5) + dt.timedelta(days=offset) for offset in range(3)]


def writers(folder: Path) -> dict[dt.date, AtomicJsonLinesWriter]:
    return {
        day: AtomicJsonLinesWriter(
            storage_path(f"file://{folder}/{day}.jsonl"), uri=f"file://{folder}/{day}.jsonl"
        )
        for day in DAYS
    }


def test_a_kill_between_two_days_logs_which_days_were_written_and_leaves_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for day in DAYS:
        (tmp_path / f"{day}.jsonl").write_bytes(b"previous\n")
    operator = MetronomeCostsOperator(
        task_id="fetch_costs", starting_on="2024-01-05", ending_before="2024-01-08"
    )
    log = logging.getLogger("test.sinks")

    def killed_after_the_first_day(written: Sequence[dt.date]) -> None:
        # What on_kill does from the SIGTERM handler, once the first day is in place.
        if written:
            operator.on_kill()
        operator._stop_if_killed(written)

    caplog.set_level(logging.INFO, logger="test.sinks")
    encoding = object_encoding(f"file://{tmp_path}/{{date}}.jsonl", "raw", "costs")
    sink = DaySplitSink(encoding, writers(tmp_path), log, killed_after_the_first_day)
    with pytest.raises(AirflowException) as caught, sink:
        sink.add("c1", [(day, [b'{"customer_id":"c1"}\n']) for day in DAYS])

    assert str(caught.value) == (
        "The task was killed while writing; 2024-01-05 had already been written (each day whole), the "
        "other days are as they were."
    )
    assert caplog.records[-1].getMessage() == (
        "Stopped after writing 1 day(s), each whole: 2024-01-05; the others are as they were."
    )
    assert (tmp_path / "2024-01-05.jsonl").read_bytes() == b'{"customer_id":"c1"}\n'
    assert [(tmp_path / f"{day}.jsonl").read_bytes() for day in DAYS[1:]] == [b"previous\n"] * 2


def test_xcom_values_are_plain_json_that_holds_each_number_exactly() -> None:
    record = parse_json(b'{"cost": 12.50, "quantity": 9007199254740993, "total": 1e5, "tiny": 1.5E-7}')

    plain = plain_json(record)

    assert plain == {"cost": 12.5, "quantity": 9007199254740993, "total": 100000.0, "tiny": 1.5e-07}
    assert type(plain["quantity"]) is int
    with pytest.raises(AirflowFailException, match=r"the number 12\.345678901234567890123, which XCom"):
        plain_json({"cost": JsonNumber("12.345678901234567890123")})
