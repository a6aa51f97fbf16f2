"""Metronome's official Python SDK against the simulator, and side by side with our hook.

If the SDK, which is generated from Metronome's OpenAPI, pages through and strictly parses what
the simulator serves, the simulator speaks Metronome's API; if it and the hook return the same
items and send as many requests for the same faults, the hook reads the API as Metronome does.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import Any

import metronome
import pytest
from pytest_mock import MockerFixture

from airflow_provider_metronome.exceptions import MetronomeAPIError
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.hooks.retry import RetryPolicy
from airflow_provider_metronome.testing import DEFAULT_TOKEN, Fault, MetronomeSimulator
from airflow_provider_metronome.window import to_utc
from tests.support.runs import connection_json

NOW = dt.datetime(2024, 3, 10, 12, tzinfo=dt.timezone.utc)
FEBRUARY = {"starting_on": "2024-02-01T00:00:00Z", "ending_before": "2024-03-01T00:00:00Z"}
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


@pytest.fixture
def sim(simulator: MetronomeSimulator) -> MetronomeSimulator:
    simulator.now = NOW
    return simulator


@pytest.fixture
def sdk(sim: MetronomeSimulator) -> Iterator[metronome.Metronome]:
    """The official client, validating every answer strictly against its generated models."""
    client = metronome.Metronome(
        bearer_token=DEFAULT_TOKEN, base_url=sim.url, max_retries=2, _strict_response_validation=True
    )
    yield client
    client.close()


@pytest.fixture
def hook(sim: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch, mocker: MockerFixture) -> MetronomeHook:
    monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(sim.url))
    mocker.patch.object(RetryPolicy, "sleep")
    return MetronomeHook()


def customer_id(sim: MetronomeSimulator) -> str:
    return sim.costs_customer_ids[0]


def same_meaning(value: Any) -> Any:
    """What both sides mean: the SDK parses timestamps and turns every number into a float."""
    if isinstance(value, dict):
        return {key: same_meaning(item) for key, item in value.items()}
    if isinstance(value, list):
        return [same_meaning(item) for item in value]
    if isinstance(value, str) and _TIMESTAMP.fullmatch(value):
        return to_utc(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def test_sdk_lists_customers_across_pages(sim: MetronomeSimulator, sdk: metronome.Metronome) -> None:
    customers = list(sdk.v1.customers.list(limit=4))

    assert [c.id for c in customers] == sim.active_customer_ids
    assert len(sim.requests) == 7  # 25 customers, 4 a page
    assert all(isinstance(c.created_at, dt.datetime) for c in customers)

    archived = list(sdk.v1.customers.list(limit=2, only_archived=True))
    assert [c.id for c in archived] == sim.archived_customer_ids
    assert all(c.archived_at is not None for c in archived)

    wanted = sim.active_customer_ids[5:12]
    assert [c.id for c in sdk.v1.customers.list(limit=3, customer_ids=wanted)] == wanted


def test_sdk_lists_costs_across_pages(sim: MetronomeSimulator, sdk: metronome.Metronome) -> None:
    cid = customer_id(sim)

    windows = list(sdk.v1.customers.list_costs(customer_id=cid, limit=5, **FEBRUARY))

    assert len(windows) == 29
    assert len(sim.requests) == 6
    assert [w.start_timestamp for w in windows] == [
        dt.datetime(2024, 2, day, tzinfo=dt.timezone.utc) for day in range(1, 30)
    ]
    assert all(
        w.credit_types for w in windows if sim.costs_for(cid, w.start_timestamp.date())["credit_types"]
    )


@pytest.mark.parametrize(("window_size", "hours"), [("DAY", 24 * 29), ("HOUR", 24)])
def test_sdk_lists_breakdowns_across_pages(
    sim: MetronomeSimulator, sdk: metronome.Metronome, window_size: str, hours: int
) -> None:
    cid = customer_id(sim)
    start = dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)
    end = start + dt.timedelta(hours=hours)

    breakdowns = list(
        sdk.v1.customers.invoices.list_breakdowns(
            customer_id=cid,
            starting_on=start,
            ending_before=end,
            limit=5,
            window_size=window_size,  # type: ignore[arg-type]
        )
    )

    expected = sim.breakdowns_for(cid, start, end, window_size=window_size.lower())  # type: ignore[arg-type]
    assert [b.id for b in breakdowns] == [b["id"] for b in expected]
    assert len(sim.requests) > 1
    assert all(start <= b.breakdown_start_timestamp < b.breakdown_end_timestamp <= end for b in breakdowns)


# -- the SDK and the hook, same query ---------------------------------------------------------


def test_same_customers(sim: MetronomeSimulator, sdk: metronome.Metronome, hook: MetronomeHook) -> None:
    ours = [c.model_dump(mode="json") for c in hook.iter_customers(include_archived=True, page_size=6)]
    theirs = [c.to_dict(mode="json") for c in sdk.v1.customers.list(limit=6)]
    theirs += [c.to_dict(mode="json") for c in sdk.v1.customers.list(limit=6, only_archived=True)]

    assert len(ours) == len(sim.customers)
    assert same_meaning(ours) == same_meaning(theirs)


def test_same_costs(sim: MetronomeSimulator, sdk: metronome.Metronome, hook: MetronomeHook) -> None:
    cid = customer_id(sim)

    ours = [w.model_dump(mode="json") for w in hook.iter_costs(cid, page_size=7, **FEBRUARY)]
    theirs = [
        w.to_dict(mode="json") for w in sdk.v1.customers.list_costs(customer_id=cid, limit=7, **FEBRUARY)
    ]

    assert len(ours) == 29
    assert same_meaning(ours) == same_meaning(theirs)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"window_size": "hour", "ending_before": "2024-02-02T00:00:00Z"},
        {"sort": "date_desc", "skip_zero_qty_line_items": True},
        {"status": "FINALIZED", "credit_type_id": "2714e483-4ff1-48e4-9e25-ac732e8f24f2"},
    ],
    ids=["daily", "hourly", "sorted-without-zeros", "filtered"],
)
def test_same_breakdowns(
    sim: MetronomeSimulator, sdk: metronome.Metronome, hook: MetronomeHook, options: dict[str, Any]
) -> None:
    cid = customer_id(sim)
    query = {**FEBRUARY, **options}
    ours = [b.model_dump(mode="json") for b in hook.iter_invoice_breakdowns(cid, page_size=9, **query)]
    sdk_query = {**query, "window_size": query.get("window_size", "day").upper()}

    theirs = [
        b.to_dict(mode="json")
        for b in sdk.v1.customers.invoices.list_breakdowns(customer_id=cid, limit=9, **sdk_query)
    ]

    assert ours
    assert same_meaning(ours) == same_meaning(theirs)


# -- the SDK and the hook, same faults ----------------------------------------------------------


def _attempt(sim: MetronomeSimulator, call: Callable[[], object]) -> tuple[int, int | None]:
    """How many requests ``call`` sent, and the status it failed with (None if it succeeded)."""
    sim.clear_requests()
    status: int | None = None
    try:
        call()
    except metronome.APIStatusError as err:
        status = err.status_code
    except MetronomeAPIError as err:
        status = err.status_code
    return len(sim.requests), status


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 422, 500, 502, 503, 504])
@pytest.mark.parametrize("should_retry", [None, "true", "false"])
def test_same_retry_decisions(
    sim: MetronomeSimulator,
    sdk: metronome.Metronome,
    hook: MetronomeHook,
    status: int,
    should_retry: str | None,
) -> None:
    # A 1 ms Retry-After keeps the SDK's real waits short.
    headers = {"retry-after-ms": "1"} | ({"x-should-retry": should_retry} if should_retry else {})
    sim.inject(Fault.status(status, headers=headers), times=None)

    by_sdk = _attempt(sim, lambda: list(sdk.v1.customers.list()))
    by_hook = _attempt(sim, lambda: list(hook.iter_customers()))

    assert by_hook == by_sdk
    assert by_hook in ((1, status), (3, status))


def test_429_is_waited_out_where_the_sdk_gives_up(
    sim: MetronomeSimulator, sdk: metronome.Metronome, hook: MetronomeHook
) -> None:
    # The account's rate limit is not a failure: the hook resends for as long as requests still succeed.
    sim.inject(Fault.status(429, headers={"retry-after-ms": "1"}), times=3)
    by_sdk = _attempt(sim, lambda: list(sdk.v1.customers.list()))
    sim.inject(Fault.status(429, headers={"retry-after-ms": "1"}), times=5)
    by_hook = _attempt(sim, lambda: list(hook.iter_customers()))

    assert by_sdk == (3, 429)
    assert by_hook == (6, None)


def test_429_with_should_retry_false_fails_at_once_as_in_the_sdk(
    sim: MetronomeSimulator, sdk: metronome.Metronome, hook: MetronomeHook
) -> None:
    sim.inject(Fault.status(429, headers={"x-should-retry": "false"}), times=None)

    assert (
        _attempt(sim, lambda: list(hook.iter_customers()))
        == _attempt(sim, lambda: list(sdk.v1.customers.list()))
        == (1, 429)
    )


def test_same_recovery_from_a_dropped_connection(
    sim: MetronomeSimulator, sdk: metronome.Metronome, hook: MetronomeHook
) -> None:
    sim.inject(Fault.drop())
    by_sdk = _attempt(sim, lambda: list(sdk.v1.customers.list()))
    sim.inject(Fault.drop())
    by_hook = _attempt(sim, lambda: list(hook.iter_customers()))

    assert by_sdk == by_hook == (2, None)
