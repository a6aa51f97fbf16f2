"""The example DAGs (``dags_examples/``) run end to end with ``dag.test()`` against the simulator.

Each test copies example files into the DAGs folder of the test AIRFLOW_HOME (Airflow 3 runs only DAGs
it can find there), loads them with a DagBag, runs them on the SQLite metadata database with the
``metronome_costs_base_uri`` Variable pointing at a temporary folder, and compares every object
written with the simulator's data, encoded by the project's own record functions.
"""

from __future__ import annotations

import datetime as dt
import gzip
import importlib
import json
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from airflow_provider_metronome._compat import AIRFLOW_V3, RUNTIME_PARTITIONS
from airflow_provider_metronome.models import CostWindow, InvoiceBreakdown
from airflow_provider_metronome.output.encodings import encode_record
from airflow_provider_metronome.output.records import Record, to_records
from airflow_provider_metronome.testing import MetronomeSimulator
from airflow_provider_metronome.vocabulary import Source
from tests.support.runs import DagRunResult, clock_moves_to, connection_json, run_dag_once
from tests.support.s3 import MotoS3, forget_cached_s3_stores, free_port, moto_s3_server
from tests.support.simulator import not_produced_yet

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 2
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
DAILY = "metronome_daily_costs.py"
ALL_CUSTOMERS = "metronome_costs_all_customers.py"
RESTATEMENT = "metronome_costs_restatement.py"
CONSUMER = "metronome_costs_consumer.py"
HISTORY = "metronome_costs_history.py"
# The source each example fetches as written.
EXAMPLE_SOURCES: dict[str, Source] = {
    DAILY: "invoice_breakdowns",
    ALL_CUSTOMERS: "costs",
    RESTATEMENT: "invoice_breakdowns",
    CONSUMER: "invoice_breakdowns",
    HISTORY: "invoice_breakdowns",
}
SOURCES: list[Source] = ["invoice_breakdowns", "costs"]
DAILY_COSTS_ASSET = "metronome://costs/daily"
ONE_DAY = dt.timedelta(days=1)
SENSOR_TIMEOUT = 60
# By then every day of January 2024 is available and its invoices are finalized.
SETTLED = dt.datetime(2024, 2, 10, tzinfo=dt.timezone.utc)
# Python source of each kind of daily timetable, and whether its data intervals are zero-length.
TIMETABLES = {
    "trigger": ('CronTriggerTimetable("@daily", timezone="UTC")', True),
    "interval": ('CronDataIntervalTimetable("@daily", timezone="UTC")', False),
}
TIMETABLE_IMPORTS = """
try:
    from airflow.sdk import CronDataIntervalTimetable, CronTriggerTimetable
except ImportError:  # Airflow 2
    from airflow.timetables.interval import CronDataIntervalTimetable
    from airflow.timetables.trigger import CronTriggerTimetable
"""


def midnight(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc)


# -- running example DAGs ----------------------------------------------------------------------------


class Examples:
    """Puts example DAG files (or variants of them) in the DAGs folder, loads and runs them."""

    def __init__(self, dags_folder: Path) -> None:
        self.dags_folder = dags_folder
        self.written: list[Path] = []

    def load(
        self,
        file_name: str,
        *,
        dag_id: str | None = None,
        timetable: str | None = None,
        source: Source | None = None,
    ) -> Any:
        """The example's DAG; ``dag_id``, ``timetable`` (Python source) and ``source`` make a variant of it.

        A ``source`` other than the example's own makes a variant named ``<dag id>_<source>``.
        """
        example_id = Path(file_name).stem
        code = (EXAMPLES / file_name).read_text()
        if timetable is not None:
            code = replace_once(code, "from __future__ import annotations\n", TIMETABLE_IMPORTS, keep=True)
            # The daily example's schedule is chosen by Airflow line (SCHEDULE); the others' is literal.
            schedule = "schedule=SCHEDULE" if "schedule=SCHEDULE" in code else 'schedule="@daily"'
            code = replace_once(code, schedule, f"schedule={timetable}")
        if source is not None and source != EXAMPLE_SOURCES[file_name]:
            code = with_source(code, source)
            dag_id = dag_id or f"{example_id}_{source}"
        if dag_id is not None:
            code = replace_once(code, f'dag_id="{example_id}"', f'dag_id="{dag_id}"')
        path = self.dags_folder / f"{dag_id or example_id}.py"
        path.write_text(code)
        self.written.append(path)
        bag = DagBag(dag_folder=str(path))
        assert bag.import_errors == {}
        dag = bag.get_dag(dag_id or example_id)
        for task in dag.tasks:
            # A run that cannot succeed should fail the test at once, not after the example's retries
            # (5 minutes apart) or its sensor's 12-hour timeout.
            task.retries = 0
            if hasattr(task, "poke_interval"):
                task.timeout = SENSOR_TIMEOUT
        return dag

    def run(self, dag: Any, logical_date: dt.datetime, conf: dict[str, Any] | None = None) -> DagRunResult:
        return run_dag_once(dag, logical_date, conf)

    def remove(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)


def replace_once(source: str, old: str, new: str, *, keep: bool = False) -> str:
    """``source`` with its only ``old`` replaced by ``new`` (or followed by it, with ``keep``)."""
    assert source.count(old) == 1, f"expected exactly one {old!r} in the example"
    return source.replace(old, old + new if keep else new)


