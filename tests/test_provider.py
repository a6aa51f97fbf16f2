"""The package as Airflow sees it: provider discovery, provider info, the connection form."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import airflow
import jsonschema
import pytest
from airflow.providers_manager import ProvidersManager

from airflow_provider_metronome import (
    CONNECTION_EXTRAS,
    HOOK_CLASS_NAME,
    PACKAGE_NAME,
    __version__,
    get_provider_info,
)
from airflow_provider_metronome._compat import AIRFLOW_V3
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.testing import MetronomeSimulator

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
def test_the_ui_test_button_works_with_what_the_form_sends(
    simulator: MetronomeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form sends port 0 for the hidden port field and null for extras left empty."""
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
