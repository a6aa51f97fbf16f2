"""The hook's retry policy over real HTTP, with the simulator's faults and request log.

``RetryPolicy.sleep`` is patched to record the waits it asks for instead of waiting.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any

import pytest
from pytest_mock import MockerFixture

from airflow_provider_metronome.exceptions import (
    MetronomeAPIError,
    MetronomeAuthenticationError,
    MetronomeClientError,
    MetronomeNotFoundError,
    MetronomeTransientError,
)
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.hooks.retry import RetryPolicy
from airflow_provider_metronome.testing import DEFAULT_TOKEN, Fault, MetronomeSimulator
from tests.support.runs import connection_json

# 429 is the account's rate limit, not a failure: tests/hooks/test_rate.py covers it.
RETRIED = (408, 409, 500, 502, 503, 504)
NOT_RETRIED: dict[int, type[MetronomeAPIError]] = {
    400: MetronomeClientError,
    401: MetronomeAuthenticationError,
    403: MetronomeAuthenticationError,
    404: MetronomeNotFoundError,
    422: MetronomeClientError,
}
CUSTOMERS = "/v1/customers"


@pytest.fixture
def sleeps(mocker: MockerFixture) -> list[float]:
    """The waits the hook asks for, in order; nothing actually waits."""
    waits: list[float] = []
    mocker.patch.object(RetryPolicy, "sleep", side_effect=waits.append)
    return waits


@pytest.fixture
def connect(simulator: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch) -> Callable[..., MetronomeHook]:
    """A hook on the simulator, with the given connection extras."""

    def make(**extra: Any) -> MetronomeHook:
        monkeypatch.setenv(
            "AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url, DEFAULT_TOKEN, **extra)
        )
        return MetronomeHook()

    return make


@pytest.fixture
def hook(connect: Callable[..., MetronomeHook]) -> MetronomeHook:
    return connect()


def first_backoff(wait: float) -> bool:
    """Metronome's SDK waits 0.5 s less up to 25 % jitter before its first retry."""
    return 0.375 <= wait <= 0.5


# -- which answers are retried --------------------------------------------------------------------


@pytest.mark.parametrize("status", RETRIED)
def test_retried_status_then_success(
    simulator: MetronomeSimulator, hook: MetronomeHook, sleeps: list[float], status: int
) -> None:
    simulator.inject(Fault.status(status), path=CUSTOMERS)

    assert len(list(hook.iter_customers())) == len(simulator.active_customer_ids)

    assert len(simulator.requests) == 2
    assert len(sleeps) == 1
    assert first_backoff(sleeps[0])


@pytest.mark.parametrize("status", RETRIED)
def test_retried_status_that_outlasts_the_retries(
    simulator: MetronomeSimulator, hook: MetronomeHook, sleeps: list[float], status: int
) -> None:
    simulator.inject(Fault.status(status, message="try later"), path=CUSTOMERS, times=None)

    with pytest.raises(MetronomeTransientError) as err:
        list(hook.iter_customers())

    assert len(simulator.requests) == 3  # the first attempt and max_retries=2
    assert len(sleeps) == 2
    error = err.value
    assert (error.status_code, error.method, error.path, error.message) == (
        status,
        "GET",
        CUSTOMERS,
        "try later",
    )
    assert error.retryable
    assert str(error) == f"Metronome API error (HTTP {status}) on GET {CUSTOMERS}: try later"


@pytest.mark.parametrize(("status", "error_class"), NOT_RETRIED.items())
def test_not_retried_status_costs_one_request(
    simulator: MetronomeSimulator,
    hook: MetronomeHook,
    sleeps: list[float],
    status: int,
    error_class: type[MetronomeAPIError],
) -> None:
    simulator.inject(Fault.status(status, message="no way"), path=CUSTOMERS, times=None)

    with pytest.raises(error_class) as err:
        list(hook.iter_customers())

    assert len(simulator.requests) == 1
    assert sleeps == []
    assert isinstance(err.value, MetronomeClientError)
    assert not err.value.retryable
    assert (err.value.status_code, err.value.message) == (status, "no way")
    assert f"HTTP {status}" in str(err.value)


