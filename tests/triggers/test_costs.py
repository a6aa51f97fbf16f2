"""MetronomeCostsTrigger against the simulator: serialization, events, and a free event loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pendulum
import pytest

from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.hooks.retry import RetryPolicy
from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from airflow_provider_metronome.triggers.costs import MetronomeCostsTrigger
from tests.support.runs import connection_json

AVAILABLE_AT = dt.datetime(2024, 1, 6, 2, tzinfo=dt.timezone.utc)  # 2024-01-05 ends + 2 h delay
BEFORE = AVAILABLE_AT - dt.timedelta(seconds=1)
WINDOW = {"starting_on": "2024-01-05T00:00:00Z", "ending_before": "2024-01-06T00:00:00Z"}
TOKEN = "trigger-test-token-9f8e7d"


@pytest.fixture
def conn(simulator: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``metronome_default`` pointing at a simulator that accepts a distinctive token."""
    simulator.token = TOKEN
    monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url, token=TOKEN))
    return "metronome_default"


@pytest.fixture
def no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetryPolicy, "sleep", lambda seconds: None)


def plain_customer(simulator: MetronomeSimulator) -> str:
    return next(c for c in simulator.active_customer_ids if c not in simulator.unique_metric_customer_ids)


def make_trigger(**kwargs: Any) -> MetronomeCostsTrigger:
    return MetronomeCostsTrigger(**{**WINDOW, "customer_ids": None, "poke_interval": 0.01, **kwargs})


async def first_event(trigger: MetronomeCostsTrigger) -> dict[str, Any]:
    events: AsyncIterator[Any] = trigger.run()
    event = await anext(events)
    payload: dict[str, Any] = event.payload
    return payload


