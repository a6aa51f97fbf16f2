"""The simulator's per-token rate limit, driven with plain ``requests`` over real sockets."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests

from airflow_provider_metronome.testing import EVERY_CUSTOMER, Fault, MetronomeSimulator, RateLimit
from tests.support.simulator import standalone_simulator, wait_until
from tests.testing.simulator_client import AUTH, FEBRUARY, breakdowns_path, costs_path, get

# About one request every 17 minutes: a bucket never refills noticeably while a test runs.
SLOW = 0.001
RETRY_HEADERS = {"retry-after", "retry-after-ms"}
LIMIT_TYPE = "X-Metronome-Rate-Limit-Type"


def statuses(sim: MetronomeSimulator, count: int, headers: dict[str, str] | None = None) -> list[int]:
    return [get(sim, "/v1/customers", headers=headers).status_code for _ in range(count)]


def test_requests_beyond_the_burst_get_a_bare_429() -> None:
    with MetronomeSimulator(rate_limit=RateLimit(rate=SLOW, burst=3)) as sim:
        answers = [get(sim, "/v1/customers") for _ in range(4)]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.json() == {"message": "Too Many Requests"}
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.headers[LIMIT_TYPE] == "client"  # the organisation's limit
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


def customer_statuses(sim: MetronomeSimulator, customer_id: str, count: int) -> list[int]:
    return [get(sim, costs_path(customer_id), **FEBRUARY).status_code for _ in range(count)]


def test_the_organisation_has_a_bucket_per_endpoint() -> None:
    with MetronomeSimulator(rate_limit=RateLimit(rate=SLOW, burst=1)) as sim:
        customer_id = sim.active_customer_ids[0]
        listing = statuses(sim, 2)
        costs = customer_statuses(sim, customer_id, 2)
        breakdowns = [get(sim, breakdowns_path(customer_id), **FEBRUARY).status_code for _ in range(2)]

    assert listing == costs == breakdowns == [200, 429]


def test_a_customer_limit_refuses_only_that_customer_naming_it() -> None:
    with MetronomeSimulator(unique_metric_customers=0) as sim:
        busy, other = sim.active_customer_ids[:2]
        sim.set_customer_rate_limit(busy, RateLimit(rate=0.01, burst=2, retry_after="seconds"))

        busy_answers = [get(sim, costs_path(busy), **FEBRUARY) for _ in range(3)]
        # Its other endpoints share its bucket; other customers and the listing have none.
        assert get(sim, breakdowns_path(busy), **FEBRUARY).status_code == 429
        assert customer_statuses(sim, other, 5) == [200] * 5
        assert statuses(sim, 5) == [200] * 5

    assert [answer.status_code for answer in busy_answers] == [200, 200, 429]
    refused = busy_answers[-1]
    assert refused.headers[LIMIT_TYPE] == "customer"
    assert 90 <= int(refused.headers["Retry-After"]) <= 100  # 100 s to earn one request at 0.01/s
    assert sim.throttled_count == 2
    assert sim.customer_rate_limits == {busy: RateLimit(rate=0.01, burst=2, retry_after="seconds")}


def test_every_customer_without_its_own_limit_gets_the_default() -> None:
    limits = {EVERY_CUSTOMER: RateLimit(rate=SLOW, burst=1)}
    with MetronomeSimulator(unique_metric_customers=0, customer_rate_limits=limits) as sim:
        first, second, roomy = sim.active_customer_ids[:3]
        sim.set_customer_rate_limit(roomy.upper(), RateLimit(rate=SLOW, burst=3))

        assert customer_statuses(sim, first, 2) == [200, 429]
        assert customer_statuses(sim, second, 2) == [200, 429]
        assert customer_statuses(sim, roomy, 4) == [200, 200, 200, 429]

        # Without its own limit a customer falls back to the default; without that, to none.
        sim.set_customer_rate_limit(roomy, None)
        assert customer_statuses(sim, roomy, 1) == [429]
        sim.set_customer_rate_limit(EVERY_CUSTOMER, None)
        assert customer_statuses(sim, first, 3) == [200] * 3


def test_a_request_refused_by_one_limit_spends_from_neither() -> None:
    with MetronomeSimulator(unique_metric_customers=0, rate_limit=RateLimit(rate=SLOW, burst=2)) as sim:
        busy, other = sim.active_customer_ids[:2]
        sim.set_customer_rate_limit(busy, RateLimit(rate=SLOW, burst=1))

        answers = [get(sim, costs_path(busy), **FEBRUARY) for _ in range(3)]
        # The refused requests of the busy customer left the organisation's second request.
        assert customer_statuses(sim, other, 1) == [200]
        both_empty = get(sim, costs_path(busy), **FEBRUARY)

    assert [answer.status_code for answer in answers] == [200, 429, 429]
    assert {answer.headers[LIMIT_TYPE] for answer in answers[1:]} == {"customer"}
    assert (both_empty.status_code, both_empty.headers[LIMIT_TYPE]) == (429, "client")


def test_customer_rate_limits_from_the_command_line(tmp_path: Path) -> None:
    with MetronomeSimulator() as probe:
        busy, other = probe.active_customer_ids[:2]
    arguments = ("--customer-rate-limit", f"{busy}=0.001:2", "--retry-after", "ms")
    with standalone_simulator(tmp_path, *arguments) as standalone:

        def fetch(customer_id: str) -> requests.Response:
            url = standalone.url + costs_path(customer_id)
            return requests.get(url, params=FEBRUARY, headers=AUTH, timeout=10)

        answers = [fetch(busy) for _ in range(3)]
        others = [fetch(other).status_code for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[-1].headers[LIMIT_TYPE] == "customer"
    assert int(answers[-1].headers["retry-after-ms"]) > 900_000
    assert others == [200] * 3
