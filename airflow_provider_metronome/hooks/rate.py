"""The rate controller: how fast requests to one Metronome account may start.

Metronome limits each account to a budget it does not publish (a few requests a second in the wild)
and answers a bare 429 beyond it. Every hook on the same connection and base URL in a process (the
operator's workers, the sensor's and the trigger's checks) shares one :class:`RateController`, in the
spirit of the AWS SDKs' adaptive retry mode and TCP's AIMD:

- until the first 429 it adds no delay at all;
- a 429 pauses every sender (for the server's ``Retry-After`` when it gives one, else one request
  interval, doubling while 429s follow one another) and cuts the rate to 90 % of the rate that
  actually succeeded over the last seconds (of the rate sent, while there is no second of
  successes to measure), once per round of requests;
- each success lets the rate grow: by 5 % while it is well below the rate last throttled or nothing
  was throttled for a few seconds, else by 1 %, so the controller regains a cut quickly and keeps
  probing for the budget; it goes back to unpaced once it has grown far past anything throttled;
- a known budget (the connection's ``requests_per_second``) is a ceiling it never exceeds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

CUT_FACTOR = 0.9
GROWTH_PER_SUCCESS = 1.01
RECOVERY_PER_SUCCESS = 1.05
# One request every two seconds: lower, a budget that frees up again takes minutes to regain.
MIN_RATE = 0.5
# A rate that has not been throttled for this long grows back at the recovery pace.
RECOVERY_AFTER = 5.0
# Far above any rate a limit was seen at, pacing is pointless: go back to sending freely.
UNPACED_ABOVE = 1000.0
# Successes over this many seconds tell the rate the account actually grants.
MEASURE_SECONDS = 5.0
MAX_PAUSE = 8.0
DEFAULT_GIVE_UP_AFTER = 300.0


# Set by whoever runs requests in a thread and may stop caring about them (a run that failed or was
# killed): a wait for the controller then ends at once instead of after its pause or pacing.
_stop_waiting: ContextVar[threading.Event | None] = ContextVar("metronome_stop_waiting", default=None)


class WaitCancelled(Exception):
    """The request's caller stopped waiting for it: its run is over."""


@contextmanager
def stop_waiting_on(event: threading.Event) -> Iterator[None]:
    """Make every wait for a controller in this block end, with :class:`WaitCancelled`, once ``event`` is set."""
    token = _stop_waiting.set(event)
    try:
        yield
    finally:
        _stop_waiting.reset(token)


@dataclass(frozen=True)
class RateSnapshot:
    """What the controller is doing, for progress lines."""

    rate: float | None
    throttled: int


