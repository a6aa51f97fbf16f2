"""MetronomeCostsOperator in real DAG runs (``dag.test()``): window rules, mapping, XCom inputs, assets, links.

Each test writes a DAG file into the DAGs folder of the test AIRFLOW_HOME (Airflow 3 runs only DAGs it
can find there), runs it against the simulator, and reads the results back from the metadata database.
"""

from __future__ import annotations

import datetime as dt
import gzip
import importlib.util
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from sqlalchemy import select

from airflow_provider_metronome._compat import AIRFLOW_V3, RUNTIME_PARTITIONS
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator, MetronomeCustomerLink
from airflow_provider_metronome.testing import MetronomeSimulator
from tests.support.runs import DagRunResult, run_dag_once
from tests.support.simulator import billable

pytestmark = pytest.mark.e2e

LOGICAL_DATE = pendulum.datetime(2024, 1, 10, tz="UTC")
APP_URL = "https://app.metronome.com/customers/"
DAG_HEADER = """
import pendulum
from datetime import timedelta

from airflow.timetables.interval import CronDataIntervalTimetable
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_metronome.operators.costs import MetronomeCostsOperator

try:
    from airflow.sdk import DAG, Asset, task
except ImportError:
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import task
try:  # Airflow 3.3+
    from airflow.sdk import PartitionedAtRuntime
except ImportError:
    PartitionedAtRuntime = None

"""


@pytest.fixture
def sim(simulator: MetronomeSimulator, metronome_conn: str) -> MetronomeSimulator:
    simulator.now = dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)
    return simulator


