"""Shared by the benchmark parts: the fixed day, the child-process runner and the Airflow environment."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# A day the simulator (frozen at 2024-02-01) has finished: every customer has it.
DAY = dt.date(2024, 1, 5)
STARTING_ON = f"{DAY.isoformat()}T00:00:00Z"
ENDING_BEFORE = f"{(DAY + dt.timedelta(days=1)).isoformat()}T00:00:00Z"
PAGE_SIZE = 100
CHILD_TIMEOUT = 1800


def airflow_env(home: Path, url: str | None = None, token: str | None = None) -> dict[str, str]:
    """A throw-away AIRFLOW_HOME, and the ``metronome_default`` connection pointing at the simulator."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        }
    )
    if url is not None and token is not None:
        env["AIRFLOW_CONN_METRONOME_DEFAULT"] = json.dumps(
            {"conn_type": "metronome", "host": url, "password": token}
        )
    return env


def run_child(module: str, args: Sequence[str], env: dict[str, str], cwd: Path = REPO_ROOT) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh interpreter; its last stdout line is a JSON result.

    :param cwd: Where it runs, which ``python -m`` puts first on ``sys.path``: a folder holding another
        version of the package runs that version (the repository stays importable through PYTHONPATH).
    """
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0 or not completed.stdout.strip():
        raise RuntimeError(
            f"{module} {' '.join(args)} failed with exit code {completed.returncode}:\n{completed.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.monotonic() - started
    return result


def package_at(commit: str, folder: Path) -> Path:
    """``folder`` holding the package as it was at ``commit``, unpacked from git (nothing else is touched).

    Run a child with ``cwd=folder`` to import that version (see :func:`run_child`).
    """
    folder.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "airflow_provider_metronome"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def emit(result: dict[str, Any]) -> None:
    """A child's result: one JSON line on stdout."""
    print(json.dumps(result), flush=True)
