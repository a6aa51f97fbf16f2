"""The rate controller: 429 is the account's rate limit, waited out together, never a failure while progress is made."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pytest_mock import MockerFixture

from airflow_provider_metronome.exceptions import (
    MetronomeNotFoundError,
    MetronomeRateLimitError,
    MetronomeTransientError,
)
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.hooks.rate import (
    WINDOW_PATIENCE,
    RateController,
    WaitCancelled,
    stop_waiting_on,
)
from airflow_provider_metronome.hooks.retry import RetryPolicy
from airflow_provider_metronome.testing import DEFAULT_TOKEN, Fault, MetronomeSimulator, RateLimit
from airflow_provider_metronome.testing.rate_limit import RateLimiter
from tests.support.runs import connection_json

CUSTOMERS = "/v1/customers"


class FakeClock:
    """A clock that moves only when the controller sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def controller(clock: FakeClock, **kwargs: Any) -> RateController:
    return RateController(clock=clock, sleep=clock.sleep, **kwargs)


@pytest.fixture
def connect(simulator: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch) -> Callable[..., MetronomeHook]:
    def make(conn_id: str = "metronome_default", **extra: Any) -> MetronomeHook:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(simulator.url, DEFAULT_TOKEN, **extra)
        )
        return MetronomeHook(conn_id)

    return make


# -- the controller on its own clock ---------------------------------------------------------------


def test_no_delay_at_all_until_the_first_429() -> None:
    clock = FakeClock()
    rate = controller(clock)

    for _ in range(1000):
        rate.acquire()
        rate.on_success()

    assert clock.sleeps == []
    assert rate.snapshot().rate is None


def test_until_the_first_429_requests_in_flight_grow_like_tcp_slow_start() -> None:
    clock = FakeClock()
    rate = controller(clock)

    for _ in range(2):  # two at once
        rate.acquire()
    assert clock.sleeps == []
    third = rate.acquire()  # the window is full: it waits, but no longer than the patience
    assert third == pytest.approx(1000.0 + WINDOW_PATIENCE)
    rate.on_success()
    rate.on_failure()  # an error answer is an answer too: no request hangs on a server that fails
    clock.sleeps.clear()
    # Two answers: the window holds 2 + 2 * 2 requests, one of them still in flight.
    for _ in range(5):
        rate.acquire()
    assert clock.sleeps == []
    rate.acquire()
    assert clock.sleeps != []


def test_a_known_budget_is_paced_without_a_slow_start() -> None:
    clock = FakeClock()
    rate = controller(clock, max_rate=100.0)

    starts = [rate.acquire() for _ in range(6)]  # nothing answered: only the budget's pacing spaces them

    assert max(starts) - min(starts) == pytest.approx(5 / 100.0)


