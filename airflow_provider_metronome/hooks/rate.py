"""The rate controller: how fast requests to one Metronome account may start.

Metronome limits each account to a budget it does not publish (a few requests a second in the wild)
and answers a bare 429 beyond it. Every hook on the same connection and base URL in a process (the
operator's workers, the sensor's and the trigger's checks) shares one :class:`RateController`, in the
spirit of the AWS SDKs' adaptive retry mode and TCP's AIMD:

- until the first 429 it adds no delay but TCP's slow start: at first two requests at once, then two
  more for every answer, so that in a few round trips every worker is busy, and processes that start
  together meet the limit with a few requests each in flight rather than all their workers (a start
  waits at most a tenth of a second for it: a slow answer holds no one back for longer);
- a 429 of the account's limit (``X-Metronome-Rate-Limit-Type: client``, or none) pauses every sender
  (for the server's ``Retry-After`` when it gives one, else one request interval, doubling while rounds
  of 429s follow one another, up to 0.75 s) and cuts the rate to 80 % of the rate that actually
  succeeded per second of sending over the last seconds (65 % when that is clearly less than the time
  before: another process is taking a bigger share), once per round of requests, and never below 70 % of
  the rate it was sending at: a few seconds' successes are luck when processes share a budget;
- a request waiting for its turn is paced afresh at every look, from the latest start and the current
  rate: none holds a start reserved at an older rate, so a cut or a regrown rate applies to every
  waiting request at once;
- a 429 of a customer's own limit (``customer``) holds back that customer's requests alone, spaced by
  what its limit allows: searched from its 429s (doubling until one succeeds, then halving the gap
  between the spacings refused and allowed), and, once its time has come, taking the account's next
  start ahead of other customers' requests; the account's pace and rate stay as they are;
- after a cut the rate grows with the seconds of successes, not their number (every second of them,
  however slow the pacing): back to where it was throttled in nine seconds, then on by the same
  requests/s per second in every process, faster the longer nothing is throttled. Unequal shares of
  processes sharing a budget therefore move towards each other (the cuts are in proportion, the
  growth is not), and a share another process leaves is taken up in seconds (fifteen at most);
  the controller goes back to unpaced once it has grown far past anything throttled;
- a known budget (the connection's ``requests_per_second``) is a ceiling it never exceeds.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

CUT_FACTOR = 0.8
# One cut takes the rate at most this far below its current rate, whatever was measured: a few
# seconds' successes are luck when processes share a budget (who got the first requests in), and
# processes with the same work come down together instead of keeping the shares of their first second.
MEASURED_AT_LEAST = 0.7
# Throttled at less than this share of the rate it was throttled at the time before, a process is
# losing ground to another one that takes a bigger share...
LOSING_BELOW = 0.95
# ...and is cut deeper, coming back to a little less than before: the bigger share yields sooner.
LOSING_CUT_FACTOR = 0.65
# One request every two seconds: lower, a budget that frees up again takes minutes to regain.
MIN_RATE = 0.5
# After a cut the rate regrows to the rate it was throttled at in this many seconds of successes,
# whatever the rate: every process sharing a budget comes back at the same pace, and probes it again
# only this rarely, so that several processes together keep their 429s near a tenth of their requests.
REGROW_SECONDS = 9.0
# Past that rate, the probe for more adds this many requests/s per second squared: the same for
# every process whatever its rate, so that unequal shares converge (a probe in proportion to the rate
# would keep their ratio), and accelerating, so that a share another process left is taken up within
# seconds.
PROBE_ACCELERATION = 0.3
# Every second of successes adds this many requests/s besides, the same for every process: the
# additive increase that makes unequal shares converge (cuts are in proportion to the rate).
ADDITIVE_STEP = 0.08
# A pause between successes (an idle account) counts at most this long towards regrowing, or two
# request intervals when paced slower than that.
MAX_GROWTH_STEP = 1.0
# Far above any rate a limit was seen at, pacing is pointless: go back to sending freely.
UNPACED_ABOVE = 1000.0
# Successes over this many seconds tell the rate the account actually grants.
MEASURE_SECONDS = 5.0
MAX_PAUSE = 8.0
# A pause of its own (no Retry-After) doubles up to this: longer, a process sharing the budget with
# others hands them its share while it waits, and the cut rate already keeps the rest away.
MAX_BACKOFF_PAUSE = 0.75
# Until the first 429 of the account's limit (with no known budget), requests in flight at once start
# at this many and grow by this many for every answer (TCP's slow start: a few round trips to reach
# any number of workers)...
START_WINDOW = 2
WINDOW_GROWTH = 2
# ...and a start waits at most this long after the latest one for the window to open, looking again
# this often: a slow answer does not hold the other workers back for longer.
WINDOW_PATIENCE = 0.1
WINDOW_LOOK_EVERY = 0.005
# A customer's first 429 of its own limit holds its requests back this long after it (then doubling,
# from that first 429, until one succeeds).
CUSTOMER_FIRST_BACKOFF = 0.25
# Once a held-back customer's requests succeed, its spacing (between the starts of its successful
# requests) is searched between the longest spacing refused and the shortest allowed: halfway, until
# they are this close (a share of the allowed one); then the allowed one is kept.
CUSTOMER_SPACING_PRECISION = 0.03
# The first spacing a held-back customer is allowed is searched down from, to this share of it first:
# it can be well above what its limit allows (the doubling from its first 429 overshoots).
CUSTOMER_FIRST_GUESS = 0.5
# A spacing allowed before and refused now (its limit fell, or another process spends it too): the
# search starts again this much above it.
CUSTOMER_SPACING_GROWTH = 1.25
# Each success lowers the refused spacing this much: a limit that rises is found again.
CUSTOMER_RECOVERY = 0.995
# Spaced by less than this, or this many successes without a 429, a customer is no longer held back.
CUSTOMER_FORGET_BELOW = 0.01
CUSTOMER_FORGET_AFTER = 50
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


@dataclass
class _CustomerBackoff:
    """How one customer's requests wait after its own limit (a customer-scoped 429) answered them.

    Its requests start no closer together than ``interval``, counted from the start of its latest
    successful request (``anchor``). The interval is searched: doubling from the first 429 until a
    request succeeds, then halfway between the spacings seen refused and allowed.
    """

    since: float
    """When it last succeeded (or was first held back): how long it has been refused."""
    anchor: float
    """The start of its latest successful request, or of its first 429 while none has succeeded."""
    not_before: float
    interval: float = 0.0
    succeeded: bool = False
    """Whether ``anchor`` is a success: spacings from it tell what its limit allows."""
    refused: float = 0.0
    """The longest spacing from a success that its limit refused (lowered by each success)."""
    allowed: float | None = None
    """The shortest spacing from a success that its limit allowed."""
    successes: int = 0
    """Successes since its latest 429."""

    def reserve(self, start: float) -> None:
        """A request of it starts at ``start``: the next one waits its interval (concurrent requests too)."""
        self.not_before = max(self.not_before, start + self.interval)

    def refuse(self, sent_at: float, now: float) -> None:
        spacing = sent_at - self.anchor
        if not self.succeeded:
            self.interval = max(spacing * 2, CUSTOMER_FIRST_BACKOFF)
        elif self.allowed is not None and spacing < self.allowed:
            self.refused = max(self.refused, spacing)
            self.interval = self._searched(self.allowed)
        else:
            self.allowed, self.refused = None, spacing
            self.interval = spacing * CUSTOMER_SPACING_GROWTH
        self.interval = min(self.interval, MAX_PAUSE)
        self.successes = 0
        self.not_before = max(now, self.anchor + self.interval)

    def allow(self, sent_at: float, now: float) -> None:
        if self.succeeded:
            spacing = sent_at - self.anchor
            if self.allowed is None:
                # Its first spacing allowed: its limit allows at least that much; search down from there.
                self.allowed, self.refused = spacing, max(self.refused, spacing * CUSTOMER_FIRST_GUESS)
            self.allowed = min(self.allowed, spacing)
            self.refused = min(self.refused * CUSTOMER_RECOVERY, self.allowed)
            self.interval = self._searched(self.allowed)
        self.since, self.anchor, self.succeeded = now, sent_at, True
        self.successes += 1
        self.not_before = sent_at + self.interval

    @property
    def forgotten(self) -> bool:
        return self.interval < CUSTOMER_FORGET_BELOW or self.successes >= CUSTOMER_FORGET_AFTER

    def _searched(self, allowed: float) -> float:
        if allowed - self.refused <= allowed * CUSTOMER_SPACING_PRECISION:
            return allowed
        return (self.refused + allowed) / 2


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
        self._last_start = -math.inf
        self._paused_until = 0.0
        self._last_cut = -1.0
        self._streak = 0
        self._last_success = clock()
        self._successes: deque[float] = deque()
        self._sent: deque[float] = deque()
        # The shape of the regrowth since the last cut: from `_cut_to` back to `_plateau`, then beyond.
        self._cut_to = 0.0
        self._plateau = 0.0
        self._throttled_at_rate = 0.0
        self._grown_for = 0.0
        self._last_growth = 0.0
        self._customers: dict[str, _CustomerBackoff] = {}
        # Held-back customers whose time has come, waiting for the account's next start.
        self._due: set[str] = set()
        # TCP's slow start, until the account's first 429: requests in flight, and answers so far.
        self._slow_start = True
        self._in_flight = 0
        self._answers = 0
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

    def acquire(self, customer: str | None = None) -> float:
        """Block until a request (for ``customer``, if it names one) may start; returns when it starts.

        A customer whose own limit answered 429 waits for its backoff too, without holding up anyone
        until its time has come; then the account's next start is its own.

        :raises WaitCancelled: the caller's stop event (:func:`stop_waiting_on`) was set meanwhile.
        """
        stop = _stop_waiting.get()
        try:
            while True:
                if stop is not None and stop.is_set():
                    raise WaitCancelled
                with self._lock:
                    wait = self._wait_before_start(customer)
                    if wait <= 0:
                        return self._start(customer)
                self._wait(wait, stop)
        except BaseException:
            # A wait given up holds no start for the others (a start taken released it already).
            if customer is not None:
                with self._lock:
                    self._due.discard(customer)
            raise

    def _wait_before_start(self, customer: str | None) -> float:
        """How long until a request for ``customer`` may start (0 or less: now).

        Worked out afresh at every look, from the latest start and the current rate, and never
        reserved ahead: a rate cut or regrown meanwhile applies to every waiting request at once.
        """
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now
        if self._window_full(now):
            return min(self._last_start + WINDOW_PATIENCE - now, WINDOW_LOOK_EVERY)
        interval = 0.0 if self._rate is None else 1.0 / self._rate
        wait = self._last_start + interval - now
        backoff = None if customer is None else self._customers.get(customer)
        if backoff is not None and customer is not None:
            early = backoff.not_before - now
            if early > max(wait, 0.0):
                # Looked at again at least once an account interval, to take the first free start at
                # or after its own.
                return min(early, interval or early)
            # Its time has come: the account's next start is its own, not the first other worker's
            # to look (eight workers racing for each start would keep it waiting several of them).
            self._due.add(customer)
            return wait
        if self._due and interval:
            return max(wait, 0.0) + interval
        return wait

    def _window_full(self, now: float) -> bool:
        """Whether slow start keeps a request from starting now (the window is full, patience not spent)."""
        if not (self._slow_start and self.adaptive and self.max_rate is None):
            return False
        window = START_WINDOW + WINDOW_GROWTH * self._answers
        return self._in_flight >= window and now < self._last_start + WINDOW_PATIENCE

    def _start(self, customer: str | None) -> float:
        now = self._clock()
        self._last_start = now
        self._in_flight += 1
        backoff = None if customer is None else self._customers.get(customer)
        if backoff is not None:
            backoff.reserve(now)
        if customer is not None:
            self._due.discard(customer)
        if self.adaptive:
            self._sent.append(now)
        return now

    def _wait(self, seconds: float, stop: threading.Event | None) -> None:
        if stop is None:
            self._sleep(seconds)
        elif stop.wait(seconds):
            raise WaitCancelled

    def on_success(self, customer: str | None = None, sent_at: float | None = None) -> None:
        """A request (for ``customer``, started at ``sent_at``: default now) succeeded."""
        if not self.adaptive:
            return
        with self._lock:
            self._answered()
            now = self._clock()
            self._last_success = now
            self._streak = 0
            self._successes.append(now)
            self._forget_before(now - MEASURE_SECONDS)
            if customer is not None:
                self._customer_succeeded(customer, now if sent_at is None else sent_at, now)
            if self._rate is None:
                return
            # Paced, successes come one interval apart: all of it counts, however slow the rate.
            self._grown_for += min(now - self._last_growth, max(MAX_GROWTH_STEP, 2.0 / self._rate))
            self._last_growth = now
            grown = self._regrown(self._grown_for)
            if self.max_rate is not None:
                self._rate = min(grown, self.max_rate)
            else:
                self._rate = None if grown > UNPACED_ABOVE else grown

    def on_failure(self) -> None:
        """A request ended without a success or a 429: an error answer, or none at all."""
        with self._lock:
            self._answered()

    def _answered(self) -> None:
        self._in_flight = max(self._in_flight - 1, 0)
        self._answers += 1

    def _regrown(self, seconds: float) -> float:
        """The rate ``seconds`` of successes after the last cut."""
        additive = ADDITIVE_STEP * seconds
        if seconds < REGROW_SECONDS:
            # Concave: quickly most of the way back, then slowly up to where the budget was met.
            left = 1 - seconds / REGROW_SECONDS
            return self._plateau - (self._plateau - self._cut_to) * left**3 + additive
        probing = seconds - REGROW_SECONDS
        return self._plateau + PROBE_ACCELERATION * probing**2 + additive

    def _customer_succeeded(self, customer: str, sent_at: float, now: float) -> None:
        backoff = self._customers.get(customer)
        if backoff is None:
            return
        backoff.allow(sent_at, now)
        if backoff.forgotten:
            del self._customers[customer]

    def on_throttled(self, sent_at: float, requested_wait: float | None, customer: str | None = None) -> None:
        """A request sent at ``sent_at`` was answered 429.

        With ``customer`` (the customer's own limit answered), only that customer's requests wait: for
        ``requested_wait``, else for its backoff (see :class:`_CustomerBackoff`). Otherwise (the
        account's limit) every sender pauses, and the rate is cut once a round.
        """
        with self._lock:
            now = self._clock()
            self.throttled += 1
            self._in_flight = max(self._in_flight - 1, 0)
            if customer is not None:
                backoff = self._customers.setdefault(
                    customer, _CustomerBackoff(since=now, anchor=sent_at, not_before=now)
                )
                backoff.refuse(sent_at, now)
                if requested_wait is not None:
                    # The server knows when it will take one again; the spacing learnt is for later.
                    backoff.not_before = now + min(requested_wait, MAX_PAUSE)
                return
            self._slow_start = False
            # Requests already in flight when the rate was cut say nothing about the new rate, nor
            # about how long to pause.
            if sent_at >= self._last_cut:
                self._streak += 1
                self._cut(now)
            interval = 1.0 / self._rate if self._rate else 0.0
            if requested_wait is not None:
                pause = min(requested_wait, MAX_PAUSE)
            else:
                pause = min(interval * 2 ** (self._streak - 1), MAX_BACKOFF_PAUSE)
            self._paused_until = max(self._paused_until, now + pause)

    def seconds_without_success(self, since: float, customer: str | None = None) -> float:
        """Seconds since the last success of any sender, or since ``since`` if that is later.

        With ``customer``, of that customer's requests while its own limit holds it back.
        """
        with self._lock:
            backoff = None if customer is None else self._customers.get(customer)
            last = self._last_success if backoff is None else backoff.since
            return self._clock() - max(last, since)

    def _cut(self, now: float) -> None:
        self._forget_before(now - MEASURE_SECONDS)
        sent = _per_second(self._sent, now)
        current = self._rate if self._rate is not None else sent
        # Successes per second of sending tell what the budget grants once a second has been sent;
        # before that, a burst is no measure. Counted from the first request sent, so that a process
        # the others leave little of the budget learns it in a few cuts (each at most to
        # MEASURED_AT_LEAST of the rate sent).
        measured = bool(self._sent) and now - self._sent[0] >= 1.0
        estimate = _per_second(self._successes, now, self._sent[0]) if measured else current
        throttled_at = max(min(current, max(estimate, current * MEASURED_AT_LEAST)), MIN_RATE)
        # Throttled lower than last time, another sender is taking a bigger share: come back to a
        # little less than this time, leaving it room (TCP CUBIC's fast convergence).
        losing = throttled_at < self._throttled_at_rate * LOSING_BELOW
        self._plateau = throttled_at * (1 + CUT_FACTOR) / 2 if losing else throttled_at
        self._throttled_at_rate = throttled_at
        rate = max(throttled_at * (LOSING_CUT_FACTOR if losing else CUT_FACTOR), MIN_RATE)
        self._rate = self._cut_to = min(rate, self.max_rate) if self.max_rate is not None else rate
        self._plateau = max(self._plateau, self._cut_to)
        self._grown_for = 0.0
        self._last_growth = now
        self._last_cut = now

    def _forget_before(self, moment: float) -> None:
        for times in (self._successes, self._sent):
            while times and times[0] < moment:
                times.popleft()


def _per_second(times: deque[float], now: float, since: float | None = None) -> float:
    """Events per second since ``since`` (default: the first of them), over at least one second."""
    if not times:
        return 0.0
    start = times[0] if since is None else since
    return len(times) / min(max(now - start, 1.0), MEASURE_SECONDS)


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