def test_max_retries_zero_sends_once(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook], sleeps: list[float]
) -> None:
    simulator.inject(Fault.status(503), times=None)

    with pytest.raises(MetronomeTransientError):
        list(connect(max_retries=0).iter_customers())

    assert len(simulator.requests) == 1
    assert sleeps == []


# -- x-should-retry -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_should_retry_false_is_obeyed(
    simulator: MetronomeSimulator, hook: MetronomeHook, sleeps: list[float], status: int
) -> None:
    simulator.inject(Fault.status(status, headers={"x-should-retry": "false"}), times=None)

    with pytest.raises(MetronomeAPIError) as err:
        list(hook.iter_customers())

    assert err.value.status_code == status
    assert not err.value.retryable  # the server said retrying will not help
    assert len(simulator.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize("status", [400, 404])
def test_should_retry_true_is_obeyed(
    simulator: MetronomeSimulator, hook: MetronomeHook, sleeps: list[float], status: int
) -> None:
    simulator.inject(Fault.status(status, headers={"x-should-retry": "true"}))

    assert list(hook.iter_customers())
    assert len(simulator.requests) == 2
    assert len(sleeps) == 1

    simulator.clear_requests()
    simulator.inject(Fault.status(status, headers={"x-should-retry": "true"}), times=None)
    with pytest.raises(MetronomeTransientError) as err:
        list(hook.iter_customers())
    # The server asked for retries: running out of them is transient, not a client error.
    assert err.value.status_code == status
    assert not isinstance(err.value, MetronomeClientError)
    assert len(simulator.requests) == 3


# -- how long to wait -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "7"}, 0.25),  # the precise one wins
        ({"retry-after-ms": "soon", "Retry-After": "7"}, 7.0),
        ({"Retry-After": "3600"}, 60.0),  # capped at max_retry_wait
        ({"retry-after-ms": "120000"}, 60.0),
    ],
)
def test_server_requested_wait_is_honoured_up_to_the_cap(
    simulator: MetronomeSimulator,
    hook: MetronomeHook,
    sleeps: list[float],
    headers: dict[str, str],
    expected: float,
) -> None:
    simulator.inject(Fault.status(503, headers=headers))

    assert list(hook.iter_customers())

    assert sleeps == [expected]
    assert len(simulator.requests) == 2


def test_retry_after_as_an_http_date(
    simulator: MetronomeSimulator, hook: MetronomeHook, sleeps: list[float]
) -> None:
    in_30_seconds = email.utils.formatdate(time.time() + 30, usegmt=True)
    simulator.inject(Fault.status(503, headers={"Retry-After": in_30_seconds}))

    assert list(hook.iter_customers())

    # HTTP dates have whole seconds, and a little time passes before the hook reads it.
    assert len(sleeps) == 1
    assert 25 < sleeps[0] <= 30


def test_the_cap_is_a_connection_extra(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook], sleeps: list[float]
) -> None:
    simulator.inject(Fault.status(503, headers={"Retry-After": "30"}))
    simulator.inject(Fault.status(503, headers={"retry-after-ms": "2500"}))

    assert list(connect(max_retry_wait=5).iter_customers())

    assert sleeps == [5.0, 2.5]


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "0"},
        {"Retry-After": "-5"},
        {"Retry-After": "soon"},
        {"retry-after-ms": "0"},
        {"Retry-After": email.utils.formatdate(time.time() - 3600, usegmt=True)},  # in the past
    ],
)
def test_unusable_retry_after_falls_back_to_backoff(
    simulator: MetronomeSimulator, hook: MetronomeHook, sleeps: list[float], headers: dict[str, str]
) -> None:
    simulator.inject(Fault.status(503, headers=headers))

    assert list(hook.iter_customers())

    assert len(sleeps) == 1
    assert first_backoff(sleeps[0])