def test_a_429_cuts_the_rate_below_what_succeeded_and_pauses_everyone() -> None:
    clock = FakeClock()
    rate = controller(clock)
    for _ in range(20):  # 10 successes a second for two seconds
        sent = rate.acquire()
        rate.on_success()
        clock.now += 0.1

    rate.on_throttled(sent, requested_wait=None)

    paced = rate.snapshot().rate
    assert paced is not None
    assert 7.5 <= paced <= 8.5  # 80 % of the ~10/s that succeeded
    started = [rate.acquire() for _ in range(5)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert all(gap >= 1 / paced - 1e-9 for gap in gaps)


def test_one_unlucky_measure_does_not_crush_the_rate() -> None:
    # Sharing a budget, a process can get few of its first requests in by luck alone: one cut must not
    # take it to a fraction of what identical processes keep.
    clock = FakeClock()
    rate = controller(clock)
    for index in range(20):  # 10 requests a second for two seconds, only two of them succeeding
        sent = rate.acquire()
        if index % 10 == 0:
            rate.on_success()
        clock.now += 0.1
    rate.on_throttled(sent, requested_wait=None)
    first = current(rate)
    assert first >= 0.5 * 10  # below what was sent, not the 1/s that got in

    clock.now += 1.0
    rate.on_throttled(rate.acquire(), requested_wait=None)

    assert current(rate) < first  # each 429 sent since the last cut takes off more


def start_senders(
    rate: RateController, count: int, until: threading.Event | None = None
) -> tuple[list[threading.Thread], list[float]]:
    """``count`` threads, each taking one start (or every start it can until ``until`` is set); their starts."""
    starts: list[float] = []
    lock = threading.Lock()

    def send() -> None:
        with stop_waiting_on(until or threading.Event()), contextlib.suppress(WaitCancelled):
            while True:
                started = rate.acquire()
                with lock:
                    starts.append(started)
                if until is None:
                    return

    senders = [threading.Thread(target=send) for _ in range(count)]
    for sender in senders:
        sender.start()
    return senders, starts


def test_requests_already_waiting_follow_a_rate_changed_meanwhile() -> None:
    rate = RateController(max_rate=20.0)  # real threads on the real clock: four requests waiting at once
    rate.acquire()
    senders, starts = start_senders(rate, 4)
    rate.configure(max_rate=4.0, give_up_after=60.0)  # e.g. a cut: every waiting request is paced anew
    for sender in senders:
        sender.join(timeout=30)

    # Reserved at 20 requests/s they would all have started within 0.2 s; at 4/s, at least two
    # intervals of 0.25 s pass between the first and the last of them.
    assert max(starts) - min(starts) >= 0.5 - 1e-3


def test_a_requested_wait_pauses_every_sender_for_that_long() -> None:
    clock = FakeClock()
    rate = controller(clock)
    sent = rate.acquire()
    rate.on_success()

    rate.on_throttled(sent, requested_wait=3.0)

    assert rate.acquire() >= sent + 3.0


def test_in_flight_429s_cut_the_rate_once() -> None:
    clock = FakeClock()
    rate = controller(clock)
    sent = [rate.acquire() for _ in range(8)]
    for _ in range(20):
        rate.on_success()
    clock.now += 2

    for moment in sent:
        rate.on_throttled(moment, requested_wait=None)

    first_cut = rate.snapshot().rate
    assert first_cut is not None
    assert first_cut > 1.0  # one cut from ~10/s, not eight
    assert rate.snapshot().throttled == 8


def test_success_lets_the_rate_grow_back_and_a_known_budget_is_a_ceiling() -> None:
    clock = FakeClock()
    rate = controller(clock, max_rate=5.0)
    assert rate.snapshot().rate == 5.0
    sent = rate.acquire()
    rate.on_throttled(sent, requested_wait=None)
    cut = rate.snapshot().rate
    assert cut is not None
    assert cut < 5.0

    for _ in range(500):
        rate.acquire()
        rate.on_success()

    assert rate.snapshot().rate == 5.0


def test_unknown_budget_goes_back_to_unpaced_after_long_success() -> None:
    clock = FakeClock()
    rate = controller(clock)
    rate.on_success()
    rate.on_throttled(rate.acquire(), requested_wait=None)
    assert rate.snapshot().rate is not None
    throttled_at = clock.now

    # Growth is per second of successes, not per success: two minutes of them, however many.
    while clock.now - throttled_at < 120 and rate.snapshot().rate is not None:
        rate.acquire()
        rate.on_success()

    assert rate.snapshot().rate is None


# -- the hook against the simulator ----------------------------------------------------------------


def test_error_answers_open_the_slow_start_window_like_successes(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    simulator.latency = 0.15  # more than the slow start's patience, less than twice it
    hook = connect()

    def fetch_unknown(count: int) -> list[float]:
        """``count`` unknown customers fetched at once (each answered 404); when their requests arrived."""
        before = len(simulator.requests)

        def fetch(customer_id: str) -> None:
            with contextlib.suppress(MetronomeNotFoundError):
                costs_of(hook, customer_id)

        with ThreadPoolExecutor(count) as pool:
            list(pool.map(fetch, [str(uuid.uuid4()) for _ in range(count)]))
        return [record.started_at for record in simulator.requests[before:]]

    first = fetch_unknown(8)
    # Before the first answer: the window's two, and one more once the patience ran out.
    assert sum(arrived < min(first) + simulator.latency for arrived in first) <= 3
    # Eight 404s were eight answers: the window now holds 2 + 2 * 8, and the next eight start together.
    second = fetch_unknown(8)
    assert all(arrived < min(second) + simulator.latency for arrived in second)


def test_429s_do_not_spend_the_failure_retries(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook], mocker: MockerFixture
) -> None:
    waits = mocker.patch.object(RetryPolicy, "sleep")
    simulator.inject(Fault.status(429, headers={"retry-after-ms": "1"}), path=CUSTOMERS, times=5)
    hook = connect(max_retries=0)

    assert len(list(hook.iter_customers())) == len(simulator.active_customer_ids)

    assert len(simulator.requests) == 6
    assert (hook.stats.sent, hook.stats.throttled) == (6, 5)
    waits.assert_not_called()  # no failure-retry wait was spent


def test_a_5xx_storm_still_fails_after_the_retries_even_between_429s(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook], mocker: MockerFixture
) -> None:
    mocker.patch.object(RetryPolicy, "sleep")
    simulator.inject(Fault.status(429, headers={"retry-after-ms": "1"}), path=CUSTOMERS, times=2)
    simulator.inject(Fault.status(503), path=CUSTOMERS, times=None)

    with pytest.raises(MetronomeTransientError) as err:
        list(connect(max_retries=2).iter_customers())

    assert err.value.status_code == 503
    assert len(simulator.requests) == 5  # two 429s, then the first attempt and two retries


