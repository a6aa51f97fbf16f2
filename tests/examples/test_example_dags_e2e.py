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
import warnings
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from airflow_provider_metronome._compat import AIRFLOW_V3
from airflow_provider_metronome.models import CostWindow, InvoiceBreakdown
from airflow_provider_metronome.testing import MetronomeSimulator
from airflow_provider_metronome.utils.records import to_records
from airflow_provider_metronome.utils.storage import encode_record
from tests.support.runs import DagRunResult, clock_moves_to, run_dag_once

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

    def load(self, file_name: str, *, dag_id: str | None = None, timetable: str | None = None) -> Any:
        """The example's DAG; ``dag_id`` and ``timetable`` (Python source) make a variant of it."""
        example_id = Path(file_name).stem
        source = (EXAMPLES / file_name).read_text()
        if timetable is not None:
            source = replace_once(
                source, "from __future__ import annotations\n", TIMETABLE_IMPORTS, keep=True
            )
            source = replace_once(source, 'schedule="@daily"', f"schedule={timetable}")
        if dag_id is not None:
            source = replace_once(source, f'dag_id="{example_id}"', f'dag_id="{dag_id}"')
        path = self.dags_folder / f"{dag_id or example_id}.py"
        path.write_text(source)
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


def invoice_totals(sim: MetronomeSimulator, customer_ids: Iterable[str], day: dt.date) -> dict[str, float]:
    """Each credit type's total over the customers' invoices of ``day``, straight from the simulator."""
    totals: dict[str, Decimal] = {}
    for customer_id in customer_ids:
        for invoice in sim.breakdowns_for(customer_id, day, day + ONE_DAY):
            name = invoice["credit_type"]["name"]
            totals[name] = totals.get(name, Decimal(0)) + Decimal(str(invoice["total"]))
    return {name: float(round(total, 2)) for name, total in sorted(totals.items())}


def cost_totals(sim: MetronomeSimulator, customer_ids: Iterable[str], day: dt.date) -> dict[str, float]:
    """Each credit type's cost over the customers' ``/costs`` windows of ``day``."""
    totals: dict[str, Decimal] = {}
    for customer_id in customer_ids:
        for credit_type in sim.costs_for(customer_id, day)["credit_types"].values():
            name = credit_type["name"]
            totals[name] = totals.get(name, Decimal(0)) + Decimal(str(credit_type["cost"]))
    return {name: float(round(total, 2)) for name, total in sorted(totals.items())}


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
            "missing_days": {},
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
    # The first check lists the customers, and so do the check that finds the day and the operator;
    # the checks in between ask the customer that was missing the day, and nothing else.
    assert len(listings) == 3
    # The check that finds the day asks that customer and two more (a sample of three); the operator
    # asks every customer.
    waiting_checks = len(simulator.requests_for("/invoices/breakdowns")) - 3 - customers
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
    # The sensor asks three customers; the operator one request per customer for the 31 days.
    assert len(simulator.requests_for("/invoices/breakdowns")) == 3 + len(simulator.active_customer_ids)
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
    # Re-fetched later, Metronome answers without 2024-01-18 for one customer.
    late = sorted(sim.active_customer_ids)[3]
    sim.withhold(late, [days[1]])

    run = examples.run(restatement, midnight("2024-01-20"), conf={"days": 3})

    assert run.task_states() == {("trailing_window", -1): "success", ("refetch_days", -1): "failed"}
    # No day is written: each keeps the complete object the daily DAG wrote, untouched.
    assert {day: read_object(day_object(lake, day)) for day in days} == complete
    assert {day: stamp(day_object(lake, day)) for day in days} == stamps
    assert late.encode() in complete[days[1]]
    assert files_in(lake) == [f"costs/date={day}/costs.jsonl.gz" for day in days]