def test_backoff_grows_exponentially_up_to_8_seconds(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook], sleeps: list[float]
) -> None:
    simulator.inject(Fault.status(500), times=None)

    with pytest.raises(MetronomeTransientError):
        list(connect(max_retries=6).iter_customers())

    assert len(simulator.requests) == 7
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    for wait, ceiling in zip(sleeps, ceilings, strict=True):
        assert 0.75 * ceiling <= wait <= ceiling


# -- network failures -----------------------------------------------------------------------------


def test_dropped_connection_is_retried_on_a_new_connection(
    simulator: MetronomeSimulator, hook: MetronomeHook, sleeps: list[float]
) -> None:
    simulator.inject(Fault.drop())

    assert len(list(hook.iter_customers())) == len(simulator.active_customer_ids)

    first, second = simulator.requests
    assert first.connection_id != second.connection_id
    assert len(sleeps) == 1
    assert first_backoff(sleeps[0])


def test_connection_that_keeps_dropping(
    simulator: MetronomeSimulator, hook: MetronomeHook, sleeps: list[float]
) -> None:
    simulator.inject(Fault.drop(), times=None)

    with pytest.raises(MetronomeTransientError) as err:
        list(hook.iter_customers())

    assert err.value.status_code is None
    assert str(err.value) == (
        f"Metronome API error (no answer) on GET {CUSTOMERS}: no answer after 3 attempt(s): the connection "
        f"to {simulator.url.removeprefix('http://')} was reset or closed before a complete answer"
    )
    assert len(simulator.requests) == 3
    assert len(sleeps) == 2


def test_slow_answer_within_the_read_timeout_is_waited_for(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook], sleeps: list[float]
) -> None:
    simulator.inject(Fault.slow(0.2))

    assert list(connect(timeout=5).iter_customers())

    assert len(simulator.requests) == 1
    assert sleeps == []


def test_answer_slower_than_the_read_timeout_is_retried(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook], sleeps: list[float]
) -> None:
    simulator.inject(Fault.slow(3))

    assert len(list(connect(timeout=0.2).iter_customers())) == len(simulator.active_customer_ids)

    assert len(simulator.requests) == 2
    assert len(sleeps) == 1


def test_answers_that_stay_too_slow(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook], sleeps: list[float]
) -> None:
    simulator.inject(Fault.slow(3), times=None)

    with pytest.raises(
        MetronomeTransientError, match=r"after 3 attempt\(s\): no data from .* for timeout=0.2 s"
    ):
        list(connect(timeout=0.2).iter_customers())

    assert len(simulator.requests) == 3
    assert len(sleeps) == 2


# -- retries inside a walk of pages ---------------------------------------------------------------


def test_a_retry_mid_walk_resends_the_same_page_request(
    simulator: MetronomeSimulator, hook: MetronomeHook, sleeps: list[float]
) -> None:
    pages = hook.iter_customers(page_size=10)
    received = [next(pages) for _ in range(10)]
    simulator.inject(Fault.status(502))

    received.extend(pages)

    assert [c.id for c in received] == simulator.active_customer_ids
    queries = [record.query for record in simulator.requests]
    assert len(queries) == 4  # page 1, page 2 (502), page 2 again, page 3
    assert queries[1] == queries[2]
    assert "next_page" in queries[1]
    assert len(sleeps) == 1


# -- client-side rate cap -------------------------------------------------------------------------


def test_requests_per_second_spaces_request_starts(
    simulator: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url))
    hook = MetronomeHook(requests_per_second=20)

    started = time.monotonic()
    assert len(list(hook.iter_customers(page_size=5))) == 25
    elapsed = time.monotonic() - started

    # Five requests 1/20 s apart cannot all start in less than 4/20 s (unthrottled: a few ms).
    assert len(simulator.requests) == 5
    assert elapsed >= 4 / 20


@pytest.mark.parametrize("value", [-1, 0, float("inf"), True])
def test_requests_per_second_must_be_positive_or_none(value: float) -> None:
    with pytest.raises(
        ValueError,
        match=r"requests_per_second=.* must be a positive number of requests per second, or None for no cap",
    ):
        MetronomeHook(requests_per_second=value)
