"""A real Airflow for the browser tests: a private AIRFLOW_HOME, its CLI, and its web server process.

:class:`AirflowHome` is a throw-away home with its own SQLite database and configuration, passed to
every command as environment variables (nothing of the test process's own Airflow settings or
connections leaks in). :meth:`AirflowHome.cli` runs ``airflow ...`` in it; :meth:`AirflowHome.servers`
starts ``airflow api-server`` (Airflow 3) or ``airflow webserver`` (Airflow 2) processes, each on a
free loopback port, and polls their health endpoints against a deadline.

The API token passes through the command line of ``airflow connections add`` and through the
server's environment: every message these helpers make (a failed command, a server that does not
come up) has it replaced by ``***`` first, so that it cannot reach a test report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from airflow_provider_metronome._compat import AIRFLOW_V3
from tests.support.processes import stop_process_group
from tests.support.s3 import HOST, free_port

# Generous: reached only when something is broken. A healthy server answers in about 15 s on 2 CPUs.
STARTUP_TIMEOUT = 180.0
CLI_TIMEOUT = 120.0
POLL_INTERVAL = 0.2

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class AirflowProcessError(RuntimeError):
    """An Airflow command failed or its server did not come up; the message holds no secret."""


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@dataclass
class AirflowServer:
    """A running Airflow web server: where it answers and where it logs."""

    url: str
    health_url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class AirflowHome:
    """A private AIRFLOW_HOME and the configuration every command in it runs with."""

    path: Path
    config: dict[str, str] = field(default_factory=dict)
    # Strings no message may show (the API token): replaced by *** in every error these helpers raise.
    secrets: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """The process environment less every Airflow setting and connection, plus this home's."""
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        return {
            **inherited,
            "AIRFLOW_HOME": str(self.path),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.path / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.path / 'airflow.db'}",
            **self.config,
        }

    def cli(self, *args: str) -> str:
        """Run ``airflow ARGS`` here; its output (stdout and stderr together), which must show no secret."""
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        command = scrub(f"airflow {' '.join(args)}", self.secrets)
        if result.returncode != 0:
            raise AirflowProcessError(
                scrub(f"{command} exited {result.returncode}:\n{result.stdout[-4000:]}", self.secrets)
            )
        if scrub(result.stdout, self.secrets) != result.stdout:
            raise AirflowProcessError(f"the output of {command} shows a secret")
        return result.stdout

    @contextmanager
    def servers(
        self, *envs: Mapping[str, str | None], meanwhile: Callable[[], object] | None = None
    ) -> Iterator[list[AirflowServer]]:
        """One web server of the line per ``env``, each on a free port, until the block ends.

        Each ``env`` adds to this home's environment (None: leaves the variable out). They start
        together (on Airflow 2 one after another); ``meanwhile`` runs as they do (CLI commands,
        say), before their health is polled.
        At the end each process group is stopped, and no log may show a secret.
        """
        with ExitStack() as stack:
            started = []
            for env in envs:
                started.append(stack.enter_context(self._server(env)))
                if not AIRFLOW_V3:
                    # One at a time: Airflow 2's web servers each sync the UI's roles and permissions
                    # on start, and two doing it at once on one database fail (StaleDataError).
                    self._wait_until_healthy(started[-1])
            if meanwhile is not None:
                meanwhile()
            for server in started:
                self._wait_until_healthy(server)
            try:
                yield started
            finally:
                # All told to stop first, so that they shut down together (each takes a few seconds).
                for server in started:
                    if server.process.poll() is None:
                        os.killpg(server.process.pid, signal.SIGTERM)

    @contextmanager
    def _server(self, env: Mapping[str, str | None]) -> Iterator[AirflowServer]:
        port = free_port()
        if AIRFLOW_V3:
            command = ["api-server", "--host", HOST, "--port", str(port), "--workers", "1"]
            health = "/api/v2/monitor/health"
        else:
            command = ["webserver", "--hostname", HOST, "--port", str(port), "--workers", "1"]
            health = "/health"
        # A pid file of its own: Airflow 2 refuses to start a second webserver on the same one.
        command += ["--pid", str(self.path / f"{command[0]}-{port}.pid")]
        url = f"http://{HOST}:{port}"
        log = self.path / f"{command[0]}-{port}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "airflow", *command],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={key: value for key, value in {**self.env, **env}.items() if value is not None},
                start_new_session=True,  # its own process group: gunicorn's and uvicorn's workers stop with it
            )
        server = AirflowServer(url, url + health, log, process)
        try:
            yield server
        finally:
            stop_process_group(process)
        logged = server.log_text()
        if scrub(logged, self.secrets) != logged:
            raise AirflowProcessError(f"the log of airflow {command[0]} ({log}) shows a secret")

    def _wait_until_healthy(self, server: AirflowServer) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise AirflowProcessError(
                    scrub(
                        f"the web server exited {server.process.returncode}:\n{server.log_text()[-4000:]}",
                        self.secrets,
                    )
                )
            try:
                with urllib.request.urlopen(server.health_url, timeout=5) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(POLL_INTERVAL)
        raise AirflowProcessError(
            scrub(
                f"the web server did not answer within {STARTUP_TIMEOUT:.0f} s:\n{server.log_text()[-4000:]}",
                self.secrets,
            )
        )