def with_source(code: str, source: Source) -> str:
    """An example's code fetching ``source`` instead of its own.

    Where the example names its source, every ``source=`` changes; ``/costs`` refuses customers whose
    plan has a UNIQUE-type metric, so a task switched to it also skips them (``on_customer_error``), as
    the README advises. An example without a ``source=`` (all-customers, on ``/costs``) gets one in its
    mapped operator.
    """
    named = re.compile(r'^(?P<indent> +)source="[a-z_]+",\n', re.MULTILINE)
    if named.search(code) is None:
        skip = '        on_customer_error="skip",\n'
        return replace_once(code, skip, f'        source="{source}",\n', keep=True)
    skip_refused = '\\g<indent>on_customer_error="skip",\n' if source == "costs" else ""
    return named.sub(f'\\g<indent>source="{source}",\n{skip_refused}', code)


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the examples write: the ``metronome_costs_base_uri`` Variable, set as users can."""
    lake = tmp_path / "lake"
    monkeypatch.setenv("AIRFLOW_VAR_METRONOME_COSTS_BASE_URI", uri_of(lake))
    return lake


@pytest.fixture
def sim(simulator: MetronomeSimulator, metronome_conn: str) -> MetronomeSimulator:
    simulator.now = SETTLED
    return simulator


@pytest.fixture
def examples(airflow_db: Path, airflow_home: Path, lake: Path) -> Iterator[Examples]:
    if not AIRFLOW_V3:
        # Airflow 2's dag.test() deletes an earlier run of the same logical date through the ORM, which
        # needs the FAB users table mapped, as it is in `airflow dags test`. Its Flask-era imports warn.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("airflow.providers.fab.auth_manager.models")
    folder = airflow_home / "dags"
    folder.mkdir(exist_ok=True)
    examples = Examples(folder)
    yield examples
    examples.remove()


# -- what the objects should hold ----------------------------------------------------------------------


def day_object(lake: Path, day: dt.date) -> Path:
    """Where the daily and restatement DAGs keep ``day``."""
    return lake / "costs" / f"date={day}" / "costs.jsonl.gz"


def uri_of(path: Path) -> str:
    """The ``file://`` URL the examples build, unquoted (``Path.as_uri()`` would write ``date%3D``)."""
    return f"file://{path}"


def stamp(path: Path) -> tuple[int, int]:
    """What changes when a file is replaced, even by identical bytes."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def read_object(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def files_in(lake: Path) -> list[str]:
    """Every file under ``lake``, temporary ones included."""
    return sorted(path.relative_to(lake).as_posix() for path in lake.rglob("*") if path.is_file())


def window_of(day: dt.date) -> dict[str, str]:
    return {"starting_on": f"{day}T00:00:00Z", "ending_before": f"{day + ONE_DAY}T00:00:00Z"}


def breakdown_lines(sim: MetronomeSimulator, customer_ids: Iterable[str], day: dt.date) -> bytes:
    """The ``line_items`` object of ``day`` from invoice breakdowns: the customers' in id order."""
    lines = b""
    for customer_id in sorted(customer_ids):
        invoices = [
            InvoiceBreakdown.model_validate(item)
            for item in sim.breakdowns_for(customer_id, day, day + ONE_DAY)
        ]
        records = to_records("line_items", customer_id, invoices)  # one day: the API order
        lines += b"".join(map(encode_record, records))
    return lines


def cost_lines(sim: MetronomeSimulator, customer_ids: Iterable[str], day: dt.date) -> bytes:
    """The ``line_items`` object of ``day`` from ``/costs``: the customers' in id order."""
    lines = b""
    for customer_id in sorted(customer_ids):
        records = to_records(
            "line_items", customer_id, [CostWindow.model_validate(sim.costs_for(customer_id, day))]
        )
        lines += b"".join(map(encode_record, records))
    return lines


def invoice_totals(sim: MetronomeSimulator, customer_ids: Iterable[str], day: dt.date) -> dict[str, str]:
    """Each credit type's exact total over the customers' invoices of ``day``, straight from the simulator.

    As text, the way the examples return totals (XCom would keep a ``Decimal`` as a float).
    """
    totals: dict[str, Decimal] = {}
    for customer_id in customer_ids:
        for invoice in sim.breakdowns_for(customer_id, day, day + ONE_DAY):
            name = invoice["credit_type"]["name"]
            totals[name] = totals.get(name, Decimal(0)) + Decimal(str(invoice["total"]))
    return {name: str(total) for name, total in sorted(totals.items())}


def cost_totals(sim: MetronomeSimulator, customer_ids: Iterable[str], day: dt.date) -> dict[str, str]:
    """Each credit type's exact cost over the customers' ``/costs`` windows of ``day``, as text."""
    totals: dict[str, Decimal] = {}
    for customer_id in customer_ids:
        window = sim.costs_for(customer_id, day)
        for credit_type in [] if window is None else window["credit_types"].values():
            name = credit_type["name"]
            totals[name] = totals.get(name, Decimal(0)) + Decimal(str(credit_type["cost"]))
    return {name: str(total) for name, total in sorted(totals.items())}


def source_totals(
    sim: MetronomeSimulator, source: Source, customer_ids: Iterable[str], day: dt.date
) -> dict[str, str]:
    return (invoice_totals if source == "invoice_breakdowns" else cost_totals)(sim, customer_ids, day)


# -- a real account: the simulator's own model of who is billed when ------------------------------------


