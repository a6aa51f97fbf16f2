"""The package as Airflow sees it: provider discovery, provider info, the connection form."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import secrets
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import airflow
import jsonschema
import pytest
from airflow.providers_manager import ProvidersManager

from airflow_provider_metronome import PACKAGE_NAME, __version__, get_provider_info
from airflow_provider_metronome._compat import AIRFLOW_V3
from airflow_provider_metronome.connection_form import CONNECTION_EXTRAS, HOOK_CLASS_NAME
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.testing import DEFAULT_TOKEN, MetronomeSimulator

EXPECTED_BEHAVIOUR = {
    "hidden_fields": ["schema", "login", "port"],
    "relabeling": {"host": "API base URL", "password": "API token"},
    "placeholders": {
        "host": "https://api.metronome.com",
        "password": "Metronome API token (sent as a Bearer token)",
        "extra": '{"timeout": 60, "max_retries": 2}',
    },
}
EXTRA_FIELDS = tuple(CONNECTION_EXTRAS)


def test_airflow_providers_list_shows_the_package(airflow_home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW_HOME": str(airflow_home)},
        timeout=120,
        check=True,
    )

    # Airflow may print configuration warnings before the table.
    listing = json.loads(result.stdout[result.stdout.index("[{") :])
    ours = [provider for provider in listing if provider["package_name"] == PACKAGE_NAME]
    assert ours == [
        {
            "package_name": PACKAGE_NAME,
            "description": "Fetch each customer's daily costs from Metronome, the usage-based billing platform",
            "version": __version__,
        }
    ]


def test_the_entry_point_is_installed() -> None:
    distribution = importlib.metadata.distribution(PACKAGE_NAME)
    entry_points = [ep for ep in distribution.entry_points if ep.group == "apache_airflow_provider"]

    assert distribution.version == __version__
    assert [ep.value for ep in entry_points] == ["airflow_provider_metronome:get_provider_info"]
    assert entry_points[0].load()() == get_provider_info()


def test_provider_info_passes_airflows_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())

    jsonschema.validate(get_provider_info(), schema)


def test_everything_the_provider_info_names_exists() -> None:
    info = get_provider_info()
    modules = [
        module
        for kind in ("hooks", "operators", "sensors", "triggers")
        for entry in info[kind]
        for module in entry["python-modules"]
    ]
    classes = [*info["extra-links"], *(conn["hook-class-name"] for conn in info["connection-types"])]

    for module in modules:
        importlib.import_module(module)
    for dotted in classes:
        module, _, name = dotted.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), name), type)
    assert f"{MetronomeHook.__module__}.{MetronomeHook.__qualname__}" == HOOK_CLASS_NAME


def test_providers_manager_knows_the_connection_type() -> None:
    manager = ProvidersManager()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Airflow 3 points at the task SDK's manager for hooks
        hook_info = manager.hooks["metronome"]

    assert hook_info is not None
    assert hook_info.hook_class_name == HOOK_CLASS_NAME
    assert (hook_info.hook_name, hook_info.connection_id_attribute_name) == ("Metronome", "metronome_conn_id")
    assert hook_info.connection_testable
    assert manager.field_behaviours["metronome"] == EXPECTED_BEHAVIOUR


def test_providers_manager_reports_the_extra_fields() -> None:
    widgets = {
        name: widget
        for name, widget in ProvidersManager().connection_form_widgets.items()
        if widget.package_name == PACKAGE_NAME
    }
    specs = get_provider_info()["connection-types"][0]["conn-fields"]

    assert sorted(widgets) == sorted(f"extra__metronome__{name}" for name in EXTRA_FIELDS)
    for name in EXTRA_FIELDS:
        widget = widgets[f"extra__metronome__{name}"]
        assert widget.field_name == name
        assert not widget.is_sensitive
        assert _label_and_description(widget.field) == (specs[name]["label"], specs[name]["description"])
        if AIRFLOW_V3:  # Airflow 3 builds the form from JSON schema; Airflow 2 from WTForms fields
            assert widget.field["schema"]["type"] == specs[name]["schema"]["type"]


@pytest.mark.skipif(AIRFLOW_V3, reason="Airflow 3 reads the form from get_provider_info(), without Flask")
def test_hook_builds_the_airflow_2_form() -> None:
    assert MetronomeHook.get_ui_field_behaviour() == EXPECTED_BEHAVIOUR
    widgets = MetronomeHook.get_connection_form_widgets()

    assert sorted(widgets) == sorted(EXTRA_FIELDS)
    assert _label_and_description(widgets["timeout"]) == (
        "Timeout (s)",
        "The most one request may take, connecting and reading the whole answer. Default 60.",
    )


def test_hook_describes_the_form_on_both_lines() -> None:
    assert MetronomeHook.get_ui_field_behaviour() == EXPECTED_BEHAVIOUR
    assert (MetronomeHook.conn_type, MetronomeHook.hook_name) == ("metronome", "Metronome")
    assert (MetronomeHook.conn_name_attr, MetronomeHook.default_conn_name) == (
        "metronome_conn_id",
        "metronome_default",
    )


def _label_and_description(field: Any) -> tuple[str, str]:
    """The label and help text of a form field, whichever way the Airflow line describes it."""
    if isinstance(field, dict):  # Airflow 3: a JSON-schema field
        return field["schema"]["title"], field["description"]
    label, *_ = field.args  # Airflow 2: an unbound WTForms field
    return str(label), field.kwargs["description"]


@pytest.mark.skipif(not AIRFLOW_V3, reason="the connection test endpoint of Airflow 3's REST API")
@pytest.mark.usefixtures("airflow_db")
def test_the_rest_api_tests_a_connection_not_stored_yet_with_what_a_form_sends(
    simulator: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Port 0 for the hidden port field and null for extras left empty both mean "not set".

    Only for a connection id that is not stored: for a stored one without a port, Airflow 3.3.2
    refuses port 0 with a 400 before the hook runs (what the UI's Test button meets:
    tests/browser/test_airflow3_ui.py).
    """
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    client = TestClient(create_app("core"))
    body = {
        "connection_id": "metronome_ui",
        "conn_type": "metronome",
        "host": simulator.url,
        "password": simulator.token,
        "port": 0,
        "extra": json.dumps(dict.fromkeys(CONNECTION_EXTRAS)),
    }

    answer = client.post("/api/v2/connections/test", json=body)

    assert answer.status_code == 200
    assert answer.json() == {"status": True, "message": f"Connected to Metronome at {simulator.url}."}


