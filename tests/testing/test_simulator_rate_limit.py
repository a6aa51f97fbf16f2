"""The simulator's per-token rate limit, driven with plain ``requests`` over real sockets."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests

from airflow_provider_metronome.testing import Fault, MetronomeSimulator, RateLimit
from tests.support.simulator import standalone_simulator, wait_until
from tests.testing.simulator_client import AUTH, get

# About one request every 17 minutes: a bucket never refills noticeably while a test runs.
SLOW = 0.001
RETRY_HEADERS = {"retry-after", "retry-after-ms"}


def statuses(sim: MetronomeSimulator, count: int, headers: dict[str, str] | None = None) -> list[int]:
    return [get(sim, "/v1/customers", headers=headers).status_code for _ in range(count)]


def test_requests_beyond_the_burst_get_a_bare_429() -> None:
    with MetronomeSimulator(rate_limit=RateLimit(rate=SLOW, burst=3)) as sim:
        answers = [get(sim, "/v1/customers") for _ in range(4)]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.json() == {"message": "Too Many Requests"}
    assert refused.headers["Content-Type"] == "application/json"
    assert not RETRY_HEADERS & {name.lower() for name in refused.headers}  # as Metronome: no hint
    assert [(record.status, record.throttled) for record in sim.requests] == [(200, False)] * 3 + [
        (429, True)
    ]
    assert sim.throttled_count == 1


@pytest.mark.parametrize(
    ("style", "header", "other", "full_wait"),
    [("seconds", "Retry-After", "retry-after-ms", 100), ("ms", "retry-after-ms", "Retry-After", 100_000)],
)
def test_the_retry_hint_is_the_time_until_a_request_is_allowed(
    style: str, header: str, other: str, full_wait: int
) -> None:
    limit = RateLimit(rate=0.01, burst=1, retry_after=style)  # type: ignore[arg-type]
    with MetronomeSimulator(rate_limit=limit) as sim:
        assert get(sim, "/v1/customers").status_code == 200
        refused = get(sim, "/v1/customers")

    assert refused.status_code == 429
    # 100 s to earn one request at 0.01 a second, less the little the first request's time earned.
    assert 0.9 * full_wait <= int(refused.headers[header]) <= full_wait
    assert other not in refused.headers


def test_unauthenticated_requests_spend_no_budget() -> None:
    with MetronomeSimulator(rate_limit=RateLimit(rate=SLOW, burst=1)) as sim:
        unauthenticated = statuses(sim, 3, headers={"Authorization": "Bearer wrong"})
        authenticated = statuses(sim, 2)

    assert unauthenticated == [401, 401, 401]
    assert authenticated == [200, 429]
    assert sim.throttled_count == 1


def test_each_token_has_its_own_budget() -> None:
    with MetronomeSimulator(extra_tokens=["second-token"], rate_limit=RateLimit(rate=SLOW, burst=2)) as sim:
        first = statuses(sim, 3)
        second = statuses(sim, 3, headers={"Authorization": "Bearer second-token"})

    assert first == second == [200, 200, 429]


def test_the_limit_comes_before_faults_and_latency() -> None:
    with MetronomeSimulator(rate_limit=RateLimit(rate=SLOW, burst=1)) as sim:
        assert get(sim, "/v1/customers").status_code == 200
        sim.inject(Fault.status(503))
        sim.latency = 60

        # Answered at once (the client gives up after 10 s) and without spending the fault.
        assert get(sim, "/v1/customers").status_code == 429

        sim.latency = 0
        sim.rate_limit = None
        assert statuses(sim, 2) == [503, 200]


def test_the_limit_changes_while_running() -> None:
    with MetronomeSimulator() as sim:
        assert sim.rate_limit is None
        sim.rate_limit = RateLimit(rate=SLOW, burst=1)
        assert statuses(sim, 2) == [200, 429]

        # A new limit keeps what the bucket holds: a bigger burst is no fresh budget.
        sim.rate_limit = RateLimit(rate=SLOW, burst=5)
        assert statuses(sim, 1) == [429]

        # At a thousand a second the bucket holds a request again within milliseconds.
        sim.rate_limit = RateLimit(rate=1000, burst=1)
        wait_until(lambda: statuses(sim, 1) == [200], "the bucket refills")

        # Switching the limit off forgets the buckets: the next limit starts full.
        sim.rate_limit = None
        assert set(statuses(sim, 10)) == {200}
        sim.rate_limit = RateLimit(rate=SLOW, burst=2)
        assert statuses(sim, 3) == [200, 200, 429]


def test_concurrent_requests_share_the_budget_exactly() -> None:
    clients = 30
    start = threading.Barrier(clients)
    answers: list[int] = []
    lock = threading.Lock()

    def fetch(url: str) -> None:
        start.wait()
        status = requests.get(url + "/v1/customers", headers=AUTH, timeout=10).status_code
        with lock:
            answers.append(status)

    with MetronomeSimulator(rate_limit=RateLimit(rate=SLOW, burst=10)) as sim:
        threads = [threading.Thread(target=fetch, args=(sim.url,)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(answers) == [200] * 10 + [429] * 20
    assert sim.throttled_count == 20
    assert sum(record.throttled for record in sim.requests) == 20


def test_throttled_count_resets_with_the_request_log() -> None:
    with MetronomeSimulator(rate_limit=RateLimit(rate=SLOW, burst=1)) as sim:
        statuses(sim, 3)
        assert sim.throttled_count == 2

        sim.clear_requests()

        assert (sim.throttled_count, sim.requests) == (0, [])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"rate": 0}, "rate must be positive"),
        ({"rate": float("inf")}, "rate must be positive"),
        ({"rate": 5, "burst": 0.5}, "burst must be at least 1"),
        ({"rate": 5, "retry_after": "minutes"}, "retry_after must be"),
    ],
)
def test_rate_limit_settings_are_checked(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimit(**arguments)  # type: ignore[arg-type]


def test_burst_defaults_to_the_rate() -> None:
    assert RateLimit(rate=8).burst == 8
    assert RateLimit(rate=0.5).burst == 1


def test_rate_limit_from_the_command_line(tmp_path: Path) -> None:
    arguments = ("--rate-limit", "0.001", "--burst", "2", "--retry-after", "seconds")
    with standalone_simulator(tmp_path, *arguments) as standalone:
        answers = [requests.get(standalone.url + "/v1/customers", headers=AUTH, timeout=10) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) > 900  # 1000 s to earn a request at 0.001/s