def parse_moment(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def window_customer_ids(sim: MetronomeSimulator, first: dt.date, end: dt.date) -> list[str]:
    """Every customer that existed at some moment of ``[first, end)``, sorted: created, archived or not.

    From every customer the simulator knows (archived and not yet created ones included), by its own
    ``created_at`` and ``archived_at``; not from a listing.
    """
    start, stop = midnight(str(first)), midnight(str(end))
    ids = []
    for customer in sim.customers:
        archived_at = customer["archived_at"]
        if parse_moment(customer["created_at"]) < stop and (
            archived_at is None or parse_moment(archived_at) > start
        ):
            ids.append(customer["id"])
    return sorted(ids)


def served_ids(sim: MetronomeSimulator, source: Source, customer_ids: Iterable[str]) -> list[str]:
    """``customer_ids`` without those ``source`` refuses (``/costs``: a UNIQUE-type metric), sorted."""
    refused = set(sim.unique_metric_customer_ids) if source == "costs" else set()
    return sorted(customer for customer in customer_ids if customer not in refused)


def billed_objects(
    sim: MetronomeSimulator, source: Source, customer_id: str, day: dt.date
) -> list[CostWindow | InvoiceBreakdown]:
    """What the customer has for ``day`` in the simulator's model: nothing on a day it is not billed."""
    if day not in sim.billed_days(customer_id, source, day, day + ONE_DAY):
        return []
    if source == "costs":
        window = sim.costs_for(customer_id, day)
        assert window is not None, f"{customer_id} is billed on {day} but has no /costs window"
        return [CostWindow.model_validate(window)]
    return [
        InvoiceBreakdown.model_validate(item) for item in sim.breakdowns_for(customer_id, day, day + ONE_DAY)
    ]


def model_records(
    sim: MetronomeSimulator, source: Source, day: dt.date, customer_ids: Iterable[str] | None = None
) -> list[Record]:
    """The ``line_items`` records of ``day`` the model expects, in id order.

    Of every customer the simulator knows (or of ``customer_ids``), that ``source`` serves and bills
    that day.
    """
    known = [customer["id"] for customer in sim.customers] if customer_ids is None else customer_ids
    records: list[Record] = []
    for customer_id in served_ids(sim, source, known):
        records.extend(to_records("line_items", customer_id, billed_objects(sim, source, customer_id, day)))
    return records


def customer_days(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The (customer, day) of each record, in order: a customer missing or written twice shows here."""
    return [(str(record["customer_id"]), str(record["start_timestamp"])[:10]) for record in records]


def not_billed_ids(
    sim: MetronomeSimulator, source: Source, first: dt.date, end: dt.date
) -> dict[str, list[str]]:
    """For each day of ``[first, end)``, the window's customers served by ``source`` but not billed on it."""
    customers = served_ids(sim, source, window_customer_ids(sim, first, end))
    by_day: dict[str, list[str]] = {}
    day = first
    while day < end:
        unbilled = [cid for cid in customers if not sim.billed_days(cid, source, day, day + ONE_DAY)]
        if unbilled:
            by_day[str(day)] = unbilled
        day += ONE_DAY
    return by_day


def check_days_against_the_model(
    sim: MetronomeSimulator, source: Source, objects: Mapping[dt.date, bytes]
) -> set[str]:
    """Each day's object holds every billed customer's records once, as the model has them; who was written.

    ``objects`` maps each day to the uncompressed bytes stored for it.
    """
    written: set[str] = set()
    for day, content in objects.items():
        records = [json.loads(line) for line in content.splitlines()]
        expected = model_records(sim, source, day)
        # No customer with costs that day missing, none twice.
        assert customer_days(records) == customer_days(expected), day
        assert content == b"".join(map(encode_record, expected)), day
        written |= {str(record["customer_id"]) for record in records}
    return written


def check_lifecycle_roles(roles: Mapping[str, str], source: Source, written: set[str]) -> None:
    """The lifecycle customers billed in the window were written; the others were not.

    For windows of several days: a day without usage has no line item, so on one day alone a billed
    customer may have nothing to write.
    """
    unbilled = "no_contract" if source == "invoice_breakdowns" else "no_plan"
    billed = {"created_inside", "archived_inside", "archived_after", "plan_ends_inside", "plan_starts_inside"}
    billed.add("no_plan" if source == "invoice_breakdowns" else "no_contract")
    assert {role for role, customer in roles.items() if customer in written} == billed
    for role in ("archived_before", "created_after", unbilled):
        assert roles[role] not in written


# -- asset events ----------------------------------------------------------------------------------------


def asset_models() -> tuple[Any, Any]:
    try:
        from airflow.models.asset import AssetEvent, AssetModel
    except ImportError:  # Airflow 2
        from airflow.models.dataset import DatasetEvent as AssetEvent  # type: ignore[no-redef]
        from airflow.models.dataset import DatasetModel as AssetModel  # type: ignore[no-redef]
    return AssetEvent, AssetModel


def last_asset_event_id() -> int:
    from airflow.utils.session import create_session

    event, _ = asset_models()
    with create_session() as session:
        return int(session.scalar(select(func.max(event.id))) or 0)


def asset_events_after(event_id: int) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, asset URI, extra) of the events recorded since ``event_id``."""
    from airflow.utils.session import create_session

    event, model = asset_models()
    key = event.asset_id if hasattr(event, "asset_id") else event.dataset_id
    with create_session() as session:
        rows = session.execute(
            select(event.id, model.uri, event.extra)
            .join(model, key == model.id)
            .where(event.id > event_id)
            .order_by(event.id)
        ).all()
    return [(row_id, uri, dict(extra or {})) for row_id, uri, extra in rows]


def register_daily_costs_asset() -> None:
    """What Airflow 2's DAG processor does for an outlet (its dag.test() does not); Airflow 3's does it."""
    if AIRFLOW_V3:
        return
    from airflow.utils.session import create_session

    _, model = asset_models()
    with create_session() as session:
        if session.scalar(select(model).where(model.uri == DAILY_COSTS_ASSET)) is None:
            session.add(model(uri=DAILY_COSTS_ASSET))


def consume_in_next_run(monkeypatch: pytest.MonkeyPatch, event_id: int) -> None:
    """Let the next ``dag.test()`` run consume the asset event, as the scheduler's asset-triggered runs do.

    ``dag.test()`` only makes manual runs; attaching the event to the run it creates is what the
    scheduler does, and from there Airflow builds the task's ``triggering_asset_events`` itself.
    """
    if AIRFLOW_V3:
        import airflow.models.dagrun as module

        name = "get_or_create_dagrun"
    else:
        import airflow.models.dag as module  # type: ignore[no-redef]

        name = "_get_or_create_dagrun"
    create = getattr(module, name)
    event_model, _ = asset_models()

    def create_consuming(**kwargs: Any) -> Any:
        dag_run = create(**kwargs)
        session = kwargs["session"]
        consumed = dag_run.consumed_asset_events if AIRFLOW_V3 else dag_run.consumed_dataset_events
        consumed.append(session.get(event_model, event_id))
        session.commit()
        return dag_run

    monkeypatch.setattr(module, name, create_consuming)


# -- the daily DAG -------------------------------------------------------------------------------------


def test_daily_dag_writes_consecutive_days_from_the_simulators_data(
    sim: MetronomeSimulator, examples: Examples, lake: Path
) -> None:
    dag = examples.load(DAILY)
    logical_dates = [midnight("2024-01-02"), midnight("2024-01-03"), midnight("2024-01-04")]

    runs = [examples.run(dag, logical_date) for logical_date in logical_dates]

    for logical_date, run in zip(logical_dates, runs, strict=True):
        day = (logical_date - ONE_DAY).date()
        assert run.task_states() == {("wait_for_costs", -1): "success", ("fetch_costs", -1): "success"}
        # "@daily" is a zero-length interval at the logical date on Airflow 3, the day before it on
        # Airflow 2: either way the run fetches the UTC day before its logical date.
        if AIRFLOW_V3:
            assert run.data_interval == (logical_date, logical_date)
        else:
            assert run.data_interval == (logical_date - ONE_DAY, logical_date)
        path = day_object(lake, day)
        content = read_object(path)
        assert content == breakdown_lines(sim, sim.active_customer_ids, day)
        assert run.xcom("fetch_costs") == {
            "uri": uri_of(path),
            "source": "invoice_breakdowns",
            "record_format": "line_items",
            "window": window_of(day),
            "customers": len(sim.active_customer_ids),
            "records": content.count(b"\n"),
            "bytes": path.stat().st_size,
            "changed": True,
            # A file:// URI names no storage connection.
            "conn_id": None,
            "missing_days": {},
            "not_billed": {},
            # The customers of the day: the simulator's archived customers left it in 2020.
            "customer_set": {
                "active": len(sim.active_customer_ids),
                "archived": 0,
                "created_after_window": 0,
                "archived_before_window": len(sim.archived_customer_ids),
            },
            "skipped": [],
        }
    assert files_in(lake) == [f"costs/date=2024-01-0{day}/costs.jsonl.gz" for day in (1, 2, 3)]


def test_rerunning_an_unchanged_day_leaves_its_object_untouched(
    sim: MetronomeSimulator, examples: Examples, lake: Path
) -> None:
    dag = examples.load(DAILY)
    path = day_object(lake, dt.date(2024, 1, 5))
    examples.run(dag, midnight("2024-01-06"))
    first, first_stamp = path.read_bytes(), stamp(path)

    rerun = examples.run(dag, midnight("2024-01-06"))

    assert rerun.task_states() == {("wait_for_costs", -1): "success", ("fetch_costs", -1): "success"}
    # The same bytes: the stored object is left as it was, not replaced by a copy.
    assert stamp(path) == first_stamp
    assert path.read_bytes() == first
    assert rerun.xcom("fetch_costs")["changed"] is False
    assert files_in(lake) == ["costs/date=2024-01-05/costs.jsonl.gz"]


@pytest.mark.parametrize("kind", ["trigger", "interval"])
def test_daily_dag_on_each_kind_of_timetable(
    sim: MetronomeSimulator, examples: Examples, lake: Path, kind: str
) -> None:
    timetable, zero_length = TIMETABLES[kind]
    dag_id = f"metronome_daily_costs_{kind}"
    dag = examples.load(DAILY, dag_id=dag_id, timetable=timetable)
    # Midnight, then a logical date later in the day: the run covers the UTC day before its date.
    logical_dates = {
        dt.date(2024, 1, 9): midnight("2024-01-10"),
        dt.date(2024, 1, 10): midnight("2024-01-11") + dt.timedelta(hours=6),
    }

    for day, logical_date in logical_dates.items():
        run = examples.run(dag, logical_date)

        assert run.task_states() == {("wait_for_costs", -1): "success", ("fetch_costs", -1): "success"}
        if zero_length:
            assert run.data_interval == (logical_date, logical_date)
        else:
            assert run.data_interval == (midnight(str(day)), midnight(str(day + ONE_DAY)))
        assert run.xcom("fetch_costs")["window"] == window_of(day)
        assert read_object(day_object(lake, day)) == breakdown_lines(sim, sim.active_customer_ids, day)
    assert files_in(lake) == [f"costs/date={day}/costs.jsonl.gz" for day in logical_dates]


def test_daily_dag_waits_until_metronome_has_the_day(
    simulator: MetronomeSimulator, metronome_conn: str, examples: Examples, lake: Path
) -> None:
    day = dt.date(2024, 1, 14)
    day_end = dt.datetime(2024, 1, 15, tzinfo=dt.timezone.utc)
    # The day becomes available two hours after it ends (the simulator's availability delay).
    simulator.now = day_end + dt.timedelta(hours=1)
    dag = examples.load(DAILY)
    # The example checks every 15 minutes; the test cannot wait that long between checks.
    dag.get_task("wait_for_costs").poke_interval = 0.05
    customers = len(simulator.active_customer_ids)

    with clock_moves_to(
        simulator, day_end + dt.timedelta(hours=3), after=3, requests_to="/invoices/breakdowns"
    ):
        run = examples.run(dag, day_end)

    assert run.task_states() == {("wait_for_costs", -1): "success", ("fetch_costs", -1): "success"}
    listings = [record for record in simulator.requests if record.path == "/v1/customers"]
    # The first check lists the customers of the day, and so do the check that finds the day and the
    # operator (each listing reads the active customers, then the archived ones); the checks in
    # between ask the customer that was missing the day, and nothing else.
    assert sorted(record.query["only_archived"][0] for record in listings) == ["false"] * 3 + ["true"] * 3
    # The check that finds the day asks that customer, who has it: so has the account, and the check
    # stops there (its sample of three is not needed); the operator asks every customer.
    waiting_checks = len(simulator.requests_for("/invoices/breakdowns")) - 1 - customers
    assert waiting_checks >= 2
    assert read_object(day_object(lake, day)) == breakdown_lines(
        simulator, simulator.active_customer_ids, day
    )


# -- the other examples --------------------------------------------------------------------------------


def test_all_customers_dag_writes_one_object_per_batch_and_reports_them(
    sim: MetronomeSimulator, examples: Examples, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = examples.load(ALL_CUSTOMERS)
    monkeypatch.setitem(dag.get_task("list_customer_batches").python_callable.__globals__, "BATCH_SIZE", 10)
    day = dt.date(2024, 1, 5)
    ids = sorted(sim.active_customer_ids)
    batches = [ids[:10], ids[10:20], ids[20:]]
    unique = set(sim.unique_metric_customer_ids)
    billable = [customer for customer in ids if customer not in unique]

    run = examples.run(dag, midnight("2024-01-06"))

    assert run.task_states() == {
        ("list_customer_batches", -1): "success",
        ("fetch_batch", 0): "success",
        ("fetch_batch", 1): "success",
        ("fetch_batch", 2): "success",
        ("report", -1): "success",
    }
    assert run.xcom("list_customer_batches") == batches
    folder = lake / "costs-by-batch" / f"date={day}"
    objects = [folder / f"batch-{index}.jsonl.gz" for index in range(3)]
    records = 0
    written: set[str] = set()
    for index, (batch, path) in enumerate(zip(batches, objects, strict=True)):
        content = read_object(path)
        written |= {json.loads(line)["customer_id"] for line in content.splitlines()}
        assert content == cost_lines(sim, [customer for customer in batch if customer not in unique], day)
        manifest = run.xcom("fetch_batch", map_index=index)
        assert manifest["uri"] == uri_of(path)
        assert [skip["customer_id"] for skip in manifest["skipped"]] == [c for c in batch if c in unique]
        records += content.count(b"\n")
    report = run.xcom("report")
    assert report["objects"] == [uri_of(path) for path in objects]
    # Customers whose records were written: a billable one without costs that day does not count.
    assert report["customers"] == len(written)
    assert written <= set(billable)
    assert report["records"] == records
    assert report["totals"] == cost_totals(sim, billable, day)
    # /costs refuses customers whose plan has a UNIQUE-type metric; the example skips them.
    assert sorted(skip["customer_id"] for skip in report["skipped"]) == sorted(unique)
    assert {skip["status_code"] for skip in report["skipped"]} == {400}
    assert files_in(lake) == [f"costs-by-batch/date={day}/batch-{index}.jsonl.gz" for index in range(3)]


def test_restatement_replaces_the_trailing_days_where_the_daily_dag_wrote_them(
    simulator: MetronomeSimulator, metronome_conn: str, examples: Examples, lake: Path
) -> None:
    daily = examples.load(DAILY)
    restatement = examples.load(RESTATEMENT)
    days = [dt.date(2024, 1, 17), dt.date(2024, 1, 18), dt.date(2024, 1, 19)]
    # While January is open its invoices are drafts; once it has closed they are finalized.
    simulator.now = dt.datetime(2024, 1, 20, 12, tzinfo=dt.timezone.utc)
    examples.run(daily, midnight("2024-01-19"))
    draft = read_object(day_object(lake, days[1]))
    assert draft == breakdown_lines(simulator, simulator.active_customer_ids, days[1])
    simulator.now = SETTLED
    simulator.clear_requests()

    run = examples.run(restatement, midnight("2024-01-20"), conf={"days": 3})

    assert run.task_states() == {("trailing_window", -1): "success", ("refetch_days", -1): "success"}
    # One task, one request per customer for the three days (plus the customer listing).
    assert len(simulator.requests_for("/invoices/breakdowns")) == len(simulator.active_customer_ids)
    manifest = run.xcom("refetch_days")
    assert manifest["window"] == {
        "starting_on": "2024-01-17T00:00:00Z",
        "ending_before": "2024-01-20T00:00:00Z",
    }
    assert [entry["uri"] for entry in manifest["objects"]] == [uri_of(day_object(lake, day)) for day in days]
    assert manifest["changed_days"] == [str(day) for day in days]
    for day in days:
        assert read_object(day_object(lake, day)) == breakdown_lines(
            simulator, simulator.active_customer_ids, day
        )
    restated = read_object(day_object(lake, days[1]))
    assert {json.loads(line)["invoice_status"] for line in draft.splitlines()} == {"DRAFT"}
    assert {json.loads(line)["invoice_status"] for line in restated.splitlines()} == {"FINALIZED"}
    assert files_in(lake) == [f"costs/date={day}/costs.jsonl.gz" for day in days]


def test_history_then_daily_then_restatement_share_one_layout(
    simulator: MetronomeSimulator, metronome_conn: str, examples: Examples, lake: Path
) -> None:
    history = examples.load(HISTORY)
    daily = examples.load(DAILY)
    restatement = examples.load(RESTATEMENT)
    january = [dt.date(2024, 1, 1) + dt.timedelta(days=offset) for offset in range(31)]
    february = [dt.date(2024, 2, 18), dt.date(2024, 2, 19), dt.date(2024, 2, 20)]
    simulator.now = dt.datetime(2024, 2, 20, 12, tzinfo=dt.timezone.utc)

    # January in one run: its data interval is the month, whatever the Airflow line.
    loaded = examples.run(history, midnight("2024-02-01"))

    assert loaded.task_states() == {("wait_for_month", -1): "success", ("load_month", -1): "success"}
    assert loaded.data_interval == (midnight("2024-01-01"), midnight("2024-02-01"))
    # The sensor's first customer has every day of the month, so the account has them: one request;
    # the operator one request per customer for the 31 days.
    assert len(simulator.requests_for("/invoices/breakdowns")) == 1 + len(simulator.active_customer_ids)
    for day in january:
        assert read_object(day_object(lake, day)) == breakdown_lines(
            simulator, simulator.active_customer_ids, day
        )
    # The daily DAG re-running a loaded day finds the very same bytes and leaves the object alone.
    loaded_day = day_object(lake, january[14])
    before = stamp(loaded_day)
    rerun = examples.run(daily, midnight("2024-01-16"))
    assert rerun.xcom("fetch_costs")["changed"] is False
    assert stamp(loaded_day) == before
    # The daily DAG writes two February days as drafts, then the restatement finalizes them.
    for day in february[:2]:
        examples.run(daily, midnight(str(day + ONE_DAY)))
    simulator.now = dt.datetime(2024, 3, 10, tzinfo=dt.timezone.utc)
    restated = examples.run(restatement, midnight("2024-02-21"), conf={"days": 3})
    # Read now: dag.test() replaces a run of the same logical date, XComs included.
    assert restated.xcom("refetch_days")["changed_days"] == [str(day) for day in february]
    again = examples.run(restatement, midnight("2024-02-21"), conf={"days": 3})

    assert again.xcom("refetch_days")["changed_days"] == []
    for day in february:
        assert read_object(day_object(lake, day)) == breakdown_lines(
            simulator, simulator.active_customer_ids, day
        )
    assert files_in(lake) == [f"costs/date={day}/costs.jsonl.gz" for day in january + february]


def test_consumer_sums_the_day_named_by_the_daily_dags_asset_event(
    sim: MetronomeSimulator, examples: Examples, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_daily_costs_asset()
    daily = examples.load(DAILY)
    consumer = examples.load(CONSUMER)
    day = dt.date(2024, 1, 8)
    path = day_object(lake, day)
    before = last_asset_event_id()
    produced = examples.run(daily, midnight("2024-01-09"))
    ((event_id, uri, extra),) = asset_events_after(before)
    assert uri == DAILY_COSTS_ASSET
    assert extra == {key: value for key, value in produced.xcom("fetch_costs").items() if key != "skipped"}
    consume_in_next_run(monkeypatch, event_id)

    run = examples.run(consumer, midnight("2024-01-09") + dt.timedelta(hours=1))

    assert run.task_states() == {("log_day_totals", -1): "success"}
    assert run.xcom("log_day_totals") == [
        {
            "uri": uri_of(path),
            "customers": len(sim.active_customer_ids),
            "records": read_object(path).count(b"\n"),
            "totals": invoice_totals(sim, sim.active_customer_ids, day),
        }
    ]


# -- no example publishes an empty or partial day ---------------------------------------------------------


def test_all_customers_dag_fails_without_writing_for_a_day_metronome_has_not_produced(
    simulator: MetronomeSimulator,
    metronome_conn: str,
    examples: Examples,
    lake: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dag = examples.load(ALL_CUSTOMERS)
    monkeypatch.setitem(dag.get_task("list_customer_batches").python_callable.__globals__, "BATCH_SIZE", 10)
    # Early on 2024-01-06: Metronome has not produced 2024-01-05 yet.
    simulator.now = dt.datetime(2024, 1, 6, 0, 5, tzinfo=dt.timezone.utc)

    run = examples.run(dag, midnight("2024-01-06"))

    states = run.task_states()
    assert {states[("fetch_batch", index)] for index in range(3)} == {"failed"}
    assert states[("report", -1)] == "upstream_failed"
    assert run.state == "failed"
    # No empty objects stand where readers look for the day.
    assert files_in(lake) == []


def test_restatement_never_replaces_a_complete_day_with_one_lacking_days(
    sim: MetronomeSimulator, examples: Examples, lake: Path
) -> None:
    daily = examples.load(DAILY)
    restatement = examples.load(RESTATEMENT)
    days = [dt.date(2024, 1, 17), dt.date(2024, 1, 18), dt.date(2024, 1, 19)]
    for day in days:
        examples.run(daily, midnight(str(day + ONE_DAY)))
    complete = {day: read_object(day_object(lake, day)) for day in days}
    stamps = {day: stamp(day_object(lake, day)) for day in days}
    # Re-fetched later, Metronome answers without 2024-01-19 for the whole account: a day it has not
    # produced (one customer alone lacking a day others have reads as nothing billed, not late).
    customers = sorted(sim.active_customer_ids)
    not_produced_yet(sim, customers, [days[2]])

    run = examples.run(restatement, midnight("2024-01-20"), conf={"days": 3})

    assert run.task_states() == {("trailing_window", -1): "success", ("refetch_days", -1): "failed"}
    # No day is written: each keeps the complete object the daily DAG wrote, untouched.
    assert {day: read_object(day_object(lake, day)) for day in days} == complete
    assert {day: stamp(day_object(lake, day)) for day in days} == stamps
    assert all(customer.encode() in complete[days[2]] for customer in customers)
    assert files_in(lake) == [f"costs/date={day}/costs.jsonl.gz" for day in days]


# -- a real account: customers created, archived, without a contract or a plan --------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_daily_dag_on_a_real_account_writes_every_billed_customer_once(
    sim: MetronomeSimulator, examples: Examples, lake: Path, source: Source
) -> None:
    days = [dt.date(2024, 1, 14), dt.date(2024, 1, 15), dt.date(2024, 1, 16)]
    end = days[-1] + ONE_DAY
    # Around the three days: created on the middle one, archived on it or after them, none before.
    roles = sim.add_lifecycle_customers(days[0], end)
    dag = examples.load(DAILY, source=source)

    runs = {day: examples.run(dag, midnight(str(day + ONE_DAY))) for day in days}

    objects = {}
    for day, run in runs.items():
        assert run.task_states() == {("wait_for_costs", -1): "success", ("fetch_costs", -1): "success"}
        manifest = run.xcom("fetch_costs")
        assert manifest["missing_days"] == {}
        assert {listed: entry["customer_ids"] for listed, entry in manifest["not_billed"].items()} == (
            not_billed_ids(sim, source, day, day + ONE_DAY)
        )
        refused = sorted(set(sim.unique_metric_customer_ids)) if source == "costs" else []
        assert sorted(skip["customer_id"] for skip in manifest["skipped"]) == refused
        objects[day] = read_object(day_object(lake, day))
    written = check_days_against_the_model(sim, source, objects)
    check_lifecycle_roles(roles, source, written)
    assert files_in(lake) == [f"costs/date={day}/costs.jsonl.gz" for day in days]


@pytest.mark.parametrize("source", SOURCES)
def test_history_dag_on_a_real_account_writes_every_billed_customer_once(
    sim: MetronomeSimulator, examples: Examples, lake: Path, source: Source
) -> None:
    january = [dt.date(2024, 1, 1) + dt.timedelta(days=offset) for offset in range(31)]
    roles = sim.add_lifecycle_customers(january[0], dt.date(2024, 2, 1))
    history = examples.load(HISTORY, source=source)

    run = examples.run(history, midnight("2024-02-01"))

    assert run.task_states() == {("wait_for_month", -1): "success", ("load_month", -1): "success"}
    manifest = run.xcom("load_month")
    assert manifest["missing_days"] == {}
    assert {listed: entry["customer_ids"] for listed, entry in manifest["not_billed"].items()} == (
        not_billed_ids(sim, source, january[0], dt.date(2024, 2, 1))
    )
    # The customers of the month: the active ones and those archived in it or since, once each.
    assert manifest["customer_set"]["archived"] == 2
    written = check_days_against_the_model(
        sim, source, {day: read_object(day_object(lake, day)) for day in january}
    )
    check_lifecycle_roles(roles, source, written)
    assert files_in(lake) == [f"costs/date={day}/costs.jsonl.gz" for day in january]


@pytest.mark.parametrize("source", SOURCES)
def test_restatement_dag_on_a_real_account_rewrites_every_billed_customer_once(
    sim: MetronomeSimulator, examples: Examples, lake: Path, source: Source
) -> None:
    # Its defaults: the 7 days up to the one the daily DAG fetches on 2024-01-20.
    days = [dt.date(2024, 1, 13) + dt.timedelta(days=offset) for offset in range(7)]
    roles = sim.add_lifecycle_customers(days[0], days[-1] + ONE_DAY)
    restatement = examples.load(RESTATEMENT, source=source)

    run = examples.run(restatement, midnight("2024-01-20"))

    assert run.task_states() == {("trailing_window", -1): "success", ("refetch_days", -1): "success"}
    manifest = run.xcom("refetch_days")
    assert manifest["window"] == {
        "starting_on": "2024-01-13T00:00:00Z",
        "ending_before": "2024-01-20T00:00:00Z",
    }
    assert manifest["changed_days"] == [str(day) for day in days]
    assert manifest["missing_days"] == {}
    assert {listed: entry["customer_ids"] for listed, entry in manifest["not_billed"].items()} == (
        not_billed_ids(sim, source, days[0], days[-1] + ONE_DAY)
    )
    written = check_days_against_the_model(
        sim, source, {day: read_object(day_object(lake, day)) for day in days}
    )
    check_lifecycle_roles(roles, source, written)
    assert files_in(lake) == [f"costs/date={day}/costs.jsonl.gz" for day in days]


# -- what one run of each example costs the account ----------------------------------------------------

# More customers than a listing page holds (100), so that the listing's pages show in the counts.
BUDGET_CUSTOMERS = 150


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[MetronomeSimulator]:
    """A settled simulator with ``BUDGET_CUSTOMERS`` active customers, as ``metronome_default``."""
    with MetronomeSimulator(customers=BUDGET_CUSTOMERS, now=SETTLED) as simulator:
        monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(simulator.url))
        yield simulator


def listing_requests(sim: MetronomeSimulator) -> int:
    """One listing of a window's customers: the active ones, then the archived ones, 100 a page each."""
    return max(1, math.ceil(len(sim.active_customer_ids) / 100)) + max(
        1, math.ceil(len(sim.archived_customer_ids) / 100)
    )


def requests_by_kind(sim: MetronomeSimulator) -> dict[str, int]:
    """The requests the simulator received: customer listings, and per-customer data requests."""
    kinds: dict[str, int] = {}
    for record in sim.requests:
        kind = "listing" if record.path == "/v1/customers" else "customer"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


# The README's table: requests of one run, for N customers of the window and L listing requests.
RUN_BUDGETS: dict[str, Any] = {
    # The sensor: the listing, then one customer, who has the day; the operator: the listing, then
    # every customer (invoice breakdowns: 35 days a request, so one each).
    DAILY: (midnight("2024-01-20"), lambda n, listing: {"listing": 2 * listing, "customer": n + 1}),
    # The same for a month (31 days: one request per customer).
    HISTORY: (midnight("2024-02-01"), lambda n, listing: {"listing": 2 * listing, "customer": n + 1}),
    # No sensor: the listing, then every customer once for the 7 days.
    RESTATEMENT: (midnight("2024-01-20"), lambda n, listing: {"listing": listing, "customer": n}),
    # The batches' listing, then every customer once over the batches (/costs: those it refuses too).
    ALL_CUSTOMERS: (midnight("2024-01-20"), lambda n, listing: {"listing": listing, "customer": n}),
}


@pytest.mark.parametrize("file_name", sorted(RUN_BUDGETS))
def test_one_run_of_each_example_costs_what_the_readme_says(
    account: MetronomeSimulator, examples: Examples, lake: Path, file_name: str
) -> None:
    logical_date, budget = RUN_BUDGETS[file_name]
    dag = examples.load(file_name)

    run = examples.run(dag, logical_date)

    assert run.state == "success", run.task_states()
    # The customers of the window: every active one (the simulator's archived ones left in 2020).
    assert requests_by_kind(account) == budget(len(account.active_customer_ids), listing_requests(account))
    assert listing_requests(account) == 3  # 150 active customers: two pages; archived: one page
    assert not any(record.throttled or record.status >= 500 for record in account.requests)


def test_the_consumer_costs_the_account_nothing(
    account: MetronomeSimulator, examples: Examples, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_daily_costs_asset()
    daily = examples.load(DAILY)
    consumer = examples.load(CONSUMER)
    before = last_asset_event_id()
    examples.run(daily, midnight("2024-01-20"))
    ((event_id, _, _),) = asset_events_after(before)
    consume_in_next_run(monkeypatch, event_id)
    account.clear_requests()

    run = examples.run(consumer, midnight("2024-01-20") + dt.timedelta(hours=1))

    assert run.task_states() == {("log_day_totals", -1): "success"}
    assert len(run.xcom("log_day_totals")) == 1
    # It reads the objects the daily DAG wrote, not Metronome.
    assert account.requests == []


# -- on S3, as the README writes the base URI: s3://<aws conn id>@<bucket>/... ------------------------------

S3_CONN_ID = "aws_lake"
S3_BUCKET = "metronome-lake"
S3_PREFIX = "metronome"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoS3]:
    """One moto_server process for the module's S3 tests."""
    pytest.importorskip("s3fs", reason="s3:// output needs the s3 extra: pip install '.[s3]'")
    pytest.importorskip("airflow.providers.amazon", reason="s3:// output needs the s3 extra")
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the test extra)")
    with moto_s3_server(bucket=S3_BUCKET) as server:
        yield server