# -- testing a connection: what the Test button and `airflow connections test` report ----------------


def _connection(url: str, token: str = DEFAULT_TOKEN, *, port: int | None = None, **extra: object) -> str:
    """A connection in Airflow's JSON form, as in AIRFLOW_CONN_<ID>."""
    fields: dict[str, object] = {"conn_type": "metronome", "host": url, "password": token, "extra": extra}
    return json.dumps(fields if port is None else {**fields, "port": port})


@pytest.mark.parametrize(
    ("connection", "task_error", "test_error"),
    [
        (
            {"token": " "},
            "The Airflow connection 'metronome_default' has no API token",
            "The connection with host {url!r} has no API token",
        ),
        (
            {"token": "two words"},
            "The API token of the Airflow connection 'metronome_default' contains spaces",
            "The API token of the connection with host {url!r} contains spaces",
        ),
        (
            {"timeout": 0},
            "The Airflow connection 'metronome_default' has extra timeout=0; it must be a number above 0 up to 3600.",
            "The connection with host {url!r} has extra timeout=0; it must be a number above 0 up to 3600.",
        ),
        (
            {"port": 70000},
            "The Airflow connection 'metronome_default' has host port 70000, which is not a TCP port",
            "The connection has host port 70000, which is not a TCP port",
        ),
        (
            {"host": "http://127.0.0.1:abc"},
            "The Airflow connection 'metronome_default' has host 'http://127.0.0.1:abc', which is not a valid URL",
            "The connection has host 'http://127.0.0.1:abc', which is not a valid URL",
        ),
        (
            {"host": "", "pool_size": 0},
            "The Airflow connection 'metronome_default' has extra pool_size=0",
            "The connection with no host (so https://api.metronome.com) has extra pool_size=0",
        ),
    ],
)
def test_a_test_names_the_host_and_a_task_the_conn_id(
    simulator: MetronomeSimulator,
    monkeypatch: pytest.MonkeyPatch,
    connection: dict[str, Any],
    task_error: str,
    test_error: str,
) -> None:
    """A test (UI, REST API: a temporary copy under a random id) names the host; a task, the conn id."""
    fields = {"url": simulator.url, "token": simulator.token, **connection}
    url, token, port = fields.pop("url"), fields.pop("token"), fields.pop("port", None)
    url = fields.pop("host", url)
    monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", _connection(url, token, port=port, **fields))
    hook = MetronomeHook()

    with pytest.raises(ValueError, match=r"^The ") as err:
        _ = hook.settings
    ok, message = hook.test_connection()

    assert str(err.value).startswith(task_error)
    assert not ok
    assert message.startswith(test_error.format(url=url))
    # The test leaves the hook as it was: the next error names the conn id again.
    with pytest.raises(ValueError, match=r"^The ") as again:
        _ = hook.settings
    assert str(again.value) == str(err.value)
    assert simulator.requests == []


def _airflow_connections_test(
    airflow_home: Path, conn_id: str, connection: str, setting: str | None
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW_CONN_")}
    env.pop("AIRFLOW__CORE__TEST_CONNECTION", None)
    if setting is not None:
        env["AIRFLOW__CORE__TEST_CONNECTION"] = setting
    env[f"AIRFLOW_CONN_{conn_id.upper()}"] = connection
    return subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "test", conn_id],
        capture_output=True,
        text=True,
        env={**env, "AIRFLOW_HOME": str(airflow_home)},
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("setting", "extra", "exit_code", "says"),
    [
        (
            None,
            {},
            1,
            "Testing connections is disabled in Airflow configuration. Contact your deployment admin to enable it.",
        ),
        ("Enabled", {}, 0, "Connection success!"),
        (
            "Enabled",
            {"timeout": 0},
            1 if AIRFLOW_V3 else 0,  # Airflow 2's command exits 0 after a failed test
            "Connection failed!\n"
            "The connection with host {url!r} has extra timeout=0; it must be a number above 0 up to 3600.",
        ),
    ],
    ids=["without-the-setting", "enabled", "enabled-bad-extra"],
)
def test_airflow_connections_test_on_the_command_line(
    airflow_home: Path, setting: str | None, extra: dict[str, Any], exit_code: int, says: str
) -> None:
    """``airflow connections test`` needs ``[core] test_connection = Enabled``, then tests the connection."""
    token = f"tok-{secrets.token_hex(16)}"
    with MetronomeSimulator(token=token) as sim:
        result = _airflow_connections_test(
            airflow_home, "metronome_cli_test", _connection(sim.url, token, **extra), setting
        )
        url = sim.url
        requests_seen = [(record.path, record.authorized) for record in sim.requests]

    output = result.stdout + result.stderr
    # First, so that no failed assertion below can print the token.
    leaked = token in output
    assert not leaked, "the API token appears in the command's output"
    assert result.returncode == exit_code
    assert says.format(url=url) in output
    assert requests_seen == ([("/v1/customers", True)] if "success" in says else [])
