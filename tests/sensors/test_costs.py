"""MetronomeCostsSensor against the simulator, in poke, reschedule and deferrable mode, on real Airflow."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_metronome._compat import (
    AIRFLOW_V3,
    AirflowException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow_provider_metronome.engine.availability import Availability
from airflow_provider_metronome.exceptions import (
    MetronomeAuthenticationError,
    MetronomeClientError,
    MetronomeNotFoundError,
)
from airflow_provider_metronome.hooks.retry import RetryPolicy
from airflow_provider_metronome.sensors.costs import DEFERRAL_TIMEOUT_GRACE, MetronomeCostsSensor
from airflow_provider_metronome.testing import DEFAULT_TOKEN, Fault, MetronomeSimulator
from airflow_provider_metronome.triggers.costs import MetronomeCostsTrigger
from airflow_provider_metronome.window import DayWindow
from tests.support.runs import clock_moves_to, connection_json

# Every test waits for 2024-01-05: the window of a daily run with this logical date (both Airflow lines).
LOGICAL_DATE = pendulum.datetime(2024, 1, 6, tz="UTC")
CONTEXT: dict[str, Any] = {"logical_date": LOGICAL_DATE}
# The day's end plus the simulator's default availability delay of 2 hours.
AVAILABLE_AT = dt.datetime(2024, 1, 6, 2, tzinfo=dt.timezone.utc)
BEFORE = AVAILABLE_AT - dt.timedelta(seconds=1)


@pytest.fixture
def no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook retries 429/5xx with real back-off sleeps; tests need not wait for them."""
    monkeypatch.setattr(RetryPolicy, "sleep", lambda seconds: None)


def plain_customer(simulator: MetronomeSimulator, index: int = 0) -> str:
    """An active customer whose /costs Metronome serves (not one with a UNIQUE-type metric)."""
    return simulator.costs_customer_ids[index]


def make_sensor(**kwargs: Any) -> MetronomeCostsSensor:
    kwargs = {"task_id": "wait_for_costs", "poke_interval": 0, "timeout": 30, **kwargs}
    return MetronomeCostsSensor(**kwargs)


@contextmanager
def task_logs(*subjects: Any) -> Iterator[list[tuple[str, str]]]:
    """``(level, message)`` pairs logged by ``subjects`` (operators, triggers), on either Airflow line."""
    lines: list[tuple[str, str]] = []
    if AIRFLOW_V3:
        import structlog.testing

        with structlog.testing.capture_logs() as entries:
            yield lines
        lines.extend((entry["log_level"], entry["event"]) for entry in entries)
        return

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((record.levelname.lower(), record.getMessage()))

    handler = Collect(logging.INFO)
    loggers = [subject.log for subject in subjects]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def check_lines(lines: list[tuple[str, str]]) -> list[str]:
    """The one-per-check INFO lines about the window."""
    return [message for level, message in lines if level == "info" and "2024-01-05" in message]


def defer(sensor: MetronomeCostsSensor) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(CONTEXT)
    return deferred.value


def run_in_triggerer(deferred: TaskDeferred) -> dict[str, Any]:
    """Rebuild the trigger from its serialized form, as the triggerer does, and run it to its event."""
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == "airflow_provider_metronome.triggers.costs.MetronomeCostsTrigger"
    trigger = MetronomeCostsTrigger(**json.loads(json.dumps(kwargs)))

    async def first_event() -> Any:
        return await anext(trigger.run())

    payload: dict[str, Any] = asyncio.run(first_event()).payload
    return payload