async def wait_until(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- serialization ---------------------------------------------------------------------------------


def test_serialize_round_trips_through_json_without_the_token(
    simulator: MetronomeSimulator, conn: str
) -> None:
    trigger = make_trigger(
        customer_ids=[plain_customer(simulator)],
        source="invoice_breakdowns",
        poke_interval=120,
        timeout_at="2024-01-07T06:30:00+02:00",
        max_workers=4,
        on_customer_error="skip",
    )

    classpath, kwargs = trigger.serialize()
    text = json.dumps(kwargs)
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(text))

    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs["timeout_at"] == "2024-01-07T04:30:00Z"
    assert TOKEN not in text
    assert "password" not in text
    assert simulator.requests == [], "building or serializing a trigger sends nothing"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customer_ids": ["cust_00001"]}, "is not a Metronome customer id"),
        ({"starting_on": "2024-01-05T12:00:00Z"}, "midnight UTC"),
        ({"source": "usage"}, "source='usage' must be one of"),
        ({"poke_interval": -1}, "poke_interval=-1"),
        ({"timeout_at": "tomorrow"}, "timeout_at='tomorrow' is not a valid RFC 3339 timestamp"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_trigger(**kwargs)


# -- events ----------------------------------------------------------------------------------------


def test_yields_success_once_the_window_is_available(simulator: MetronomeSimulator, conn: str) -> None:
    simulator.now = AVAILABLE_AT

    event = asyncio.run(first_event(make_trigger(on_customer_error="skip")))

    assert event["status"] == "success"
    assert event["message"].startswith("Metronome has produced 2024-01-05: asked ")
    assert {key: event[key] for key in WINDOW} == WINDOW
    assert {request.method for request in simulator.requests} == {"GET"}


def test_keeps_polling_until_the_simulator_clock_passes_the_availability_point(
    simulator: MetronomeSimulator, conn: str
) -> None:
    customer = plain_customer(simulator)
    simulator.now = BEFORE

    async def scenario() -> dict[str, Any]:
        waiting = asyncio.create_task(first_event(make_trigger(customer_ids=[customer])))
        await wait_until(lambda: len(simulator.requests) >= 3, "three checks")
        assert not waiting.done(), "the day is not there yet"
        simulator.now = AVAILABLE_AT
        return await waiting

    event = asyncio.run(scenario())

    assert event["status"] == "success"
    assert {request.path for request in simulator.requests} == {f"/v1/customers/{customer}/costs"}


def test_a_404_ends_the_wait_at_once_with_metronomes_message(
    simulator: MetronomeSimulator, conn: str
) -> None:
    unknown = str(uuid.uuid4())

    event = asyncio.run(first_event(make_trigger(customer_ids=[unknown], poke_interval=3600)))

    assert event == {
        "status": "error",
        "message": f"Metronome API error (HTTP 404) on GET /v1/customers/{unknown}/costs: Customer not found",
    }
    assert len(simulator.requests) == 1


def test_a_missing_connection_is_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_METRONOME_NOWHERE", raising=False)

    event = asyncio.run(first_event(make_trigger(metronome_conn_id="metronome_nowhere")))

    assert event["status"] == "error"
    assert "metronome_nowhere" in event["message"]


def test_a_503_keeps_it_polling(simulator: MetronomeSimulator, conn: str, no_retry_wait: None) -> None:
    simulator.now = AVAILABLE_AT
    simulator.inject(Fault.status(503), path="/costs", times=None)
    customer = plain_customer(simulator)

    async def scenario() -> dict[str, Any]:
        waiting = asyncio.create_task(first_event(make_trigger(customer_ids=[customer])))
        # Each check is the first attempt and the hook's two retries: wait for two whole checks.
        await wait_until(lambda: len(simulator.requests) >= 6, "two failed checks")
        assert not waiting.done()
        simulator.clear_faults()
        return await waiting

    event = asyncio.run(scenario())

    assert event["status"] == "success"


def test_yields_timeout_after_a_check_past_timeout_at(simulator: MetronomeSimulator, conn: str) -> None:
    simulator.now = BEFORE
    past = pendulum.now("UTC").subtract(seconds=1).to_iso8601_string()

    event = asyncio.run(first_event(make_trigger(customer_ids=[plain_customer(simulator)], timeout_at=past)))

    assert event["status"] == "timeout"
    assert event["message"].startswith("Sensor has timed out: 2024-01-05 (costs) was not available by ")
    assert event["message"].endswith("Last check: 1 of 1 customer still without 2024-01-05 (costs).")
    assert len(simulator.requests) == 1


def test_the_last_check_comes_at_timeout_at_not_a_poke_interval_later(
    simulator: MetronomeSimulator, conn: str
) -> None:
    simulator.now = BEFORE
    soon = pendulum.now("UTC").add(seconds=0.3).to_iso8601_string()
    trigger = make_trigger(customer_ids=[plain_customer(simulator)], poke_interval=3600, timeout_at=soon)

    event = asyncio.run(asyncio.wait_for(first_event(trigger), timeout=60))

    assert event["status"] == "timeout"
    assert len(simulator.requests) == 2, "one check at the start, one when the time is up"


# -- the triggerer's event loop --------------------------------------------------------------------


def test_the_event_loop_keeps_running_while_a_check_waits_on_a_slow_metronome(
    simulator: MetronomeSimulator, conn: str
) -> None:
    simulator.now = AVAILABLE_AT
    simulator.inject(Fault.slow(1.0), path="/costs", times=1)
    customer = plain_customer(simulator)

    async def scenario() -> tuple[dict[str, Any], int]:
        waiting = asyncio.create_task(first_event(make_trigger(customer_ids=[customer])))
        ticks_during_check = 0
        while not waiting.done():
            # Counts only while the slow request is being answered and the trigger still awaits it.
            if simulator.requests_for("/costs") and not waiting.done():
                ticks_during_check += 1
            await asyncio.sleep(0.01)
        return await waiting, ticks_during_check

    event, ticks = asyncio.run(scenario())

    assert event["status"] == "success"
    assert ticks >= 2


def test_the_connection_is_read_off_the_event_loop_thread(
    simulator: MetronomeSimulator, conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Airflow 3's triggerer serves sync connection reads to worker threads only.
    simulator.now = AVAILABLE_AT
    readers: list[str] = []
    read_connection = MetronomeHook.get_connection

    def recording_read(conn_id: str) -> Any:
        readers.append(threading.current_thread().name)
        return read_connection(conn_id)

    monkeypatch.setattr(MetronomeHook, "get_connection", staticmethod(recording_read))

    async def scenario() -> tuple[dict[str, Any], str]:
        return await first_event(make_trigger(customer_ids=[plain_customer(simulator)])), (
            threading.current_thread().name
        )

    event, loop_thread = asyncio.run(scenario())

    assert event["status"] == "success"
    assert readers, "the connection was read"
    assert loop_thread not in readers
