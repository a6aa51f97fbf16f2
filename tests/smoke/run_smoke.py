"""Smoke test of the provider on one Airflow release, run with the Python of a virtualenv that has both.

    .venv-smoke-3.0/bin/python tests/smoke/run_smoke.py [--verbose] [--keep]

In a throw-away AIRFLOW_HOME with a SQLite metadata database, it:

1. imports the hook, operator, sensor and trigger from their public modules;
2. checks ``get_provider_info()``: Airflow's own schema accepts it, all it names imports, and Airflow's
   ProvidersManager finds the package and the ``metronome`` connection type;
3. parses every DAG file in ``dags_examples/`` with a DagBag: no import errors, at least one DAG each;
4. runs ``metronome_daily_costs`` once with ``dag.test()`` against the project's Metronome simulator:
   the day becomes available only after the sensor has deferred, so the run goes through the trigger;
   then the run and both tasks succeeded and the day's object exists and holds JSON lines.

Each step prints one ``PASS`` or ``FAIL`` line and the last line counts them; the exit status is non-zero
when any step failed. Airflow's own output goes to a log file, whose tail is printed on failure
(``--verbose`` shows it as it comes).

It uses only the package's public modules, so it runs on any supported Airflow without this repository's
test helpers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import faulthandler
import gzip
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
DAILY_DAG_ID = "metronome_daily_costs"
CONN_ENV = "AIRFLOW_CONN_METRONOME_DEFAULT"
BASE_URI_ENV = "AIRFLOW_VAR_METRONOME_COSTS_BASE_URI"
# The run of this logical date fetches the UTC day before it, on Airflow 2's intervals and 3's alike.
LOGICAL_DATE = dt.datetime(2024, 1, 15, tzinfo=dt.timezone.utc)
DATA_DAY = dt.date(2024, 1, 14)
# The simulator makes a day available two hours after it ends: not yet at first, then yes.
BEFORE_AVAILABLE = LOGICAL_DATE + dt.timedelta(hours=1)
AFTER_AVAILABLE = LOGICAL_DATE + dt.timedelta(hours=3)
SENSOR_TIMEOUT = 60
TIMEOUT = 600
LOG_TAIL_LINES = 150
# What is shown of Airflow's output on failure, before its last lines.
ERROR_LINE = re.compile(r"\w*(Error|Exception|Timeout)\b\S*:")
MAX_ERROR_LINES = 40


class Smoke:
    """Runs the steps, reporting each on the real stdout while Airflow's output goes to a log."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.label = f"airflow {installed_airflow_version()}"
        self.passed: list[str] = []
        self.failed: list[str] = []

    def say(self, line: str) -> None:
        self.out.write(f"[{self.label}] {line}\n")
        self.out.flush()

    def step(self, name: str, check: Callable[[], str | None]) -> None:
        started = time.monotonic()
        try:
            detail = check()
        except Exception:  # every failure is reported, and the other steps still run
            self.failed.append(name)
            self.say(f"FAIL  {name} ({time.monotonic() - started:.1f}s)")
            for line in traceback.format_exc().rstrip().splitlines():
                self.say(f"      {line}")
            return
        self.passed.append(name)
        suffix = f": {detail}" if detail else ""
        self.say(f"PASS  {name} ({time.monotonic() - started:.1f}s){suffix}")


# -- the environment -------------------------------------------------------------------------------------


def prepare_home(home: Path) -> None:
    """Point Airflow at ``home`` before anything imports it: Airflow reads its configuration on import."""
    for name in list(os.environ):
        # Nothing of the caller's Airflow setup may leak in (a connection, a config file, another DB).
        if name.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) or name == "AIRFLOW_CONFIG":
            del os.environ[name]
    (home / "dags").mkdir(parents=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(home / "dags")
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"


def installed_airflow_version() -> str:
    """From the installed metadata: importing Airflow would read its configuration, maybe too early."""
    try:
        return importlib.metadata.version("apache-airflow")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def airflow_version() -> tuple[int, int]:
    import airflow

    major, minor = airflow.__version__.split(".")[:2]
    return int(major), int(minor)


def dag_bag_class() -> Any:
    try:  # Airflow 3.2+
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2.10 - 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef,attr-defined]
    return DagBag


def providers_manager() -> Any:
    """What tasks see of the installed providers (the task SDK's own view where it has one)."""
    try:  # Airflow 3.3+
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as Manager
    except ImportError:
        from airflow.providers_manager import ProvidersManager as Manager  # type: ignore[no-redef,assignment]
    return Manager()


# -- step 1: imports -----------------------------------------------------------------------------------


