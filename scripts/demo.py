"""`make demo`: back-fill three days of `metronome_daily_costs` against the simulator, then re-run one.

Everything happens under ./demo-output: a fresh AIRFLOW_HOME with SQLite, and the objects the
DAG writes. The simulator stops when the demo ends, also on failure; the exit code is non-zero
if any step failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from airflow_provider_metronome.output.reading import summarize_output
from airflow_provider_metronome.testing import MetronomeSimulator

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "demo-output"
DAG_ID = "metronome_daily_costs"
# `airflow dags test <logical date>`: each @daily run fetches the UTC day before its logical date.
LOGICAL_DATES = ["2024-01-02", "2024-01-03", "2024-01-04"]
RERUN = LOGICAL_DATES[1]


def airflow_env(simulator: MetronomeSimulator) -> dict[str, str]:
    home = OUTPUT / "airflow-home"
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags_examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW_VAR_METRONOME_COSTS_BASE_URI": (OUTPUT / "data").as_uri(),
        "AIRFLOW_CONN_METRONOME_DEFAULT": json.dumps(
            {"conn_type": "metronome", "host": simulator.url, "password": simulator.token}
        ),
    }


def run(step: str, command: list[str], env: dict[str, str]) -> None:
    """Run one Airflow command, its output in a log file; raise with the log's tail if it fails."""
    log_path = OUTPUT / "logs" / f"{step}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("w") as log_file:
        result = subprocess.run(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, check=False)
    print(
        f"  {step:<28} {'ok' if result.returncode == 0 else 'FAILED'} in {time.monotonic() - started:5.1f} s"
    )
    if result.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"{step} failed (exit {result.returncode}); see {log_path}:\n{tail}")


def day_objects() -> dict[str, Path]:
    return {
        path.parent.name.removeprefix("date="): path for path in sorted((OUTPUT / "data").rglob("*.jsonl.gz"))
    }


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def print_summary(objects: dict[str, Path]) -> None:
    summaries = {day: summarize_output(path) for day, path in objects.items()}
    credit_types = sorted({name for summary in summaries.values() for name in summary["totals"]})
    header = ["data day", "customers", "records", *credit_types]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for day, summary in summaries.items():
        totals = [f"{summary['totals'].get(name, 0):,.2f}" for name in credit_types]
        print(f"| {day} | {summary['customers']} | {summary['records']} | " + " | ".join(totals) + " |")
    print("\nFiles:")
    for path in objects.values():
        print(f"  {path.relative_to(ROOT)}")


def main() -> None:
    shutil.rmtree(OUTPUT, ignore_errors=True)
    airflow = [sys.executable, "-m", "airflow"]
    with MetronomeSimulator(customers=12, archived_customers=2, seed=2024) as simulator:
        print(f"Metronome simulator at {simulator.url}; Airflow home {OUTPUT / 'airflow-home'}")
        env = airflow_env(simulator)
        run("airflow db migrate", [*airflow, "db", "migrate"], env)
        for logical_date in LOGICAL_DATES:
            run(f"dags test {logical_date}", [*airflow, "dags", "test", DAG_ID, logical_date], env)
        before = {day: (digest(path), path.stat().st_mtime_ns) for day, path in day_objects().items()}
        run(f"re-run {RERUN}", [*airflow, "dags", "test", DAG_ID, RERUN], env)
    objects = day_objects()
    if len(objects) != len(LOGICAL_DATES):
        raise SystemExit(f"expected {len(LOGICAL_DATES)} day objects, found {sorted(objects)}")
    touched = [
        day for day, path in objects.items() if (digest(path), path.stat().st_mtime_ns) != before.get(day)
    ]
    if touched:
        raise SystemExit(f"the re-run touched {touched}: the same answers should have left them alone")
    print_summary(objects)
    print(
        f"\nRe-running {RERUN} fetched the day again and found the same bytes, so it left the stored object "
        "untouched: the run is idempotent."
    )


if __name__ == "__main__":
    main()