@pytest.fixture
def s3_lake(moto_server: MotoS3, lake: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    """The examples' base URI in an empty moto bucket, through the ``aws_lake`` connection it names.

    Anything reading or writing an object without that connection falls back to boto3's own
    credentials and endpoint, which here is a closed loopback port: it fails instead of reaching AWS.
    """
    moto_server.clear()
    monkeypatch.setenv(f"AIRFLOW_CONN_{S3_CONN_ID.upper()}", moto_server.connection_json)
    monkeypatch.setenv("AIRFLOW_VAR_METRONOME_COSTS_BASE_URI", f"s3://{S3_CONN_ID}@{S3_BUCKET}/{S3_PREFIX}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    forget_cached_s3_stores()
    yield moto_server
    forget_cached_s3_stores()


def s3_day_key(day: dt.date) -> str:
    return f"{S3_PREFIX}/costs/date={day}/costs.jsonl.gz"


def s3_uri(key: str) -> str:
    """The public URI of ``key``, as manifests and summaries name it: without the ``conn_id@``."""
    return f"s3://{S3_BUCKET}/{key}"


def s3_object(s3: MotoS3, key: str) -> bytes:
    return gzip.decompress(s3.get_bytes(key))


def summary_of(s3: MotoS3, key: str, totals: dict[str, str]) -> dict[str, Any]:
    """What the consumer logs and returns for one object, read straight from the bucket."""
    records = [json.loads(line) for line in s3_object(s3, key).splitlines()]
    return {
        "uri": s3_uri(key),
        "customers": len({record["customer_id"] for record in records}),
        "records": len(records),
        "totals": totals,
    }


def test_consumer_reads_the_days_of_daily_and_restatement_runs_through_the_s3_connection(
    sim: MetronomeSimulator, examples: Examples, s3_lake: MotoS3
) -> None:
    register_daily_costs_asset()
    days = [dt.date(2024, 1, 13) + dt.timedelta(days=offset) for offset in range(7)]
    roles = sim.add_lifecycle_customers(days[0], days[-1] + ONE_DAY)
    daily = examples.load(DAILY)
    restatement = examples.load(RESTATEMENT)
    consumer = examples.load(CONSUMER)
    source: Source = "invoice_breakdowns"

    # The daily DAG writes the newest day: one object, one asset event.
    before = last_asset_event_id()
    produced = examples.run(daily, midnight("2024-01-20"))
    ((daily_event, _, extra),) = asset_events_after(before)
    assert produced.xcom("fetch_costs")["uri"] == s3_uri(s3_day_key(days[-1]))
    assert extra["conn_id"] == S3_CONN_ID
    with pytest.MonkeyPatch.context() as patch:
        consume_in_next_run(patch, daily_event)
        first = examples.run(consumer, midnight("2024-01-20") + dt.timedelta(hours=1))

    assert first.task_states() == {("log_day_totals", -1): "success"}
    newest = window_customer_ids(sim, days[-1], days[-1] + ONE_DAY)
    assert first.xcom("log_day_totals") == [
        summary_of(s3_lake, s3_day_key(days[-1]), source_totals(sim, source, newest, days[-1]))
    ]

    # The restatement rewrites the trailing week, one object per day; the newest is unchanged.
    before = last_asset_event_id()
    restated = examples.run(restatement, midnight("2024-01-20"))
    events = asset_events_after(before)
    # One event per changed day where tasks name their partitions (Airflow 3.3+), each with the manifest.
    assert len(events) == (len(days) - 1 if RUNTIME_PARTITIONS else 1)
    restatement_event, _, extra = events[0]
    assert all(event[2] == extra for event in events)
    assert restated.xcom("refetch_days")["changed_days"] == [str(day) for day in days[:-1]]
    assert {entry["conn_id"] for entry in extra["objects"]} == {S3_CONN_ID}
    with pytest.MonkeyPatch.context() as patch:
        consume_in_next_run(patch, restatement_event)
        second = examples.run(consumer, midnight("2024-01-20") + dt.timedelta(hours=2))

    assert second.task_states() == {("log_day_totals", -1): "success"}
    # Only the days written anew, each read back through the connection the manifest names.
    assert second.xcom("log_day_totals") == [
        summary_of(
            s3_lake,
            s3_day_key(day),
            source_totals(sim, source, window_customer_ids(sim, day, day + ONE_DAY), day),
        )
        for day in days[:-1]
    ]
    written = check_days_against_the_model(
        sim, source, {day: s3_object(s3_lake, s3_day_key(day)) for day in days}
    )
    check_lifecycle_roles(roles, source, written)
    assert s3_lake.list_keys() == [s3_day_key(day) for day in days]


@pytest.mark.parametrize("source", SOURCES)
def test_all_customers_dag_on_a_real_account_on_s3_reports_through_the_connection(
    sim: MetronomeSimulator,
    examples: Examples,
    s3_lake: MotoS3,
    monkeypatch: pytest.MonkeyPatch,
    source: Source,
) -> None:
    day = dt.date(2024, 1, 15)
    roles = sim.add_lifecycle_customers(day, day + ONE_DAY)
    dag = examples.load(ALL_CUSTOMERS, source=source)
    monkeypatch.setitem(dag.get_task("list_customer_batches").python_callable.__globals__, "BATCH_SIZE", 10)
    # The customers of the day, not today's active ones: those archived since are in, those created
    # after it are out.
    customers = window_customer_ids(sim, day, day + ONE_DAY)
    assert roles["archived_after"] in customers
    assert roles["archived_after"] not in sim.active_customer_ids
    assert roles["created_after"] not in customers
    assert roles["created_after"] in sim.active_customer_ids
    batches = [customers[start : start + 10] for start in range(0, len(customers), 10)]

    run = examples.run(dag, midnight(str(day + ONE_DAY)))

    assert run.task_states() == {
        ("list_customer_batches", -1): "success",
        **{("fetch_batch", index): "success" for index in range(len(batches))},
        ("report", -1): "success",
    }
    assert run.xcom("list_customer_batches") == batches
    keys = [f"{S3_PREFIX}/costs-by-batch/date={day}/batch-{index}.jsonl.gz" for index in range(len(batches))]
    written: set[str] = set()
    for index, (batch, key) in enumerate(zip(batches, keys, strict=True)):
        content = s3_object(s3_lake, key)
        records = [json.loads(line) for line in content.splitlines()]
        expected = model_records(sim, source, day, batch)
        assert customer_days(records) == customer_days(expected)
        assert content == b"".join(map(encode_record, expected))
        written |= {record["customer_id"] for record in records}
        manifest = run.xcom("fetch_batch", map_index=index)
        assert (manifest["uri"], manifest["conn_id"]) == (s3_uri(key), S3_CONN_ID)
    # Each customer of the day was asked once (a day without usage has no line item to show it), and
    # the customers archived before it or created after it not at all.
    for role, customer in roles.items():
        asked = len(sim.requests_for(f"/v1/customers/{customer}/"))
        assert asked == (1 if customer in customers else 0), role
    report = run.xcom("report")
    assert report["objects"] == [s3_uri(key) for key in keys]
    assert report["customers"] == len(written)
    assert report["records"] == sum(len(s3_object(s3_lake, key).splitlines()) for key in keys)
    # Read back through the connection: exact totals of what the model bills.
    assert report["totals"] == source_totals(sim, source, served_ids(sim, source, customers), day)
    refused = [customer for customer in customers if customer in set(sim.unique_metric_customer_ids)]
    expected_skipped = refused if source == "costs" else []
    assert sorted(skip["customer_id"] for skip in report["skipped"]) == expected_skipped
    assert s3_lake.list_keys() == keys
