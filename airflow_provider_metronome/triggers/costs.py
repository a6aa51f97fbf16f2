"""MetronomeCostsTrigger: waits in the triggerer until Metronome has produced a window's costs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pendulum

from airflow_provider_metronome._compat import AirflowException, BaseTrigger, TriggerEvent
from airflow_provider_metronome.engine.availability import (
    Availability,
    availability_query,
    query_availability,
)
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.validation import (
    check_customer_error_policy,
    check_customer_id,
    check_customer_ids,
    check_int,
    check_max_workers,
    check_source,
)
from airflow_provider_metronome.vocabulary import DEFAULT_MAX_WORKERS, CustomerErrorPolicy
from airflow_provider_metronome.window import DayWindow, format_timestamp, to_utc


class MetronomeCostsTrigger(BaseTrigger):
    """Poll Metronome until every customer has every day of ``[starting_on, ending_before)``.

    Runs the same availability check as :class:`~airflow_provider_metronome.sensors.costs.MetronomeCostsSensor`
    (GET requests only), each time in a worker thread so the triggerer's event loop never waits on
    the network. It yields exactly one event: ``{"status": "success", ...}`` once the window is
    available, ``{"status": "error", "message": ...}`` on an error that waiting will not fix, or
    ``{"status": "timeout", ...}`` once a check after ``timeout_at`` still finds days missing.
    429/5xx answers (after the hook's retries) are logged and the trigger keeps polling.

    All arguments are plain JSON values; the API token is read from the connection at run time.

    :param metronome_conn_id: The Airflow connection to Metronome.
    :param customer_ids: Customer ids to wait for, or None for every active customer (listed on each check).
    :param starting_on: Window start, RFC 3339, midnight UTC (inclusive).
    :param ending_before: Window end, RFC 3339, midnight UTC (exclusive).
    :param source: ``"costs"`` or ``"invoice_breakdowns"``.
    :param poke_interval: Seconds between checks.
    :param timeout_at: RFC 3339 moment after which a failed check ends the wait, or None to wait forever.
    :param max_workers: Customers checked in parallel.
    :param on_customer_error: ``"fail"`` or ``"skip"``, as on the sensor.
    :param sample_customers: Ask at most this many customers per check, as on the sensor.
    :param first_customer: The customer to ask first (the one the sensor's own check found missing);
        afterwards, the one missing at the previous check.
    """

    def __init__(
        self,
        *,
        metronome_conn_id: str = MetronomeHook.default_conn_name,
        customer_ids: Sequence[str] | None,
        starting_on: str,
        ending_before: str,
        source: str = "costs",
        poke_interval: float = 60.0,
        timeout_at: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        on_customer_error: CustomerErrorPolicy = "fail",
        sample_customers: int | None = None,
        first_customer: str | None = None,
    ) -> None:
        super().__init__()
        self.metronome_conn_id = metronome_conn_id
        self.customer_ids = check_customer_ids(customer_ids)
        self.window = DayWindow.of(starting_on, ending_before)
        self.source = check_source(source)
        if (
            isinstance(poke_interval, bool)
            or not isinstance(poke_interval, (int, float))
            or poke_interval < 0
        ):
            raise ValueError(f"poke_interval={poke_interval!r} must be a non-negative number of seconds.")
        self.poke_interval = float(poke_interval)
        self.timeout_at = to_utc(timeout_at, name="timeout_at") if timeout_at is not None else None
        self.max_workers = check_max_workers(max_workers)
        self.on_customer_error = check_customer_error_policy(on_customer_error)
        self.sample_customers = (
            None if sample_customers is None else check_int("sample_customers", sample_customers, minimum=1)
        )
        self.first_customer = None if first_customer is None else check_customer_id(first_customer)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "metronome_conn_id": self.metronome_conn_id,
                "customer_ids": self.customer_ids,
                **self.window.as_dict(),
                "source": self.source,
                "poke_interval": self.poke_interval,
                "timeout_at": format_timestamp(self.timeout_at) if self.timeout_at is not None else None,
                "max_workers": self.max_workers,
                "on_customer_error": self.on_customer_error,
                "sample_customers": self.sample_customers,
                "first_customer": self.first_customer,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        first = self.first_customer
        while True:
            try:
                # A thread, because the hook is synchronous (requests, and a connection read that
                # the triggerer serves to worker threads); the event loop keeps running meanwhile.
                query = availability_query(self, self.customer_ids, self.window, first)
                availability = await asyncio.to_thread(
                    query_availability, self.metronome_conn_id, query, log=self.log
                )
            except (AirflowException, ValueError) as err:
                yield TriggerEvent({"status": "error", "message": str(err)})
                return
            if availability is not None:
                first = availability.first_missing
            if availability is not None and availability.complete:
                yield TriggerEvent(
                    {"status": "success", "message": availability.summary(), **self.window.as_dict()}
                )
                return
            if self.timeout_at is None:
                await asyncio.sleep(self.poke_interval)
                continue
            remaining = (self.timeout_at - pendulum.now("UTC")).total_seconds()
            if remaining <= 0:
                message = _timeout_message(self.window, self.source, self.timeout_at, availability)
                yield TriggerEvent({"status": "timeout", "message": message})
                return
            await asyncio.sleep(min(self.poke_interval, remaining))


def _timeout_message(
    window: DayWindow, source: str, timeout_at: pendulum.DateTime, availability: Availability | None
) -> str:
    last = availability.summary() if availability is not None else "Metronome was not answering."
    return (
        f"Sensor has timed out: {window.describe()} ({source}) was not available by "
        f"{format_timestamp(timeout_at)}. Last check: {last}"
    )
