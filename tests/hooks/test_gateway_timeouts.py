"""How the hook tells a gateway timeout (a 504, or no answer within ``timeout``) from other failures."""

from __future__ import annotations

import pytest
from pytest_mock import MockerFixture

from airflow_provider_metronome.exceptions import MetronomeGatewayTimeoutError, MetronomeTransientError
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.hooks.retry import RetryPolicy, timeouts_not_retried
from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from tests.support.runs import connection_json


@pytest.fixture(autouse=True)
def no_retry_wait(mocker: MockerFixture) -> None:
    mocker.patch.object(RetryPolicy, "sleep")


def test_a_504_is_retried_then_raised_as_a_gateway_timeout(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    simulator.inject(Fault.status(504), times=None)

    with pytest.raises(MetronomeGatewayTimeoutError) as raised:
        MetronomeHook().get("/v1/customers")

    assert raised.value.status_code == 504
    assert raised.value.retryable
    assert len(simulator.requests) == 3


def test_inside_timeouts_not_retried_a_504_is_raised_at_once(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    simulator.inject(Fault.status(504), times=None)

    with timeouts_not_retried(), pytest.raises(MetronomeGatewayTimeoutError):
        MetronomeHook().get("/v1/customers")

    assert len(simulator.requests) == 1


def test_inside_timeouts_not_retried_a_read_timeout_is_raised_at_once(
    simulator: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url, timeout=0.3))
    simulator.inject(Fault.slow(1.0), times=None)

    with timeouts_not_retried(), pytest.raises(MetronomeGatewayTimeoutError, match="no data from"):
        MetronomeHook().get("/v1/customers")

    assert len(simulator.requests) == 1


def test_other_failures_are_still_retried_inside_timeouts_not_retried(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    simulator.inject(Fault.status(503), times=None)

    with timeouts_not_retried(), pytest.raises(MetronomeTransientError) as raised:
        MetronomeHook().get("/v1/customers")

    assert not isinstance(raised.value, MetronomeGatewayTimeoutError)
    assert len(simulator.requests) == 3
