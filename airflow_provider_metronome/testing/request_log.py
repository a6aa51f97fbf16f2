"""What the simulator received: every ``/v1`` request with its answer, and the last bodies it sent."""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from airflow_provider_metronome.testing.faults import FaultKind
from airflow_provider_metronome.testing.messages import Incoming, Response

# How many request paths Simulator.last_body remembers: enough for a test, bounded for long benchmarks.
BODY_PATHS_KEPT = 64


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator received it; the Authorization header is never kept."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorized: bool
    started_at: float
    """``time.monotonic()`` when the request was read."""
    connection_id: int
    """Counts TCP connections from 1, so tests can see keep-alive reuse."""
    in_flight: int
    """Requests being handled when this one started, itself included."""
    status: int | None = None
    """The answer's status code; None while it is being handled, or when the connection closed unanswered."""
    throttled: bool = False
    """Whether the rate limit refused it (a 429 from :meth:`Fault.status` is not throttled)."""
    fault: FaultKind | None = None
    """The transport fault that answered it or shaped its answer (``status``, ``drop``, ``html_body``,
    ``slow``...), if any; page and window faults are not noted."""
    arrived_before_answer: int | None = None
    """How many requests of the log had arrived, this one included, when its answer was made (None: not
    answered yet): a request at a lower index arrived while this one was being handled or before."""


@dataclass(frozen=True)
class RequestCounts:
    """How many ``/v1`` requests arrived since the last :meth:`MetronomeSimulator.clear_requests`."""

    total: int
    by_kind: Mapping[str, int]
    """Per endpoint (``customers``, ``costs``, ``breakdowns``), and ``other`` for paths that are none."""
    by_status: Mapping[int, int]
    """Per status code answered; requests in flight or closed unanswered are in no count."""
    throttled: int
    """Refused by the rate limit."""

    @classmethod
    def of(
        cls, records: Iterable[RequestRecord], kind_of: Callable[[str], str], kinds: Iterable[str]
    ) -> RequestCounts:
        """The counts of ``records``, each of a kind ``kind_of(path)``; every one of ``kinds`` is counted, if 0."""
        records = list(records)
        by_kind = Counter(dict.fromkeys(kinds, 0))
        by_kind.update(kind_of(record.path) for record in records)
        statuses = Counter(record.status for record in records if record.status is not None)
        return cls(
            total=len(records),
            by_kind=dict(by_kind),
            by_status=dict(sorted(statuses.items())),
            throttled=sum(record.throttled for record in records),
        )


class BodyLog:
    """The last 200 body sent for each of the most recently answered paths."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: OrderedDict[str, bytes] = OrderedDict()

    def record(self, path: str, body: bytes) -> None:
        with self._lock:
            self._bodies[path] = body
            self._bodies.move_to_end(path)
            if len(self._bodies) > BODY_PATHS_KEPT:
                self._bodies.popitem(last=False)

    def last(self, path_substring: str) -> bytes | None:
        with self._lock:
            return next(
                (body for path, body in reversed(self._bodies.items()) if path_substring in path), None
            )

    def clear(self) -> None:
        with self._lock:
            self._bodies.clear()


LogSlot = tuple[int, int]
"""Where a request's record lies: (log generation, index); a clear starts a new generation."""


class RequestLog:
    """Every request in arrival order, and how many were in flight at once; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Woken by every arrival, for requests held until another one comes (Fault.hold_page).
        self._arrival = threading.Condition(self._lock)
        self._records: list[RequestRecord] = []
        self._generation = 0
        self._in_flight = 0
        self.max_in_flight = 0
        self.throttled_count = 0

    def begin(self, incoming: Incoming, connection_id: int) -> LogSlot:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._records.append(
                RequestRecord(
                    incoming.method,
                    incoming.path,
                    incoming.query,
                    incoming.authorized,
                    time.monotonic(),
                    connection_id,
                    self._in_flight,
                )
            )
            self._arrival.notify_all()
            return self._generation, len(self._records) - 1

    def wait_for(self, path_substring: str, timeout: float) -> bool:
        """Wait until a logged request's path contains ``path_substring``, at most ``timeout`` s; True if one did."""
        with self._arrival:
            return self._arrival.wait_for(
                lambda: any(path_substring in record.path for record in self._records), timeout
            )

    def end(self, slot: LogSlot, response: Response | None, fault: FaultKind | None) -> None:
        """Count the request out of flight and note its answer (None: it failed before one was made).

        ``fault`` is the transport fault behind the answer, if any.
        """
        with self._lock:
            self._in_flight -= 1
            generation, index = slot
            # A record forgotten by clear() while its request was in flight stays forgotten.
            if response is None or generation != self._generation:
                return
            status = None if response.drop else response.status
            self._records[index] = replace(
                self._records[index],
                status=status,
                throttled=response.throttled,
                fault=fault,
                arrived_before_answer=len(self._records),
            )
            self.throttled_count += response.throttled

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._generation += 1
            self.max_in_flight = self._in_flight
            self.throttled_count = 0

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)