# -- poke ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["costs", "invoice_breakdowns"])
def test_poke_is_false_before_the_simulator_clock_passes_the_availability_point_and_true_after(
    simulator: MetronomeSimulator, metronome_conn: str, source: str
) -> None:
    sensor = make_sensor(source=source, on_customer_error="skip")

    with task_logs(sensor) as logs:
        simulator.now = BEFORE
        before = sensor.poke(CONTEXT)
        simulator.now = AVAILABLE_AT
        after = sensor.poke(CONTEXT)

    assert (before, after) == (False, True)
    lines = check_lines(logs)
    assert len(lines) == 2, "one log line per check"
    # While the day is missing the check stops at the first customer asked that lacks it.
    assert re.match(
        rf"Customer [0-9a-f-]{{36}} still without 2024-01-05; the check stopped there, after asking 1 of "
        rf"{len(simulator.active_customer_ids)} customers \({source}\)\.",
        lines[0],
    ), lines[0]
    # A day is produced for the whole account: the first customer billed on it says so.
    assert re.match(
        rf"Metronome has produced 2024-01-05: asked [12] of {len(simulator.active_customer_ids)} customers, "
        rf"enough since a day is produced for the whole account .*\({source}\)\.",
        lines[1],
    ), lines[1]
    assert {request.method for request in simulator.requests} == {"GET"}


