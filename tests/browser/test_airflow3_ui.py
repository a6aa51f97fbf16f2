"""The Test button of Airflow 3's Connections page, in Chromium, against a real ``airflow api-server``.

One api-server (SimpleAuthManager, every user an admin, ``[core] test_connection = Enabled``) in a
private AIRFLOW_HOME, the simulator as the Metronome API, and connections made the three ways users
make them: ``airflow connections add``, the UI's form, an ``AIRFLOW_CONN_...`` variable (and one
through the REST API, stored with port 0 and a bad extra). The tests share one Connections page,
do what a user does on it, and read what the UI shows.

What it found on Airflow 3.3.2: the Test button of the list sends ``port: 0`` for a connection with
no port, and the API refuses it (400, shown as "Bad Request") because the stored port is empty and
the form's masked password does not count as new credentials; a connection stored with port 0
(``airflow connections add ... --conn-port 0``) tests fine. The Add and Edit forms have no Test
button. Environment-variable connections are not listed, so they have no Test button.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_metronome._compat import AIRFLOW_V3
from airflow_provider_metronome.connection_form import CONNECTION_EXTRAS
from airflow_provider_metronome.testing import MetronomeSimulator
from tests.browser.pages import BROWSER_TIMEOUT_MS, Pages, fill_secret, shows
from tests.browser.servers import SIMPLE_AUTH_MANAGER, AirflowHome, AirflowServer
from tests.support.runs import connection_json

pytestmark = pytest.mark.skipif(not AIRFLOW_V3, reason="Airflow 3's React UI; Airflow 2 has its own test")
expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (the test extra)"
).expect

ENV_CONN_ID = "metronome_env"
TEST_ENDPOINT = "**/api/v2/connections/test"
SEARCH = re.compile("^Search Connections")


@dataclass
class Airflow:
    home: AirflowHome
    server: AirflowServer
    disabled: AirflowServer  # the same Airflow, without [core] test_connection = Enabled
    sim: MetronomeSimulator
    token: str
    cli_test: str  # what `airflow connections test metronome_cli` printed


@pytest.fixture(scope="module")
def airflow(
    tmp_path_factory: pytest.TempPathFactory, metronome: MetronomeSimulator, token: str
) -> Iterator[Airflow]:
    home = AirflowHome(
        tmp_path_factory.mktemp("airflow3-ui"),
        config={
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        },
        secrets=[token],
    )
    home.cli("db", "migrate")
    cli_test: list[str] = []

    def add_connections() -> None:
        for conn_id, *more in (["metronome_cli"], ["metronome_cli_port0", "--conn-port", "0"]):
            home.cli(
                *("connections", "add", conn_id, "--conn-type", "metronome", "--conn-host", metronome.url),
                *("--conn-password", token, *more),
            )
        # The connection the UI cannot test passes the CLI's test.
        cli_test.append(home.cli("connections", "test", "metronome_cli"))

    env_connection = {f"AIRFLOW_CONN_{ENV_CONN_ID.upper()}": connection_json(metronome.url, token)}
    without_the_setting = {"AIRFLOW__CORE__TEST_CONNECTION": None}
    with home.servers(env_connection, without_the_setting, meanwhile=add_connections) as (server, disabled):
        # One more through the REST API (quicker than a third CLI start): stored with port 0 too.
        bad = {"connection_id": "metronome_bad", "conn_type": "metronome", "host": metronome.url, "port": 0}
        post_connection(server, {**bad, "password": token, "extra": json.dumps({"timeout": 0})})
        yield Airflow(home, server, disabled, metronome, token, cli_test[0])


def post_connection(server: AirflowServer, body: dict[str, Any]) -> None:
    """Create a connection through Airflow's REST API, as an admin (SimpleAuthManager's all-admins token)."""
    with urllib.request.urlopen(f"{server.url}/auth/token", timeout=30) as answer:
        access = json.load(answer)["access_token"]
    request = urllib.request.Request(
        f"{server.url}/api/v2/connections",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {access}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 201


@pytest.fixture(scope="module")
def connections(airflow: Airflow, browser: Any) -> Iterator[Any]:
    """The Connections page, loaded once for the module (loading the UI is most of a test's time).

    Each test leaves it as it found it: the list of every connection, no dialog open.
    """
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{airflow.server.url}/connections")
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(connections: Any, pages: Pages) -> Any:
    """The module's page, as the tests leave it (reloaded after one that failed); photographed if the test fails."""
    if connections.get_by_role("dialog").count() or connections.get_by_placeholder(SEARCH).input_value():
        connections.reload()
    return pages.watch(connections)


def press_test(page: Any, conn_id: str) -> dict[str, Any]:
    """Press the Test button of ``conn_id``'s row; what the API answered (status and JSON)."""
    row = page.get_by_role("row").filter(has=page.get_by_text(conn_id, exact=True))
    with page.expect_response(TEST_ENDPOINT) as answer:
        row.get_by_role("button", name="Test Connection").click()
    response = answer.value
    return {
        "status": response.status,
        "json": response.json(),
        "sent": json.loads(response.request.post_data),
    }


def toast(page: Any, title: str, message: str) -> Any:
    """The notification the Test button raised: its title, then its message."""
    return page.get_by_role("status").filter(has_text=title).filter(has_text=message).first


def test_a_connection_stored_with_port_0_tests_fine(page: Any, airflow: Airflow) -> None:
    answer = press_test(page, "metronome_cli_port0")

    message = f"Connected to Metronome at {airflow.sim.url}."
    assert answer["status"] == 200
    assert answer["json"] == {"status": True, "message": message}
    expect(toast(page, "Test Connection Successful", message)).to_have_text(
        f"Test Connection Successful{message}"
    )
    # The masked password went out, not the token; the simulator saw the token itself.
    assert answer["sent"]["password"] == "***"
    assert airflow.sim.requests[-1].authorized


def test_a_cli_connection_without_a_port_is_refused_as_bad_request(page: Any, airflow: Airflow) -> None:
    answer = press_test(page, "metronome_cli")

    assert answer["sent"]["port"] == 0  # Number(null) in the UI
    assert answer["status"] == 400
    assert answer["json"] == {
        "detail": "The host or port to test differs from the stored connection. "
        "Include the credentials to test in the request body."
    }
    expect(toast(page, "Test Connection Failed", "Bad Request")).to_have_text(
        "Test Connection FailedBad Request"
    )
    # Airflow's refusal, not the connection's fault: the CLI tests the same connection fine.
    assert "Connection success!" in airflow.cli_test


def test_a_failed_test_names_the_host_not_the_temporary_id(page: Any, airflow: Airflow) -> None:
    answer = press_test(page, "metronome_bad")

    message = (
        f"The connection with host {airflow.sim.url!r} has extra timeout=0; "
        "it must be a number above 0 up to 3600."
    )
    assert answer["json"] == {"status": False, "message": message}
    expect(toast(page, "Test Connection Failed", message)).to_have_text(f"Test Connection Failed{message}")


def test_the_metronome_form_and_a_connection_saved_with_it(page: Any, airflow: Airflow) -> None:
    page.get_by_role("button", name="Add Connection").click()
    form = page.get_by_role("dialog")
    form.get_by_label("Connection ID").fill("metronome_form")
    form.get_by_role("combobox").fill("Metronome")
    page.get_by_role("option", name="Metronome", exact=True).click()

    # The relabelled fields; login, schema and port are hidden.
    expect(form.get_by_label("API base URL")).to_have_attribute("placeholder", "https://api.metronome.com")
    expect(form.get_by_label("API token")).to_have_attribute("type", "password")
    for hidden in ("Login", "Schema", "Port"):
        expect(form.get_by_label(hidden, exact=True)).to_have_count(0)
    form.get_by_label("API base URL").fill(airflow.sim.url)
    fill_secret(form.get_by_label("API token"), airflow.token)
    # Every extra, pre-filled with its default (requests_per_second has none); opening this section
    # closes the standard one.
    form.get_by_text("Extra Fields", exact=True).click()
    for spec in CONNECTION_EXTRAS.values():
        default = spec["schema"].get("default")
        expect(form.get_by_label(spec["label"], exact=True)).to_have_value(
            "" if default is None else str(default)
        )

    with page.expect_response(
        lambda r: r.url.endswith("/api/v2/connections") and r.request.method == "POST"
    ) as saved:
        form.get_by_role("button", name="Save").click()
    stored = saved.value.json()
    assert (stored["host"], stored["port"], stored["password"]) == (airflow.sim.url, None, "***")
    assert json.loads(stored["extra"]) == {
        name: spec["schema"].get("default") for name, spec in CONNECTION_EXTRAS.items()
    }

    # Saved without a port, so its Test button fares as the CLI's does.
    answer = press_test(page, "metronome_form")
    assert (answer["status"], answer["sent"]["port"]) == (400, 0)
    expect(toast(page, "Test Connection Failed", "Bad Request")).to_have_text(
        "Test Connection FailedBad Request"
    )


def test_an_environment_variable_connection_is_not_listed(page: Any, airflow: Airflow) -> None:
    expect(page.get_by_role("row").filter(has_text="metronome_cli_port0")).to_have_count(1)
    search = page.get_by_placeholder(SEARCH)
    search.fill(ENV_CONN_ID)

    expect(page.get_by_text("No connection found!")).to_be_visible()
    expect(
        page.get_by_text(
            "Connections defined via environment variables or secrets managers are not listed here."
        )
    ).to_be_visible()
    search.fill("")
    expect(page.get_by_role("row").filter(has_text="metronome_cli_port0")).to_have_count(1)


def test_the_edit_form_holds_the_masked_token_only(page: Any, airflow: Airflow) -> None:
    """What the edit form holds (and so what any screenshot of it could show) is ***, not the token."""
    row = page.get_by_role("row").filter(has=page.get_by_text("metronome_cli_port0", exact=True))
    row.get_by_role("button", name="Edit Connection").click()
    field = page.get_by_role("dialog").get_by_label("API token")

    expect(field).to_have_value("***")
    assert not shows(page.content() + page.inner_text("body"), airflow.token)
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)


def test_without_the_setting_the_test_button_is_disabled(airflow: Airflow, pages: Pages) -> None:
    """The same Airflow, its api-server started without ``[core] test_connection = Enabled``."""
    page = pages.new()
    page.goto(f"{airflow.disabled.url}/connections")
    row = page.get_by_role("row").filter(has=page.get_by_text("metronome_cli_port0", exact=True))
    button = row.get_by_role("button", name="Test Connection")

    expect(button).to_be_disabled()
    button.hover(force=True)
    expect(page.get_by_role("tooltip")).to_have_text(
        "Test connection feature is disabled. Please contact an administrator to enable it."
    )
