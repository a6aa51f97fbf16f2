"""MetronomeCostsSensor: wait until Metronome has produced the costs of a run's window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pendulum

from airflow_provider_metronome._compat import (
    AirflowException,
    AirflowSensorTimeout,
    BaseSensorOperator,
    Context,
    conf,
)
from airflow_provider_metronome.engine.availability import availability_query, query_availability
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.triggers.costs import MetronomeCostsTrigger
from airflow_provider_metronome.validation import (
    check_customer_error_policy,
    check_customer_ids,
    check_int,
    check_literal_customer_ids,
    check_max_workers,
    check_source,
)
from airflow_provider_metronome.vocabulary import DEFAULT_MAX_WORKERS, CustomerErrorPolicy, Source
from airflow_provider_metronome.window import DayWindow, TimestampLike, format_timestamp, resolve_window

# The deferral's own timeout only backs up the trigger's, which fires first with a clearer message.
DEFERRAL_TIMEOUT_GRACE = dt.timedelta(minutes=5)


class MetronomeCostsSensor(BaseSensorOperator):
    """Wait until Metronome has produced every day of the run's window for every customer.

    *Available* means: for every requested customer, Metronome's answer for the window contains a
    window starting on each UTC day of it. The window is resolved exactly as
    :class:`~airflow_provider_metronome.operators.costs.MetronomeCostsOperator` resolves it.
    Each check writes one log line saying what is still missing.

    A check stops at the first customer still missing a day, and asks first the customer that was
    missing at the previous check, before listing the customers: while Metronome has not produced
    the day, a check costs one request (the first check of a run also lists the customers, one
    request per 100, when ``customer_ids`` is None). Once
    that customer has the day, the others are asked (``max_workers`` at a time) until one lacks it:
    with every customer, a check that finds the window available costs one request per customer
    and 100 days. In front of a ``MetronomeCostsOperator`` (which verifies every customer's days
    itself before writing), ``sample_customers`` makes that last check cheap too. Rate limits, server errors and
    dropped connections (after the connection's retries) are logged and waited out; 400, 401, 403
    and 404 fail the task at once with Metronome's message (see ``on_customer_error``).

    :param customer_ids: One customer id, a list of ids, or None (default) for every active customer,
        listed again on each check. Templated, and read as the operator reads it.
    :param starting_on: Window start (inclusive), midnight UTC; RFC 3339 string, datetime or date.
        Templated. Default: the run's data interval, or the UTC day before the logical date.
    :param ending_before: Window end (exclusive), midnight UTC. Templated. Pass both bounds or neither.
    :param source: ``"costs"`` (``/costs``, Metronome Plans) or ``"invoice_breakdowns"`` (daily
        invoice breakdowns, Metronome Contracts).
    :param metronome_conn_id: The Airflow connection to Metronome.
    :param max_workers: Customers checked in parallel (default 8).
    :param on_customer_error: ``"fail"`` (default): a customer answering 400 or 404 fails the task.
        ``"skip"``: customers answering a 4xx other than 401/403 are left out of the wait and named
        in the log, as the operator's ``on_customer_error="skip"`` leaves them out of the fetch.
    :param sample_customers: Ask at most this many customers per check, spread evenly over the list
        (the one missing at the last check first), instead of every customer. For a gate before an
        operator that verifies every customer itself: a few customers tell that Metronome has produced
        the day; a customer still lacking it then fails the operator, which is retried. Default None:
        every customer.
    :param deferrable: Wait in the triggerer instead of a worker slot (default: the
        ``[operators] default_deferrable`` setting).
    :param poke_interval: Seconds (or a timedelta) between checks (default 60).
    :param timeout: Seconds (or a timedelta) after which the sensor gives up: it fails, or is
        skipped with ``soft_fail=True`` (default: ``[sensors] default_timeout``, 7 days).
    """

    template_fields: Sequence[str] = ("customer_ids", "starting_on", "ending_before")

    def __init__(
        self,
        *,
        customer_ids: str | Sequence[str] | None = None,
        starting_on: TimestampLike | None = None,
        ending_before: TimestampLike | None = None,
        source: Source = "costs",
        metronome_conn_id: str = MetronomeHook.default_conn_name,
        max_workers: int = DEFAULT_MAX_WORKERS,
        on_customer_error: CustomerErrorPolicy = "fail",
        sample_customers: int | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.customer_ids = customer_ids
        self.starting_on = starting_on
        self.ending_before = ending_before
        self.source = check_source(source)
        self.metronome_conn_id = metronome_conn_id
        self.max_workers = check_max_workers(max_workers)
        self.on_customer_error = check_customer_error_policy(on_customer_error)
        self.sample_customers = (
            None if sample_customers is None else check_int("sample_customers", sample_customers, minimum=1)
        )
        self.deferrable = deferrable
        # The customer missing a day at the last check, asked first at the next (poke mode keeps the
        # sensor object between checks; reschedule mode starts over).
        self._first: str | None = None
        # Literal values fail when the DAG is parsed; templated ones before the first request.
        check_literal_customer_ids(customer_ids)
        DayWindow.check_literal(starting_on, ending_before)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # Checked here first, as the HTTP, dbt Cloud and Fivetran sensors do: a window that is already
        # available (a backfill, a late run) finishes without a round trip through the triggerer.
        if self.poke(context):
            return None
        window = resolve_window(context, self.starting_on, self.ending_before)
        timeout = dt.timedelta(seconds=self.timeout)
        trigger = MetronomeCostsTrigger(
            metronome_conn_id=self.metronome_conn_id,
            customer_ids=check_customer_ids(self.customer_ids),
            **window.as_dict(),
            source=self.source,
            poke_interval=self.poke_interval,
            timeout_at=format_timestamp(pendulum.now("UTC") + timeout),
            max_workers=self.max_workers,
            on_customer_error=self.on_customer_error,
            sample_customers=self.sample_customers,
            first_customer=self._first,
        )
        self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout + DEFERRAL_TIMEOUT_GRACE)

    def poke(self, context: Context) -> bool:
        window = resolve_window(context, self.starting_on, self.ending_before)
        query = availability_query(self, check_customer_ids(self.customer_ids), window, self._first)
        availability = query_availability(self.metronome_conn_id, query, log=self.log)
        if availability is None:
            return False
        self._first = availability.first_missing
        return availability.complete

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        """Finish after the trigger: succeed, time out, or fail with the trigger's message."""
        status = (event or {}).get("status")
        message = (event or {}).get("message") or f"The trigger ended with an unexpected event: {event!r}"
        if status == "success":
            self.log.info("%s", message)
            return
        if status == "timeout":
            raise AirflowSensorTimeout(message)
        raise AirflowException(message)