def test_a_waiting_poke_asks_the_customer_missing_last_time_first_and_stops_there(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    ids = sorted(plain_customer(simulator, index) for index in range(12))
    late = ids[9]
    # The day is not produced yet; the customers before `late` were not billed the day before
    # either, so their lack says nothing, and `late`, billed until then, is the one that tells.
    for customer in ids[:9]:
        simulator.withhold(customer, [dt.date(2024, 1, 4)])
    simulator.now = BEFORE
    sensor = make_sensor(customer_ids=ids, max_workers=2)

    with task_logs(sensor) as logs:
        first = sensor.poke(CONTEXT)
        simulator.clear_requests()
        second = sensor.poke(CONTEXT)

    assert (first, second) == (False, False)
    # The second check asks the customer that lacked the day first, and stops at it: one request.
    assert [record.path for record in simulator.requests] == [f"/v1/customers/{late}/costs"]
    assert check_lines(logs)[-1] == (
        f"Customer {late} still without 2024-01-05; the check stopped there, after asking 1 of 12 "
        "customers (costs)."
    )


def test_a_waiting_poke_of_every_active_customer_costs_one_request(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    simulator.now = BEFORE
    sensor = make_sensor(source="invoice_breakdowns")

    with task_logs(sensor) as logs:
        for _ in range(3):
            assert sensor.poke(CONTEXT) is False

    paths = [record.path for record in simulator.requests]
    # The first check lists the customers (active, then archived) and stops at the first; later ones
    # ask that customer alone.
    assert paths.count("/v1/customers") == 2
    assert len(paths) == 5
    assert len(set(paths[2:])) == 1
    assert check_lines(logs)[-1].endswith(
        "still without 2024-01-05, as at the last check; the check stopped there, after one request "
        "(invoice_breakdowns)."
    )


def test_a_sampling_gate_asks_only_a_few_customers_once_the_day_is_there(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    simulator.now = AVAILABLE_AT
    sensor = make_sensor(source="invoice_breakdowns", sample_customers=3)
    total = len(simulator.active_customer_ids)

    with task_logs(sensor) as logs:
        assert sensor.poke(CONTEXT) is True

    asked = sorted(record.path.split("/")[3] for record in simulator.requests_for("/invoices/breakdowns"))
    ids = sorted(simulator.active_customer_ids)
    # The sample's first customer has the day, which the whole account then has.
    assert asked == [ids[0]]
    assert check_lines(logs) == [
        f"Metronome has produced 2024-01-05: asked 1 of {total} customers, enough since a day is produced "
        "for the whole account (the fetch checks every customer) (invoice_breakdowns)."
    ]


def test_a_sampling_gate_asks_no_more_than_its_sample_when_customers_tell_nothing(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    simulator.now = AVAILABLE_AT
    ids = sorted(simulator.costs_customer_ids)
    # No customer billed around the day: nobody's lack tells a late day, so the sample is asked whole.
    for customer in ids:
        simulator.withhold(customer, [dt.date(2024, 1, 4), dt.date(2024, 1, 5)])
    sensor = make_sensor(customer_ids=ids, sample_customers=3)

    assert sensor.poke(CONTEXT) is True

    asked = sorted(record.path.split("/")[3] for record in simulator.requests_for("/costs"))
    # Spread over the list: the first, one in the middle, the last.
    assert asked == [ids[0], ids[round((len(ids) - 1) / 2)], ids[-1]]


def test_sample_customers_must_be_a_positive_integer() -> None:
    with pytest.raises(ValueError, match=r"sample_customers=0 must be an integer of at least 1"):
        make_sensor(sample_customers=0)


def test_a_multi_day_window_waits_for_its_last_day(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    customer = plain_customer(simulator)
    sensor = make_sensor(customer_ids=customer, starting_on="2024-01-03", ending_before="2024-01-06")
    simulator.now = BEFORE

    with task_logs(sensor) as logs:
        assert sensor.poke({}) is False

    assert check_lines(logs) == ["1 of 1 customer still without 2024-01-05 (costs)."]


def test_named_customers_are_the_only_ones_checked(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    customers = [plain_customer(simulator, 0), plain_customer(simulator, 1)]
    sensor = make_sensor(customer_ids=customers)
    simulator.now = AVAILABLE_AT

    assert sensor.poke(CONTEXT) is True
    # The first has the day, so the account has it: no listing, and no other customer asked.
    assert [request.path for request in simulator.requests] == [f"/v1/customers/{customers[0]}/costs"]


def test_templated_customer_ids_are_rendered_then_validated_before_any_request(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    first, second = plain_customer(simulator, 0), plain_customer(simulator, 1)
    sensor = make_sensor(customer_ids="{{ params.customers }}")
    simulator.now = AVAILABLE_AT

    sensor.render_template_fields({**CONTEXT, "params": {"customers": "acme-corp"}})
    with pytest.raises(ValueError, match="'acme-corp' is not a Metronome customer id"):
        sensor.poke(CONTEXT)
    assert simulator.requests == []

    sensor = make_sensor(customer_ids="{{ params.customers }}")
    sensor.render_template_fields({**CONTEXT, "params": {"customers": f"{first},{second}"}})
    assert sensor.poke(CONTEXT) is True
    # The first rendered id has the day, which the whole account then has.
    assert [request.path for request in simulator.requests] == [f"/v1/customers/{first}/costs"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customer_ids": "acme-corp"}, "is not a Metronome customer id"),
        ({"customer_ids": [str(uuid.uuid4()), "cust_00001"]}, "is not a Metronome customer id"),
        ({"starting_on": "2024-01-05T06:00:00Z", "ending_before": "2024-01-06"}, "midnight UTC"),
        ({"starting_on": "2024-01-05"}, "Pass both starting_on and ending_before, or neither"),
        ({"starting_on": "2024-01-06", "ending_before": "2024-01-05"}, "must be before ending_before"),
        ({"source": "invoices"}, "source='invoices' must be one of"),
        ({"max_workers": 0}, "max_workers=0 must be an integer of at least 1"),
        ({"on_customer_error": "ignore"}, "on_customer_error='ignore' must be one of 'fail', 'skip'"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(
    simulator: MetronomeSimulator, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MetronomeCostsSensor(task_id="wait_for_costs", **kwargs)
    assert simulator.requests == []


def test_templated_arguments_wait_for_rendering() -> None:
    sensor = MetronomeCostsSensor(
        task_id="wait_for_costs",
        customer_ids="{{ params.customers }}",
        starting_on="{{ ds }}",
        ending_before="{{ next_ds }}",
    )
    assert sensor.template_fields == ("customer_ids", "starting_on", "ending_before")


def test_the_log_line_says_how_many_customers_still_lack_which_days() -> None:
    ids = tuple(str(uuid.UUID(int=number, version=4)) for number in range(1, 41))
    window = DayWindow.of("2024-01-04", "2024-01-08")
    missing = {dt.date(2024, 1, 5): ids[:2], dt.date(2024, 1, 6): ids, dt.date(2024, 1, 7): ids}

    summary = Availability(window, "costs", ids, missing).summary()

    assert summary == (
        f"2 of 40 customers still without 2024-01-05 ({ids[0]}, {ids[1]}); "
        "40 of 40 customers still without 2024-01-06..2024-01-07 (costs)."
    )


def test_the_log_line_stays_one_short_line_for_a_long_window() -> None:
    ids = tuple(str(uuid.UUID(int=number, version=4)) for number in range(1, 6))
    window = DayWindow.of("2024-01-01", "2024-01-31")
    # Every other day lacks a different set of customers: 15 separate runs of missing days.
    missing = {day: ids[: 1 + day.day % 4] for day in window.days if day.day % 2}

    summary = Availability(window, "costs", ids, missing).summary()

    assert summary.count("still without") == 3
    assert summary.endswith("; and 12 more day(s) (costs).")


# -- errors ----------------------------------------------------------------------------------------


def test_an_unknown_customer_fails_at_once_with_metronomes_message(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    unknown = str(uuid.uuid4())
    sensor = make_sensor(customer_ids=unknown, timeout=5)
    simulator.now = BEFORE

    with pytest.raises(MetronomeNotFoundError, match=r"HTTP 404.*Customer not found"):
        sensor.execute(CONTEXT)
    assert [request.path for request in simulator.requests] == [f"/v1/customers/{unknown}/costs"]


def test_a_bad_token_fails_at_once(simulator: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url, token="wrong-token"))
    sensor = make_sensor(customer_ids=plain_customer(simulator), timeout=5)

    with pytest.raises(MetronomeAuthenticationError, match=r"HTTP 401.*Unauthorized") as raised:
        sensor.execute(CONTEXT)
    assert "wrong-token" not in str(raised.value)
    assert len(simulator.requests) == 1


def test_a_customer_whose_costs_metronome_refuses_fails_at_once(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    refused = simulator.unique_metric_customer_ids[0]
    sensor = make_sensor(customer_ids=refused, timeout=5)
    simulator.now = AVAILABLE_AT

    with pytest.raises(MetronomeClientError, match="UNIQUE-type billable metric") as raised:
        sensor.execute(CONTEXT)
    assert raised.value.status_code == 400
    assert len(simulator.requests) == 1


def test_on_customer_error_skip_leaves_refused_customers_out_and_names_them(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    refused = simulator.unique_metric_customer_ids[0]
    sensor = make_sensor(customer_ids=[plain_customer(simulator), refused], on_customer_error="skip")
    simulator.now = AVAILABLE_AT

    with task_logs(sensor) as logs:
        assert sensor.poke(CONTEXT) is True

    (line,) = check_lines(logs)
    assert line.startswith(
        "Metronome has produced 2024-01-05: asked the one customer (costs). Skipped 1 customer"
    )
    assert refused in line
    assert "UNIQUE-type billable metric" in line


@pytest.mark.parametrize(
    ("fault", "cause"),
    [(Fault.status(503), "HTTP 503"), (Fault.drop(), "no answer")],
    ids=["503", "dropped-connection"],
)
def test_transient_errors_keep_the_sensor_waiting_and_say_so(
    simulator: MetronomeSimulator, metronome_conn: str, no_retry_wait: None, fault: Fault, cause: str
) -> None:
    sensor = make_sensor(customer_ids=plain_customer(simulator))
    simulator.now = AVAILABLE_AT
    simulator.inject(fault, path="/costs", times=None)

    with task_logs(sensor) as logs:
        assert sensor.poke(CONTEXT) is False
    simulator.clear_faults()
    assert sensor.poke(CONTEXT) is True

    warnings = [message for level, message in logs if level == "warning" and "not answering" in message]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"Metronome is not answering ({cause}")
    assert warnings[0].endswith("will check again.")
    assert len(simulator.requests_for("/costs")) == 3 + 1, "the hook's 2 retries, then the next check"


def test_a_rate_limit_that_outlasts_its_timeout_keeps_the_sensor_waiting(
    simulator: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url, DEFAULT_TOKEN, rate_limit_timeout=1)
    )
    sensor = make_sensor(customer_ids=plain_customer(simulator))
    simulator.now = AVAILABLE_AT
    simulator.inject(Fault.status(429), path="/costs", times=None)

    with task_logs(sensor) as logs:
        assert sensor.poke(CONTEXT) is False

    warnings = [message for level, message in logs if level == "warning" and "not answering" in message]
    assert len(warnings) == 1
    assert "HTTP 429" in warnings[0]
    assert "rate limit" in warnings[0]


def test_execute_waits_out_an_outage_then_succeeds(
    simulator: MetronomeSimulator, metronome_conn: str, no_retry_wait: None
) -> None:
    sensor = make_sensor(customer_ids=plain_customer(simulator))
    simulator.now = AVAILABLE_AT
    simulator.inject(Fault.status(503), path="/costs", times=3)

    assert sensor.execute(CONTEXT) is None
    assert len(simulator.requests_for("/costs")) == 4


@pytest.mark.parametrize("outage", [False, True], ids=["not-yet-available", "metronome-down"])
@pytest.mark.parametrize("soft_fail", [False, True], ids=["fail", "soft_fail"])
def test_timeout_fails_or_skips_in_poke_mode(
    simulator: MetronomeSimulator, metronome_conn: str, no_retry_wait: None, outage: bool, soft_fail: bool
) -> None:
    sensor = make_sensor(customer_ids=plain_customer(simulator), timeout=0, soft_fail=soft_fail)
    simulator.now = BEFORE
    if outage:
        simulator.inject(Fault.status(503), path="/costs", times=None)

    with pytest.raises(AirflowSkipException if soft_fail else AirflowSensorTimeout, match="timed out"):
        sensor.execute(CONTEXT)
    assert len(simulator.requests_for("/costs")) == (3 if outage else 1)


# -- deferrable ------------------------------------------------------------------------------------


def test_deferrable_checks_once_in_the_worker_then_defers_with_plain_arguments(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    sensor = make_sensor(deferrable=True, timeout=600, poke_interval=30, on_customer_error="skip")
    simulator.now = BEFORE

    started = pendulum.now("UTC")
    deferred = defer(sensor)

    # One check before deferring: the customer listing (active, then archived), then the first
    # customer, who lacks the day.
    assert [record.path for record in simulator.requests].count("/v1/customers") == 2
    (asked,) = simulator.requests_for("/costs")
    assert len(simulator.requests) == 3
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == dt.timedelta(seconds=600) + DEFERRAL_TIMEOUT_GRACE
    _, kwargs = deferred.trigger.serialize()
    timeout_at = pendulum.parse(kwargs.pop("timeout_at"))
    assert started.add(seconds=599) <= timeout_at <= pendulum.now("UTC").add(seconds=600)
    assert kwargs == {
        "metronome_conn_id": "metronome_default",
        "customer_ids": None,
        "starting_on": "2024-01-05T00:00:00Z",
        "ending_before": "2024-01-06T00:00:00Z",
        "source": "costs",
        "poke_interval": 30.0,
        "max_workers": 8,
        "on_customer_error": "skip",
        "sample_customers": None,
        # The trigger's first check asks the customer the worker's check found missing.
        "first_customer": asked.path.split("/")[3],
    }


def test_deferrable_finishes_in_the_worker_when_the_window_is_already_there(
    simulator: MetronomeSimulator, metronome_conn: str
) -> None:
    sensor = make_sensor(deferrable=True, customer_ids=plain_customer(simulator))
    simulator.now = AVAILABLE_AT

    assert sensor.execute(CONTEXT) is None  # no TaskDeferred: the triggerer is never involved

    assert len(simulator.requests) == 1


def test_deferrable_end_to_end_succeeds(simulator: MetronomeSimulator, metronome_conn: str) -> None:
    customer = plain_customer(simulator)
    sensor = make_sensor(deferrable=True, customer_ids=customer)
    simulator.now = BEFORE
    deferred = defer(sensor)
    simulator.now = AVAILABLE_AT

    event = run_in_triggerer(deferred)

    assert event["status"] == "success"
    assert event["message"] == "Metronome has produced 2024-01-05: asked the one customer (costs)."
    assert sensor.resume_execution("execute_complete", {"event": event}, CONTEXT) is None


@pytest.mark.parametrize("soft_fail", [False, True], ids=["fail", "soft_fail"])
def test_deferrable_error_event_fails_the_task_with_metronomes_message(
    simulator: MetronomeSimulator, metronome_conn: str, soft_fail: bool
) -> None:
    sensor = make_sensor(deferrable=True, customer_ids=plain_customer(simulator), soft_fail=soft_fail)
    simulator.now = BEFORE
    deferred = defer(sensor)
    simulator.inject(Fault.status(404, message="Customer not found"), path="/costs", times=None)

    event = run_in_triggerer(deferred)

    assert event["status"] == "error"
    assert "HTTP 404" in event["message"]
    assert "Customer not found" in event["message"]
    # Airflow's own rule: soft_fail turns any failure of a resumed deferrable sensor into a skip.
    with pytest.raises(AirflowSkipException if soft_fail else AirflowException) as raised:
        sensor.resume_execution("execute_complete", {"event": event}, CONTEXT)
    assert "Customer not found" in str(raised.value.__cause__ if soft_fail else raised.value)


@pytest.mark.parametrize("soft_fail", [False, True], ids=["fail", "soft_fail"])
def test_deferrable_timeout_fails_or_skips(
    simulator: MetronomeSimulator, metronome_conn: str, soft_fail: bool
) -> None:
    sensor = make_sensor(
        deferrable=True, customer_ids=plain_customer(simulator), timeout=0, soft_fail=soft_fail
    )
    simulator.now = BEFORE

    event = run_in_triggerer(defer(sensor))

    assert event["status"] == "timeout"
    assert "1 of 1 customer still without 2024-01-05" in event["message"]
    with pytest.raises(AirflowSkipException if soft_fail else AirflowSensorTimeout) as raised:
        sensor.resume_execution("execute_complete", {"event": event}, CONTEXT)
    timeout = raised.value.__cause__ if soft_fail else raised.value
    assert isinstance(timeout, AirflowSensorTimeout)
    assert "timed out" in str(timeout)


# -- real DAG runs ---------------------------------------------------------------------------------

DAG_FILE = """
import pendulum

from airflow_provider_metronome.sensors.costs import MetronomeCostsSensor

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow.models.dag import DAG

with DAG({dag_id!r}, schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False):
    MetronomeCostsSensor(task_id="wait_for_costs", **{kwargs!r})
"""


def run_dag(airflow_home: Path, request: pytest.FixtureRequest, **sensor_kwargs: Any) -> str:
    """Run a one-sensor DAG with ``dag.test()`` (from a file, as Airflow 3 requires); returns the task state."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    dag_id = "metronome_sensor_" + re.sub(r"\W+", "_", request.node.name).strip("_")
    folder = airflow_home / "dags"
    folder.mkdir(exist_ok=True)
    path = folder / f"{dag_id}.py"
    path.write_text(DAG_FILE.format(dag_id=dag_id, kwargs=sensor_kwargs))
    try:
        bag = DagBag(dag_folder=str(path))
        assert bag.import_errors == {}
        dag = bag.get_dag(dag_id)
        run = dag.test(logical_date=LOGICAL_DATE) if AIRFLOW_V3 else dag.test(execution_date=LOGICAL_DATE)
    finally:
        path.unlink()
    (task_instance,) = run.get_task_instances()
    return str(task_instance.state)


@contextmanager
def clock_passes_availability_after(simulator: MetronomeSimulator, checks: int) -> Iterator[None]:
    """Start before the day is available; move past it once ``checks`` /costs requests have arrived."""
    simulator.now = BEFORE
    with clock_moves_to(simulator, AVAILABLE_AT, after=checks, requests_to="/costs"):
        yield


@pytest.mark.usefixtures("metronome_conn", "airflow_db")
@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_dag_run_waits_for_the_day_then_succeeds(
    simulator: MetronomeSimulator,
    airflow_home: Path,
    request: pytest.FixtureRequest,
    mode: str,
) -> None:
    kwargs: dict[str, Any] = {"customer_ids": plain_customer(simulator), "poke_interval": 0.05, "timeout": 60}
    kwargs |= {"deferrable": True} if mode == "deferrable" else {"mode": mode}
    if mode == "reschedule":
        # dag.test() runs a rescheduled task again only after a pause; one check is enough here.
        simulator.now = AVAILABLE_AT
        assert run_dag(airflow_home, request, **kwargs) == "success"
        return

    with clock_passes_availability_after(simulator, checks=2):
        state = run_dag(airflow_home, request, **kwargs)

    assert state == "success"
    assert len(simulator.requests_for("/costs")) >= 2, "the first check found the day missing"


@pytest.mark.usefixtures("metronome_conn", "airflow_db")
@pytest.mark.e2e
@pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])
def test_dag_run_fails_at_once_for_an_unknown_customer(
    simulator: MetronomeSimulator,
    airflow_home: Path,
    request: pytest.FixtureRequest,
    deferrable: bool,
) -> None:
    unknown = str(uuid.uuid4())
    state = run_dag(airflow_home, request, customer_ids=unknown, deferrable=deferrable, timeout=60)

    assert state == "failed"
    assert len(simulator.requests) == 1


@pytest.mark.usefixtures("metronome_conn", "airflow_db")
@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
@pytest.mark.parametrize("soft_fail", [False, True], ids=["fail", "soft_fail"])
def test_dag_run_timeout_fails_or_skips_in_every_mode(
    simulator: MetronomeSimulator,
    airflow_home: Path,
    request: pytest.FixtureRequest,
    mode: str,
    soft_fail: bool,
) -> None:
    kwargs: dict[str, Any] = {"customer_ids": plain_customer(simulator), "timeout": 0, "soft_fail": soft_fail}
    kwargs |= {"deferrable": True} if mode == "deferrable" else {"mode": mode}
    simulator.now = BEFORE

    assert run_dag(airflow_home, request, **kwargs) == ("skipped" if soft_fail else "failed")
    # Deferrable: the worker's own check, then the trigger's.
    assert len(simulator.requests_for("/costs")) == (2 if mode == "deferrable" else 1)


# -- a real account ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["costs", "invoice_breakdowns"])
def test_a_real_account_opens_the_gate_once_the_day_is_produced_and_not_before(
    simulator: MetronomeSimulator, metronome_conn: str, source: str
) -> None:
    simulator.add_lifecycle_customers(dt.date(2024, 1, 5), dt.date(2024, 1, 6))
    sensor = make_sensor(source=source, on_customer_error="skip")

    simulator.now = BEFORE
    assert sensor.poke(CONTEXT) is False
    simulator.now = AVAILABLE_AT
    assert sensor.poke(CONTEXT) is True


@pytest.mark.parametrize("source", ["costs", "invoice_breakdowns"])
def test_customers_with_nothing_billed_asked_first_neither_open_nor_hold_the_gate(
    simulator: MetronomeSimulator, metronome_conn: str, source: str
) -> None:
    roles = simulator.add_lifecycle_customers(dt.date(2024, 1, 5), dt.date(2024, 1, 6))
    unbilled = roles["no_plan" if source == "costs" else "no_contract"]
    customers = [unbilled, roles["created_after"], plain_customer(simulator)]
    sensor = make_sensor(customer_ids=customers, source=source)

    simulator.now = BEFORE
    assert sensor.poke(CONTEXT) is False
    simulator.now = AVAILABLE_AT
    assert sensor.poke(CONTEXT) is True
    # Neither unbilled customer says anything about the day, whatever the order: the billed one does.
    assert simulator.requests_for(f"/v1/customers/{plain_customer(simulator)}/")
