"""What importing the provider's operator and sensor adds to parsing a DAG file.

Each sample is a fresh interpreter that times, in order: ``import airflow``; the DAG authoring API a DAG
file imports anyway (``airflow.sdk.DAG`` on Airflow 3, ``airflow.DAG`` on Airflow 2); then
``airflow_provider_metronome.operators.costs`` and ``airflow_provider_metronome.sensors.costs``.
The provider's overhead is the last step; the median of the samples is reported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

SAMPLES = 7
_PROBE = """
import json, time
started = time.perf_counter()
import airflow
airflow_done = time.perf_counter()
try:
    from airflow.sdk import DAG
    dag_api = "from airflow.sdk import DAG"
except ImportError:
    from airflow import DAG
    dag_api = "from airflow import DAG"
dag_api_done = time.perf_counter()
import airflow_provider_metronome.operators.costs
import airflow_provider_metronome.sensors.costs
provider_done = time.perf_counter()
print(json.dumps({
    "airflow": airflow_done - started,
    "dag_api": dag_api_done - airflow_done,
    "provider": provider_done - dag_api_done,
    "dag_api_name": dag_api,
}))
"""


def measure(env: dict[str, str], home: Path) -> dict[str, Any]:
    """Medians over :data:`SAMPLES` fresh interpreters, in seconds (one warm-up run not counted)."""
    samples = []
    for index in range(SAMPLES + 1):
        completed = subprocess.run(
            [sys.executable, "-c", _PROBE],
            cwd=home,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"the import probe failed:\n{completed.stderr[-4000:]}")
        if index:  # the first run fills the OS page cache and writes __pycache__
            samples.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    result: dict[str, Any] = {
        key: statistics.median(sample[key] for sample in samples)
        for key in ("airflow", "dag_api", "provider")
    }
    result["dag_api_name"] = samples[0]["dag_api_name"]
    result["samples"] = len(samples)
    return result
