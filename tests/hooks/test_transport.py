"""The HTTP edge against a misbehaving simulator: bounded time, bounded pages, and every failure named."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from pytest_mock import MockerFixture

from airflow_provider_metronome.exceptions import (
    MetronomeAPIError,
    MetronomeResponseError,
    MetronomeTransientError,
)
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.hooks.retry import RetryPolicy
from airflow_provider_metronome.testing import DEFAULT_TOKEN, Fault, MetronomeSimulator
from tests.support.runs import connection_json

NOW = dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)
DAY = dt.date(2024, 1, 5)


@pytest.fixture
def sim() -> Any:
    with MetronomeSimulator(now=NOW) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def no_retry_wait(mocker: MockerFixture) -> None:
    mocker.patch.object(RetryPolicy, "sleep")


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Callable[..., MetronomeHook]:
    def make(host: str, *, port: int | None = None, **extra: Any) -> MetronomeHook:
        conn = connection_json(host, DEFAULT_TOKEN, **extra)
        if port is not None:
            conn = conn.replace('"extra"', f'"port": {port}, "extra"')
        monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", conn)
        return MetronomeHook()

    return make


def costs_of(hook: MetronomeHook, customer_id: str, days: int = 1) -> list[Any]:
    return list(hook.iter_costs(customer_id, DAY, DAY + dt.timedelta(days=days)))


def test_a_trickling_answer_is_cut_at_the_timeout_for_the_whole_attempt(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    # A byte every 20 ms never trips a per-read timeout of 1 s; the whole page would take minutes.
    sim.inject(Fault.trickle(bytes_per_second=50), times=None)

    with pytest.raises(MetronomeTransientError) as err:
        list(connect(sim.url, timeout=1, max_retries=1).iter_customers())

    assert "took longer than timeout=1 s in all" in str(err.value)
    assert err.value.retryable
    assert len(sim.requests) == 2


def test_a_cursor_that_never_ends_stops_at_the_page_cap(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    customer = sim.costs_customer_ids[0]
    sim.inject(Fault.endless_cursor(), times=None)

    with pytest.raises(MetronomeResponseError) as err:
        costs_of(connect(sim.url), customer, days=2)

    assert err.value.path == f"/v1/customers/{customer}/costs"
    assert "cursor never ends" in str(err.value)
    # One page holds the two days; the cap adds the empty pages a real walk may meet.
    assert len(sim.requests) == 51


def test_the_page_cap_allows_every_real_walk(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    customer = sim.costs_customer_ids[0]

    windows = list(connect(sim.url).iter_costs(customer, DAY, DAY + dt.timedelta(days=20), page_size=1))

    assert len(windows) == 20


def test_a_redirect_to_another_host_names_it_and_keeps_the_token(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    sim.inject(Fault.redirect(), times=None)

    with pytest.raises(MetronomeAPIError) as err:
        list(connect(sim.url).iter_customers())

    assert "Metronome answered with a redirect to 127.0.0.2; the token is not sent to other hosts" in str(
        err.value
    )
    assert "check the connection's host" in str(err.value)
    assert not err.value.retryable
    assert len(sim.requests) == 1


def test_a_body_that_lies_about_its_encoding_is_a_response_error(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    sim.inject(Fault.bad_encoding(), times=None)

    with pytest.raises(MetronomeResponseError) as err:
        list(connect(sim.url).iter_customers())

    assert "does not match its Content-Encoding" in str(err.value)
    assert len(sim.requests) == 1


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_a_number_outside_json_names_the_endpoint_and_customer(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook], token: str
) -> None:
    customer = sim.costs_customer_ids[0]
    sim.inject(Fault.nan_body(token), times=None)

    with pytest.raises(MetronomeResponseError) as err:
        costs_of(connect(sim.url), customer)

    assert err.value.path == f"/v1/customers/{customer}/costs"
    assert "holds a value outside JSON (NaN or Infinity)" in str(err.value)


def test_an_untrusted_certificate_is_named_and_not_retried(connect: Callable[..., MetronomeHook]) -> None:
    with MetronomeSimulator(now=NOW, tls=True) as tls:
        ok, message = connect(tls.url).test_connection()

        assert not ok
        assert "TLS verification of 127.0.0.1 failed" in message
        assert "REQUESTS_CA_BUNDLE" in message
        assert tls.requests == []  # the handshake failed: nothing was sent, nothing retried


def test_a_trusted_certificate_works(
    connect: Callable[..., MetronomeHook], monkeypatch: pytest.MonkeyPatch
) -> None:
    with MetronomeSimulator(now=NOW, tls=True) as tls:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls.certificate_path)

        assert len(list(connect(tls.url).iter_customers())) == len(tls.active_customer_ids)


def test_an_unknown_host_is_a_dns_failure(connect: Callable[..., MetronomeHook]) -> None:
    with pytest.raises(MetronomeTransientError) as err:
        list(connect("https://metronome.invalid", max_retries=0).iter_customers())

    assert "the host name metronome.invalid could not be resolved (DNS)" in str(err.value)


@pytest.mark.parametrize(
    ("host", "port", "message"),
    [
        ("http://127.0.0.1:abc", None, "has host 'http://127.0.0.1:abc', which is not a valid URL"),
        ("http://[::1", None, "which is not a valid URL"),
        ("ftp://example.com", None, "which is not an http(s) URL"),
        ("http://127.0.0.1", 70000, "has host port 70000, which is not a TCP port"),
    ],
)
def test_connection_settings_name_the_connection_before_any_request(
    connect: Callable[..., MetronomeHook], host: str, port: int | None, message: str
) -> None:
    hook = connect(host, port=port)

    with pytest.raises(ValueError, match="The Airflow connection 'metronome_default'") as err:
        _ = hook.settings

    assert message in str(err.value)


def test_a_hidden_port_sent_as_zero_means_no_port(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    assert connect(sim.url, port=0).test_connection()[0]


def test_should_retry_false_makes_a_5xx_final_and_not_retryable(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    sim.inject(Fault.status(503, headers={"x-should-retry": "false"}), times=None)

    with pytest.raises(MetronomeAPIError) as err:
        list(connect(sim.url).iter_customers())

    assert err.value.status_code == 503
    assert not err.value.retryable
    assert len(sim.requests) == 1


def test_the_environment_is_read_once_per_session(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook], monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = connect(sim.url)
    assert list(hook.iter_customers())

    # A proxy that appears later does not reach the session already made.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")

    assert list(hook.iter_customers())
    assert len(sim.requests) == 2