@pytest.fixture
def run_dag(airflow_db: Path, airflow_home: Path) -> Iterator[Any]:
    """Write a DAG file with ``body`` under ``with DAG(...)``, run it once with ``dag.test()``."""
    dags_folder = airflow_home / "dags"
    dags_folder.mkdir(exist_ok=True)
    written: list[Path] = []

    def run(
        dag_id: str, schedule: str, body: str, logical_date: pendulum.DateTime = LOGICAL_DATE
    ) -> DagRunResult:
        source = (
            DAG_HEADER
            + f"with DAG({dag_id!r}, schedule={schedule}, "
            + "start_date=pendulum.datetime(2024, 1, 1, tz='UTC'), catchup=False) as dag:\n"
            + textwrap.indent(textwrap.dedent(body), "    ")
        )
        path = dags_folder / f"{dag_id}.py"
        path.write_text(source)
        written.append(path)
        spec = importlib.util.spec_from_file_location(f"test_dag_{dag_id}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return run_dag_once(module.dag, logical_date)

    yield run
    for path in set(written):
        path.unlink()


def window(starting_on: str, ending_before: str) -> dict[str, str]:
    return {"starting_on": f"{starting_on}T00:00:00Z", "ending_before": f"{ending_before}T00:00:00Z"}


def read_lines(path: Path) -> list[dict[str, Any]]:
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return [json.loads(line) for line in data.splitlines()]


# -- the window rule on both kinds of timetable -------------------------------------------------------


def test_window_rules_on_a_trigger_timetable(sim: MetronomeSimulator, run_dag: Any, tmp_path: Path) -> None:
    customer = billable(sim)[0]
    run = run_dag(
        "metronome_window_trigger",
        'CronTriggerTimetable("@daily", timezone="UTC")',
        f"""
        MetronomeCostsOperator(
            task_id="day_before_logical_date",
            customer_ids={customer!r},
            output_uri="file://{tmp_path}/fallback/{{start_date}}_{{end_date}}.jsonl",
        )
        MetronomeCostsOperator(
            task_id="explicit",
            customer_ids={customer!r},
            starting_on="{{{{ macros.ds_add(ds, -5) }}}}",
            ending_before="{{{{ macros.ds_add(ds, -3) }}}}",
            output_uri="file://{tmp_path}/explicit/{{start_date}}_{{end_date}}.jsonl",
        )
        MetronomeCostsOperator(task_id="to_xcom", customer_ids=[{customer!r}])
        """,
    )

    assert run.state == "success"
    # This timetable gives a zero-length data interval (Airflow 3's "@daily" does the same).
    assert run.data_interval == (LOGICAL_DATE, LOGICAL_DATE)
    assert run.xcom("day_before_logical_date")["window"] == window("2024-01-09", "2024-01-10")
    assert (tmp_path / "fallback" / "2024-01-09_2024-01-09.jsonl").exists()
    assert run.xcom("explicit")["window"] == window("2024-01-05", "2024-01-07")
    assert [
        r["start_timestamp"] for r in read_lines(tmp_path / "explicit" / "2024-01-05_2024-01-06.jsonl")
    ] == [
        "2024-01-05T00:00:00Z",
        "2024-01-06T00:00:00Z",
    ]
    assert [record["start_timestamp"] for record in run.xcom("to_xcom")] == ["2024-01-09T00:00:00Z"]


def test_window_rules_on_a_trigger_timetable_with_an_interval(
    sim: MetronomeSimulator, run_dag: Any, tmp_path: Path
) -> None:
    run = run_dag(
        "metronome_window_trigger_interval",
        'CronTriggerTimetable("@daily", timezone="UTC", interval=timedelta(days=2))',
        f"""
        MetronomeCostsOperator(
            task_id="data_interval",
            customer_ids={billable(sim)[:2]!r},
            output_uri="file://{tmp_path}/{{date}}.jsonl",
        )
        """,
    )

    assert run.state == "success"
    assert run.xcom("data_interval")["window"] == window("2024-01-08", "2024-01-10")
    assert (tmp_path / "2024-01-08.jsonl").exists()


def test_window_rules_on_a_data_interval_timetable(
    sim: MetronomeSimulator, run_dag: Any, tmp_path: Path
) -> None:
    customer = billable(sim)[0]
    run = run_dag(
        "metronome_window_interval",
        # Weekly on Mondays: a seven-day interval, and a logical date (Wednesday) inside no interval.
        'CronDataIntervalTimetable("0 0 * * 1", timezone="UTC")',
        f"""
        MetronomeCostsOperator(
            task_id="data_interval",
            customer_ids={customer!r},
            output_uri="file://{tmp_path}/week-{{start_date}}_{{end_date}}.jsonl",
        )
        MetronomeCostsOperator(
            task_id="explicit",
            customer_ids={customer!r},
            starting_on="2024-01-03",
            ending_before="2024-01-04",
        )
        """,
    )

    assert run.state == "success"
    assert run.data_interval == (
        pendulum.datetime(2024, 1, 1, tz="UTC"),
        pendulum.datetime(2024, 1, 8, tz="UTC"),
    )
    assert run.xcom("data_interval")["window"] == window("2024-01-01", "2024-01-08")
    lines = read_lines(tmp_path / "week-2024-01-01_2024-01-07.jsonl")
    assert [line["start_timestamp"][:10] for line in lines] == [f"2024-01-0{day}" for day in range(1, 8)]
    assert [record["start_timestamp"] for record in run.xcom("explicit")] == ["2024-01-03T00:00:00Z"]


def test_a_dag_in_a_non_utc_timezone_fails_with_an_explanation(
    sim: MetronomeSimulator, run_dag: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run = run_dag(
        "metronome_window_new_york",
        'CronDataIntervalTimetable("@daily", timezone="America/New_York")',
        f"""
        MetronomeCostsOperator(
            task_id="fetch",
            customer_ids={billable(sim)[0]!r},
            output_uri="file://{tmp_path}/{{date}}.jsonl",
        )
        """,
    )

    assert run.task_states() == {("fetch", -1): "failed"}
    assert "does not start at midnight UTC" in capfd.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert sim.requests == []


# -- dynamic task mapping and inputs from upstream tasks -----------------------------------------------


def test_dynamic_mapping_writes_one_object_per_mapped_task(
    sim: MetronomeSimulator, run_dag: Any, tmp_path: Path
) -> None:
    ids = billable(sim)[:3]
    run = run_dag(
        "metronome_mapping",
        'CronTriggerTimetable("@daily", timezone="UTC")',
        f"""
        MetronomeCostsOperator.partial(
            task_id="per_customer",
            output_uri="file://{tmp_path}/by-customer/{{customer_id}}/{{date}}.jsonl",
        ).expand(customer_ids={ids!r})
        MetronomeCostsOperator.partial(
            task_id="per_batch",
            record_format="line_items",
            output_uri="file://{tmp_path}/by-batch/{{date}}/batch-{{map_index}}.jsonl.gz",
        ).expand(customer_ids=[{ids[:2]!r}, {ids[2:]!r}])
        MetronomeCostsOperator.partial(
            task_id="per_day",
            customer_ids={ids!r},
            output_uri="file://{tmp_path}/by-day/{{date}}.jsonl",
        ).expand_kwargs([
            {{"starting_on": "2024-01-03", "ending_before": "2024-01-04"}},
            {{"starting_on": "2024-01-04", "ending_before": "2024-01-05"}},
        ])
        MetronomeCostsOperator.partial(
            task_id="same_object_for_all",
            output_uri="file://{tmp_path}/collide/{{date}}.jsonl",
        ).expand(customer_ids={ids!r})
        """,
    )

    states = run.task_states()
    assert {key: state for key, state in states.items() if key[0] != "same_object_for_all"} == {
        **{("per_customer", index): "success" for index in range(3)},
        **{("per_batch", index): "success" for index in range(2)},
        **{("per_day", index): "success" for index in range(2)},
    }
    for index, customer in enumerate(ids):
        assert (
            run.xcom("per_customer", map_index=index)["uri"]
            == f"file://{tmp_path}/by-customer/{customer}/2024-01-09.jsonl"
        )
        assert [
            line["customer_id"]
            for line in read_lines(tmp_path / "by-customer" / customer / "2024-01-09.jsonl")
        ] == [customer]
    batches = [
        read_lines(tmp_path / "by-batch" / "2024-01-09" / f"batch-{index}.jsonl.gz") for index in range(2)
    ]
    assert [sorted({line["customer_id"] for line in batch}) for batch in batches] == [ids[:2], ids[2:]]
    assert sorted(path.name for path in (tmp_path / "by-day").iterdir()) == [
        "2024-01-03.jsonl",
        "2024-01-04.jsonl",
    ]
    # Without {map_index} or {customer_id} the tasks would overwrite one another: each refuses to start.
    assert {state for key, state in states.items() if key[0] == "same_object_for_all"} == {"failed"}
    assert not (tmp_path / "collide").exists()


def test_customer_ids_from_an_upstream_task(sim: MetronomeSimulator, run_dag: Any, tmp_path: Path) -> None:
    ids = billable(sim)[:3]
    run = run_dag(
        "metronome_upstream_ids",
        'CronTriggerTimetable("@daily", timezone="UTC")',
        f"""
        @task
        def list_ids():
            return {list(reversed(ids))!r}

        ids = list_ids()
        MetronomeCostsOperator(
            task_id="from_xcom_arg",
            customer_ids=ids,
            output_uri="file://{tmp_path}/xcom-arg-{{date}}.jsonl",
        )
        ids >> MetronomeCostsOperator(
            task_id="from_jinja",
            customer_ids="{{{{ ti.xcom_pull(task_ids='list_ids') }}}}",
            output_uri="file://{tmp_path}/jinja-{{date}}.jsonl",
        )
        """,
    )

    assert run.state == "success"
    from_arg = (tmp_path / "xcom-arg-2024-01-09.jsonl").read_bytes()
    assert from_arg == (tmp_path / "jinja-2024-01-09.jsonl").read_bytes()
    assert [line["customer_id"] for line in read_lines(tmp_path / "xcom-arg-2024-01-09.jsonl")] == ids


# -- assets and the extra link -------------------------------------------------------------------------


def _asset_event_extras(uri: str, source_dag_id: str) -> list[dict[str, Any]]:
    return [extra for _, extra in _asset_events(uri, source_dag_id)]


def _asset_events(uri: str, source_dag_id: str) -> list[tuple[str | None, dict[str, Any]]]:
    """Each event's partition key (None without one; always on Airflow before 3.2) and extra."""
    from airflow.utils.session import create_session

    try:
        from airflow.models.asset import AssetEvent as Event
        from airflow.models.asset import AssetModel as Model
    except ImportError:  # Airflow 2
        from airflow.models.dataset import DatasetEvent as Event  # type: ignore[no-redef]
        from airflow.models.dataset import DatasetModel as Model
    key = "asset_id" if hasattr(Event, "asset_id") else "dataset_id"
    with create_session() as session:
        rows = session.scalars(
            select(Event)
            .join(Model, getattr(Event, key) == Model.id)
            .where(Model.uri == uri, Event.source_dag_id == source_dag_id)
        ).all()
        return [(getattr(row, "partition_key", None), dict(row.extra or {})) for row in rows]


def _register_asset(uri: str) -> None:
    """What Airflow 2's DAG processor does for an outlet; its dag.test() does not."""
    if AIRFLOW_V3:
        return
    from airflow.models.dataset import DatasetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        if session.scalar(select(DatasetModel).where(DatasetModel.uri == uri)) is None:
            session.add(DatasetModel(uri=uri))


def test_asset_events_carry_the_manifest(sim: MetronomeSimulator, run_dag: Any, tmp_path: Path) -> None:
    _register_asset("metronome://costs/daily")
    run = run_dag(
        "metronome_assets",
        'CronTriggerTimetable("@daily", timezone="UTC")',
        f"""
        MetronomeCostsOperator(
            task_id="fetch",
            customer_ids={[*billable(sim)[:2], *sim.unique_metric_customer_ids]!r},
            on_customer_error="skip",
            output_uri="file://{tmp_path}/{{date}}.jsonl",
            outlets=[Asset("metronome://costs/daily")],
        )
        """,
    )

    assert run.state == "success"
    manifest = run.xcom("fetch")
    assert len(manifest["skipped"]) == len(sim.unique_metric_customer_ids)
    # A DAG scheduled on the asset finds the object and its window in the triggering event.
    assert _asset_event_extras("metronome://costs/daily", "metronome_assets") == [
        {key: value for key, value in manifest.items() if key != "skipped"}
    ]


def test_extra_link_points_to_the_customer_in_the_metronome_app(
    sim: MetronomeSimulator, run_dag: Any, tmp_path: Path
) -> None:
    ids = billable(sim)[:2]
    run = run_dag(
        "metronome_link",
        'CronTriggerTimetable("@daily", timezone="UTC")',
        f"""
        MetronomeCostsOperator(task_id="one", customer_ids="{{{{ params.customer }}}}", params={{"customer": {ids[0]!r}}})
        MetronomeCostsOperator(task_id="two", customer_ids={ids!r})
        """,
    )

    assert run.state == "success"
    link = MetronomeCustomerLink()
    if AIRFLOW_V3:
        # Airflow 3 stores each link's URL as an XCom when the task ends; the UI reads it from there.
        assert run.xcom("one", key=link.xcom_key) == APP_URL + ids[0]
        assert run.xcom("two", key=link.xcom_key) == ""
    else:
        # Airflow 2's webserver calls get_link() on the unrendered task.
        from airflow.models.taskinstancekey import TaskInstanceKey

        def key(task_id: str) -> Any:
            return TaskInstanceKey(run.dag_id, task_id, run.run_id, 1, -1)

        unrendered = MetronomeCostsOperator(task_id="one", customer_ids="{{ params.customer }}")
        assert link.get_link(unrendered, ti_key=key("one")) == APP_URL + ids[0]
        assert link.get_link(unrendered, ti_key=key("two")) == ""


# -- partitioned asset events (Airflow 3.3+) -------------------------------------------------------------

needs_runtime_partitions = pytest.mark.skipif(
    not RUNTIME_PARTITIONS, reason="a task names its events' partitions at run time from Airflow 3.3 on"
)
RESTATED = ["2024-01-06", "2024-01-07", "2024-01-08"]


def _restatement_body(tmp_path: Path, ids: list[str], partition_outlets: bool | None = None) -> str:
    return f"""
    MetronomeCostsOperator(
        task_id="restate",
        customer_ids={ids!r},
        starting_on="{RESTATED[0]}",
        ending_before="2024-01-09",
        split_by_day=True,
        output_uri="file://{tmp_path}/date={{date}}/costs.jsonl",
        partition_outlets={partition_outlets!r},
        outlets=[Asset("metronome://costs/daily")],
    )
    """


@needs_runtime_partitions
def test_a_partitioned_run_emits_one_event_per_changed_day_and_none_when_nothing_changed(
    sim: MetronomeSimulator, run_dag: Any, tmp_path: Path
) -> None:
    ids = billable(sim)[:3]
    body = _restatement_body(tmp_path, ids)

    first = run_dag("metronome_runtime_partitions", "PartitionedAtRuntime()", body)

    assert first.state == "success"
    manifest = {key: value for key, value in first.xcom("restate").items() if key != "skipped"}
    events = _asset_events("metronome://costs/daily", "metronome_runtime_partitions")
    # One event per day, keyed by the day; each carries the manifest, whose objects name the day's.
    assert sorted(key for key, _ in events) == RESTATED
    assert all(extra == manifest for _, extra in events)

    (tmp_path / "date=2024-01-07" / "costs.jsonl").write_text("an older version of the day\n")
    second = run_dag("metronome_runtime_partitions", "PartitionedAtRuntime()", body)

    assert second.state == "success"
    assert second.xcom("restate")["changed_days"] == ["2024-01-07"]
    events = _asset_events("metronome://costs/daily", "metronome_runtime_partitions")
    assert sorted(key for key, _ in events) == sorted([*RESTATED, "2024-01-07"])

    third = run_dag("metronome_runtime_partitions", "PartitionedAtRuntime()", body)

    assert third.state == "success"
    assert third.xcom("restate")["changed_days"] == []
    # Nothing changed, nothing announced.
    assert len(_asset_events("metronome://costs/daily", "metronome_runtime_partitions")) == len(RESTATED) + 1


@needs_runtime_partitions
@pytest.mark.parametrize(("partition_outlets", "keys"), [(True, RESTATED), (None, [None]), (False, [None])])
def test_partition_outlets_chooses_per_day_events_in_a_run_without_partitions(
    sim: MetronomeSimulator, run_dag: Any, tmp_path: Path, partition_outlets: bool | None, keys: list[Any]
) -> None:
    dag_id = f"metronome_partition_outlets_{str(partition_outlets).lower()}"
    body = _restatement_body(tmp_path, billable(sim)[:2], partition_outlets)

    run = run_dag(dag_id, 'CronTriggerTimetable("@daily", timezone="UTC")', body)

    assert run.state == "success"
    assert sorted(_asset_events("metronome://costs/daily", dag_id), key=str) == [
        (key, {k: v for k, v in run.xcom("restate").items() if k != "skipped"}) for key in keys
    ]


@pytest.mark.parametrize("value", ["yes", 1, 0])
def test_partition_outlets_must_be_a_bool_or_none(value: Any) -> None:
    with pytest.raises(ValueError, match=r"partition_outlets=.* must be True .*, False .* or None"):
        MetronomeCostsOperator(task_id="fetch", partition_outlets=value)