def test_retry_after_pauses_every_worker_of_the_account(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    simulator.inject(Fault.status(429, headers={"retry-after-ms": "500"}), path=CUSTOMERS, times=1)
    hook = connect()
    first = threading.Thread(target=lambda: list(hook.iter_customers()))
    first.start()
    deadline = time.monotonic() + 30
    while hook.stats.throttled == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert hook.stats.throttled == 1
    # Hooks of other tasks on the same connection, starting while the first one waits.
    others = [connect() for _ in range(3)]
    threads = [
        threading.Thread(target=lambda worker=worker: list(worker.iter_customers())) for worker in others
    ]
    for thread in [*threads]:
        thread.start()
    for thread in [first, *threads]:
        thread.join()

    throttled, *after = simulator.requests
    assert len(after) == 4
    assert all(record.started_at - throttled.started_at >= 0.5 for record in after)
    assert all(worker.rate_controller is hook.rate_controller for worker in others)


def test_throttled_longer_than_the_timeout_fails_naming_the_rate_limit(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    simulator.inject(Fault.status(429), path=CUSTOMERS, times=None)

    with pytest.raises(MetronomeRateLimitError) as err:
        list(connect(rate_limit_timeout=1).iter_customers())

    message = str(err.value)
    assert "rate limit answered 429 to every request" in message
    assert "requests_per_second" in message
    assert "rate_limit_timeout" in message
    assert err.value.retryable


def test_one_controller_per_connection_and_base_url(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, again = connect("metronome_a").rate_controller, connect("metronome_a").rate_controller
    other_conn = connect("metronome_b").rate_controller
    with MetronomeSimulator() as elsewhere:
        monkeypatch.setenv("AIRFLOW_CONN_METRONOME_A", connection_json(elsewhere.url, DEFAULT_TOKEN))
        other_url = MetronomeHook("metronome_a").rate_controller

    assert first is again
    assert first is not other_conn
    assert first is not other_url


def test_the_account_budget_is_a_connection_extra(connect: Callable[..., MetronomeHook]) -> None:
    hook = connect("metronome_budget", requests_per_second=4, rate_limit_timeout=60)

    assert hook.rate_snapshot().rate == 4.0
    assert hook.rate_controller.give_up_after == 60.0


# -- growth in time, so that processes sharing a budget converge ------------------------------------


def throttled_at(clock: FakeClock, per_second: float) -> RateController:
    """A controller just cut after two seconds of ``per_second`` successes."""
    rate = controller(clock)
    sent = 0.0
    for _ in range(int(2 * per_second)):
        sent = rate.acquire()
        rate.on_success()
        clock.now += 1 / per_second
    rate.on_throttled(sent, requested_wait=None)
    return rate


def succeed_for(clock: FakeClock, rate: RateController, seconds: float, every: float) -> None:
    """Successes every ``every`` seconds for ``seconds``, at most as fast as the controller lets them start."""
    end = clock.now + seconds
    while clock.now < end:
        rate.acquire()
        rate.on_success()
        clock.now += every


def current(rate: RateController) -> float:
    paced = rate.snapshot().rate
    assert paced is not None
    return paced


def test_the_rate_regrows_per_second_of_successes_not_per_success() -> None:
    few_clock, many_clock = FakeClock(), FakeClock()
    few, many = throttled_at(few_clock, 4), throttled_at(many_clock, 4)

    succeed_for(few_clock, few, 4.0, every=1.0)  # 4 successes
    succeed_for(many_clock, many, 4.0, every=0.05)  # as many as the pacing lets start: a few dozen

    assert current(few) == pytest.approx(current(many), rel=0.05)


def test_a_freed_share_is_taken_up_within_seconds() -> None:
    clock = FakeClock()
    rate = throttled_at(clock, 2)  # one of four processes sharing 8 requests/s

    succeed_for(clock, rate, 15.0, every=0.0)  # the others have finished: nothing is throttled

    assert current(rate) >= 8.0


def test_a_share_cut_to_the_slowest_rate_regrows_in_seconds_too() -> None:
    # Paced at one request every two seconds, its successes come two seconds apart: every second of
    # them counts towards regrowing, not one second per success.
    clock = FakeClock()
    rate = throttled_at(clock, 0.5)
    assert current(rate) <= 0.5

    succeed_for(clock, rate, 15.0, every=0.0)

    assert current(rate) >= 8.0


def test_a_small_share_gains_more_than_a_large_one_so_shares_converge() -> None:
    small_clock, large_clock = FakeClock(), FakeClock()
    small, large = throttled_at(small_clock, 1), throttled_at(large_clock, 4)
    before = current(large) / current(small)

    for clock, rate in ((small_clock, small), (large_clock, large)):
        succeed_for(clock, rate, 10.0, every=0.0)

    assert current(large) / current(small) < before


# -- customer-scoped 429s against the simulator -----------------------------------------------------

CUSTOMER_LIMITED = {"X-Metronome-Rate-Limit-Type": "customer"}
CLIENT_LIMITED = {"X-Metronome-Rate-Limit-Type": "client"}


def costs_of(hook: MetronomeHook, customer_id: str) -> list[Any]:
    return list(hook.iter_costs(customer_id, "2024-01-01", "2024-01-03"))


def test_a_customer_scoped_429_delays_only_that_customer(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    busy, other = simulator.active_customer_ids[:2]
    # Its own limit allows one request every half second: each fetch of it after the first waits.
    simulator.set_customer_rate_limit(busy, RateLimit(rate=2, burst=1))
    hook = connect()
    busy_thread = threading.Thread(target=lambda: [costs_of(hook, busy) for _ in range(3)])
    busy_thread.start()
    deadline = time.monotonic() + 30
    while hook.stats.throttled == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    for _ in range(10):
        costs_of(hook, other)
    busy_thread.join()

    busy_requests = simulator.requests_for(f"/customers/{busy}/")
    other_requests = simulator.requests_for(f"/customers/{other}/")
    assert [record.status for record in busy_requests].count(200) == 3
    first_429 = next(record for record in busy_requests if record.status == 429)
    retried = busy_requests[busy_requests.index(first_429) + 1]
    # The other customer went on at the account's pace while the busy one waited its turn.
    assert [record.status for record in other_requests] == [200] * 10
    assert any(first_429.started_at < record.started_at < retried.started_at for record in other_requests)
    # The account's rate was not cut: it is still unpaced.
    assert hook.rate_snapshot().rate is None
    assert hook.rate_snapshot().throttled == hook.stats.throttled > 0


def test_a_client_scoped_429_pauses_and_cuts_the_whole_account(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    busy, other = simulator.active_customer_ids[:2]
    simulator.inject(Fault.status(429, headers={**CLIENT_LIMITED, "retry-after-ms": "500"}), path=busy)
    hook = connect()

    costs_of(hook, busy)
    costs_of(hook, other)

    throttled, retried = simulator.requests_for(f"/customers/{busy}/")
    (later,) = simulator.requests_for(f"/customers/{other}/")
    assert (throttled.status, retried.status, later.status) == (429, 200, 200)
    assert later.started_at - throttled.started_at >= 0.5  # the other customer waited too
    assert hook.rate_snapshot().rate is not None  # and the account is paced from now on


def test_a_customer_header_on_a_path_of_no_customer_pauses_the_account(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    simulator.inject(Fault.status(429, headers=CUSTOMER_LIMITED), path=CUSTOMERS, times=1)
    hook = connect()

    list(hook.iter_customers())

    assert hook.rate_snapshot().rate is not None


def test_a_customer_its_own_limit_refuses_for_too_long_fails_naming_that_limit(
    simulator: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    busy, other = simulator.active_customer_ids[:2]
    simulator.set_customer_rate_limit(busy, RateLimit(rate=0.001, burst=1))
    hook = connect(rate_limit_timeout=1)
    costs_of(hook, busy)  # its one request

    with pytest.raises(MetronomeRateLimitError) as err:
        costs_of(hook, busy)

    message = str(err.value)
    assert "customer's own rate limit" in message
    assert DEFAULT_TOKEN not in message
    assert costs_of(hook, other)  # the others were never held back
    assert hook.rate_snapshot().rate is None


def test_a_held_back_customer_is_spaced_close_to_what_its_own_limit_allows() -> None:
    # The simulator's token bucket on the same fake clock: one request a second for this customer.
    clock = FakeClock()
    limits = RateLimiter(None, clock=clock, customer_limits={"busy": RateLimit(rate=1.0)})
    rate = controller(clock)
    allowed: list[float] = []
    while len(allowed) < 30:
        sent = rate.acquire("busy")
        clock.now += 0.02  # the request's round trip
        refusal = limits.admit(DEFAULT_TOKEN, "costs", "busy")
        if refusal is None:
            allowed.append(sent)
            rate.on_success("busy", sent)
        else:
            rate.on_throttled(sent, requested_wait=None, customer="busy")

    spacings = [later - earlier for earlier, later in itertools.pairwise(allowed)]
    # Once its spacing is found, the customer gets within a few percent of its limit's pace...
    assert sum(spacings[-20:]) / 20 <= 1.05
    # ...without turning every other request into a 429.
    assert rate.snapshot().throttled <= len(allowed) // 2
    # The account was never paced for it.
    assert rate.snapshot().rate is None


def others_started_before_its_turn(rate: RateController, wait: float) -> int:
    """Six workers of other customers take every start they can while a held-back customer waits ``wait``:
    how many of them start after its time has come and before it does."""
    done = threading.Event()
    senders, starts = start_senders(rate, 6, until=done)
    sent = rate.acquire()
    due = time.monotonic() + wait
    rate.on_throttled(sent, requested_wait=wait, customer="busy")
    started = rate.acquire("busy")
    done.set()
    for sender in senders:
        sender.join(timeout=30)
    return sum(due <= other < started for other in starts)


def test_a_held_back_customer_takes_the_account_s_next_start_once_its_time_comes() -> None:
    rate = RateController(max_rate=10.0)  # real threads on the real clock
    # Racing six others for each start, it would wait for several of them; it waits at most for the
    # start already due when its own time came.
    assert all(others_started_before_its_turn(rate, wait=0.3) <= 2 for _ in range(4))