def check_imports() -> str:
    import airflow

    from airflow_provider_metronome.hooks.metronome import MetronomeHook
    from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
    from airflow_provider_metronome.sensors.costs import MetronomeCostsSensor
    from airflow_provider_metronome.testing import MetronomeSimulator
    from airflow_provider_metronome.triggers.costs import MetronomeCostsTrigger

    classes = (MetronomeHook, MetronomeCostsOperator, MetronomeCostsSensor, MetronomeCostsTrigger)
    assert all(isinstance(cls, type) for cls in (*classes, MetronomeSimulator))
    return f"Airflow {airflow.__version__}: " + ", ".join(cls.__name__ for cls in classes)


# -- step 2: provider info -----------------------------------------------------------------------------


def check_provider_info() -> str:
    import importlib

    import airflow
    import jsonschema

    from airflow_provider_metronome import get_provider_info

    info = get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)

    modules = [
        module
        for kind in ("hooks", "operators", "sensors", "triggers")
        for entry in info[kind]
        for module in entry["python-modules"]
    ]
    for module in modules:
        importlib.import_module(module)
    dotted = [link for link in info["extra-links"]]
    dotted += [conn["hook-class-name"] for conn in info["connection-types"]]
    for path in dotted:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), f"{path} does not exist"

    manager = providers_manager()
    package = info["package-name"]
    assert package in manager.providers, f"ProvidersManager does not list {package}"
    assert manager.providers[package].version == info["versions"][0]
    (connection,) = info["connection-types"]
    hook = manager.hooks.get(connection["connection-type"])
    assert hook is not None, f"ProvidersManager has no {connection['connection-type']!r} connection type"
    assert hook.hook_class_name == connection["hook-class-name"], hook
    return f"{package} {info['versions'][0]}, {len(modules)} modules, connection type {connection['connection-type']!r}"


# -- step 3: the example DAGs parse ----------------------------------------------------------------------


def check_example_dags(dags_folder: Path) -> str:
    files = sorted(EXAMPLES.glob("*.py"))
    assert files, f"no DAG files in {EXAMPLES}"
    for path in files:
        shutil.copy(path, dags_folder / path.name)
    bag = dag_bag_class()(dag_folder=str(dags_folder))
    assert bag.import_errors == {}, f"import errors: {bag.import_errors}"
    for path in files:
        dag_ids = [dag_id for dag_id, dag in bag.dags.items() if Path(dag.fileloc).name == path.name]
        assert dag_ids, f"{path.name} defines no DAG"
    assert DAILY_DAG_ID in bag.dags
    return f"{len(files)} files, DAGs {sorted(bag.dags)}"


# -- step 4: the daily DAG end to end --------------------------------------------------------------------


def migrate_database() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed ({result.returncode}):\n{result.stderr[-4000:]}")


def store_as_the_dag_processor_does(bag: Any) -> None:
    """Store the DAGs and activate their assets, as the DAG processor does before any run.

    Airflow 3.1+'s ``dag.test()`` does this itself; 3.0's does not, and its task runner then refuses a
    task whose outlet asset was never activated (``AirflowInactiveAssetInInletOrOutletException``).
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    # dag.test() runs the DAG as part of the DAGs-folder bundle.
    bag.sync_to_db(bundle_name="dags-folder", bundle_version=None)


@contextmanager
def clock_moves_to(simulator: Any, moment: dt.datetime, *, after_checks: int) -> Iterator[None]:
    """Move the simulator's clock to ``moment`` once ``after_checks`` breakdown requests have arrived."""
    stop = threading.Event()

    def checks() -> int:
        return sum(1 for record in simulator.requests if record.path.endswith("/invoices/breakdowns"))

    def advance() -> None:
        deadline = time.monotonic() + SENSOR_TIMEOUT
        while not stop.wait(0.01) and time.monotonic() < deadline:
            if checks() >= after_checks:
                simulator.now = moment
                return

    mover = threading.Thread(target=advance, name="advance-simulator-clock", daemon=True)
    mover.start()
    try:
        yield
    finally:
        stop.set()
        mover.join()


def task_states(dag_id: str, run_id: str) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
            )
        ).all()
    return {task_id: str(getattr(state, "value", state)) for task_id, state in rows}