class RateController:
    """Spaces request starts across threads, and adapts the spacing to the server's 429 answers.

    :param max_rate: a ceiling in requests per second that is never exceeded (None: unknown).
    :param give_up_after: seconds without any success, while throttled, after which a request fails.
    :param adaptive: False for a plain fixed cap (a task's own ``requests_per_second``).
    """

    def __init__(
        self,
        max_rate: float | None = None,
        *,
        give_up_after: float = DEFAULT_GIVE_UP_AFTER,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep
        self.adaptive = adaptive
        self.max_rate = max_rate
        self.give_up_after = give_up_after
        self._rate = max_rate
        self._next_start = 0.0
        self._paused_until = 0.0
        self._last_cut = -1.0
        self._streak = 0
        self._last_success = clock()
        self._successes: deque[float] = deque()
        self._sent: deque[float] = deque()
        self._throttled_at_rate = 0.0
        self.throttled = 0

    def configure(self, max_rate: float | None, give_up_after: float) -> None:
        """Apply the connection's current settings (a budget lowered in the connection takes effect)."""
        with self._lock:
            self.max_rate = max_rate
            self.give_up_after = give_up_after
            if max_rate is not None and (self._rate is None or self._rate > max_rate):
                self._rate = max_rate

    def snapshot(self) -> RateSnapshot:
        with self._lock:
            return RateSnapshot(self._rate, self.throttled)

    def acquire(self) -> float:
        """Block until a request may start; returns the moment it starts (the controller's clock).

        :raises WaitCancelled: the caller's stop event (:func:`stop_waiting_on`) was set meanwhile.
        """
        stop = _stop_waiting.get()
        while True:
            if stop is not None and stop.is_set():
                raise WaitCancelled
            with self._lock:
                now = self._clock()
                if now >= self._paused_until:
                    if self.adaptive:
                        self._sent.append(now)
                    if self._rate is None:
                        return now
                    start = max(now, self._next_start)
                    self._next_start = start + 1.0 / self._rate
                    if start <= now:
                        return now
                    wait, reserved = start - now, True
                else:
                    wait, reserved = self._paused_until - now, False
            if stop is None:
                self._sleep(wait)
            elif stop.wait(wait):
                raise WaitCancelled
            if reserved and self._clock() >= self._paused_until:
                return self._clock()

    def on_success(self) -> None:
        if not self.adaptive:
            return
        with self._lock:
            now = self._clock()
            self._last_success = now
            self._streak = 0
            self._successes.append(now)
            self._forget_before(now - MEASURE_SECONDS)
            if self._rate is None:
                return
            recovering = (
                self._rate < self._throttled_at_rate * CUT_FACTOR or now - self._last_cut > RECOVERY_AFTER
            )
            grown = self._rate * (RECOVERY_PER_SUCCESS if recovering else GROWTH_PER_SUCCESS)
            if self.max_rate is not None:
                self._rate = min(grown, self.max_rate)
            else:
                self._rate = None if grown > UNPACED_ABOVE else grown

    def on_throttled(self, sent_at: float, requested_wait: float | None) -> None:
        """A request sent at ``sent_at`` was answered 429: pause everyone, and cut the rate once a round."""
        with self._lock:
            now = self._clock()
            self.throttled += 1
            self._streak += 1
            # Requests already in flight when the rate was cut say nothing about the new rate.
            if sent_at >= self._last_cut:
                self._cut(now)
            interval = 1.0 / self._rate if self._rate else 0.0
            pause = requested_wait if requested_wait is not None else interval * 2 ** (self._streak - 1)
            self._paused_until = max(self._paused_until, now + min(pause, MAX_PAUSE))

    def seconds_without_success(self, since: float) -> float:
        """Seconds since the last success of any sender, or since ``since`` if that is later."""
        with self._lock:
            return self._clock() - max(self._last_success, since)

    def _cut(self, now: float) -> None:
        self._forget_before(now - MEASURE_SECONDS)
        sent = _per_second(self._sent, now)
        current = self._rate if self._rate is not None else sent
        # Successes tell the budget once they span a second; before that, a burst is no measure.
        measured = bool(self._successes) and now - self._successes[0] >= 1.0
        estimate = _per_second(self._successes, now) if measured else current
        self._throttled_at_rate = min(current, estimate)
        rate = max(self._throttled_at_rate * CUT_FACTOR, MIN_RATE)
        self._rate = min(rate, self.max_rate) if self.max_rate is not None else rate
        self._last_cut = now

    def _forget_before(self, moment: float) -> None:
        for times in (self._successes, self._sent):
            while times and times[0] < moment:
                times.popleft()


def _per_second(times: deque[float], now: float) -> float:
    """Events per second over the span they cover (at least one second, so a burst is not a rate)."""
    if not times:
        return 0.0
    return len(times) / min(max(now - times[0], 1.0), MEASURE_SECONDS)


_registry: dict[tuple[str, str], RateController] = {}
_registry_lock = threading.Lock()


def account_controller(
    conn_id: str, base_url: str, *, max_rate: float | None, give_up_after: float
) -> RateController:
    """The process's one controller for the account behind ``conn_id`` at ``base_url``."""
    key = (conn_id, base_url)
    with _registry_lock:
        controller = _registry.get(key)
        if controller is None:
            controller = _registry[key] = RateController(max_rate, give_up_after=give_up_after)
            return controller
    controller.configure(max_rate, give_up_after)
    return controller