def check_daily_dag_run(dags_folder: Path, lake: Path) -> str:
    from airflow_provider_metronome.testing import DEFAULT_TOKEN, MetronomeSimulator

    migrate_database()
    bag = dag_bag_class()(dag_folder=str(dags_folder / f"{DAILY_DAG_ID}.py"))
    assert bag.import_errors == {}, f"import errors: {bag.import_errors}"
    if airflow_version()[:2] == (3, 0):
        store_as_the_dag_processor_does(bag)
    dag = bag.get_dag(DAILY_DAG_ID)
    for task in dag.tasks:
        # A run that cannot succeed should fail now, not after the example's retries (5 minutes apart)
        # or its sensor's 12-hour timeout.
        task.retries = 0
        if hasattr(task, "poke_interval"):
            task.timeout = SENSOR_TIMEOUT
            task.poke_interval = 0.05

    with MetronomeSimulator(now=BEFORE_AVAILABLE) as simulator:
        os.environ[CONN_ENV] = json.dumps(
            {"conn_type": "metronome", "host": simulator.url, "password": DEFAULT_TOKEN, "extra": {}}
        )
        os.environ[BASE_URI_ENV] = f"file://{lake}"
        # The sensor's own first check finds the day missing, so it defers; the day becomes available
        # once the trigger has asked again.
        with clock_moves_to(simulator, AFTER_AVAILABLE, after_checks=2):
            if airflow_version() >= (3, 0):
                dag_run = dag.test(logical_date=LOGICAL_DATE)
            else:
                dag_run = dag.test(execution_date=LOGICAL_DATE)
        checks_before_fetch = len(
            [record for record in simulator.requests if record.path.endswith("/invoices/breakdowns")]
        ) - len(simulator.active_customer_ids)
        customers = set(simulator.active_customer_ids)

    state = str(getattr(dag_run.state, "value", dag_run.state))
    assert state == "success", f"the DAG run ended {state!r}"
    states = task_states(DAILY_DAG_ID, dag_run.run_id)
    assert states == {"wait_for_costs": "success", "fetch_costs": "success"}, states
    # The sensor's check and at least one check of the deferred trigger, before the operator's fetch.
    assert checks_before_fetch >= 2, (
        f"{checks_before_fetch} checks before the fetch: the sensor did not defer"
    )
    path = lake / "costs" / f"date={DATA_DAY}" / "costs.jsonl.gz"
    assert path.is_file(), f"{path} was not written"
    written = sorted(str(p.relative_to(lake)) for p in lake.rglob("*") if p.is_file())
    assert written == [str(path.relative_to(lake))], f"unexpected files: {written}"
    records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert records, f"{path} holds no records"
    unknown = {record.get("customer_id") for record in records} - customers
    assert not unknown, f"records of unknown customers: {unknown}"
    return f"run {state}, tasks {states}, {len(records)} records in {path.relative_to(lake)}"


# -- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="show Airflow's output instead of logging it")
    parser.add_argument("--keep", action="store_true", help="keep the temporary AIRFLOW_HOME")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="metronome-smoke-"))
    prepare_home(home)
    log_path = home / "smoke.log"
    # The real stdout, for the step lines; fd 1 and 2 go to the log unless --verbose.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    if not args.verbose:
        sys.stdout.flush()
        sys.stderr.flush()
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    # A hung run (a sensor that never ends) ends the smoke instead of the CI job.
    faulthandler.dump_traceback_later(TIMEOUT, exit=True, file=out)

    smoke = Smoke(out)
    smoke.say(f"Python {sys.version.split()[0]}, AIRFLOW_HOME {home}")
    smoke.step("import provider (hook, operator, sensor, trigger)", check_imports)
    smoke.step("get_provider_info()", check_provider_info)
    smoke.step(
        f"parse every DAG in {EXAMPLES.name}/ with a DagBag", lambda: check_example_dags(home / "dags")
    )
    smoke.step(
        f"run {DAILY_DAG_ID} with dag.test() against the simulator",
        lambda: check_daily_dag_run(home / "dags", home / "lake"),
    )
    faulthandler.cancel_dump_traceback_later()

    if smoke.failed and not args.verbose:
        sys.stdout.flush()
        sys.stderr.flush()
        lines = log_path.read_text(errors="replace").splitlines()
        # A task's traceback can be hundreds of lines above the end: name the errors first.
        errors = list(dict.fromkeys(line for line in lines if ERROR_LINE.search(line)))[:MAX_ERROR_LINES]
        smoke.say(f"errors in Airflow's output ({log_path}):")
        for line in errors:
            out.write(f"    {line}\n")
        smoke.say(f"last {min(len(lines), LOG_TAIL_LINES)} lines of Airflow's output:")
        for line in lines[-LOG_TAIL_LINES:]:
            out.write(f"    {line}\n")
    if smoke.failed or args.keep:
        smoke.say(f"kept AIRFLOW_HOME {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    smoke.say(f"{'PASS' if not smoke.failed else 'FAIL'}: {', '.join(smoke.failed) or 'every step'}")
    # The closing line CI tools read as a test count.
    out.write(f"smoke: {len(smoke.passed)} passed, {len(smoke.failed)} failed\n")
    out.flush()
    return 1 if smoke.failed else 0


if __name__ == "__main__":
    sys.exit(main())
