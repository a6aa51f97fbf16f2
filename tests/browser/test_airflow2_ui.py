"""The Test button of Airflow 2's connection form, in Chromium, against a real ``airflow webserver``.

One webserver (Flask AppBuilder, a user made with ``airflow users create`` who signs in through the
login page, ``[core] test_connection = Enabled``) in a private AIRFLOW_HOME, the simulator as the
Metronome API, and connections made by ``airflow connections add``, by the form and by an
``AIRFLOW_CONN_...`` variable.

What it found on Airflow 2.11.2: the Test button sends what the form holds, and the form of a saved
connection does not show its password, so a saved connection tests fine only once its token is
typed in again; a new connection tests fine before it is saved. Environment-variable connections
are not listed, so they have no form and no Test button.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_metronome._compat import AIRFLOW_V3
from airflow_provider_metronome.connection_form import CONNECTION_EXTRAS
from airflow_provider_metronome.testing import MetronomeSimulator
from tests.browser.pages import BROWSER_TIMEOUT_MS, Pages, fill_secret, shows
from tests.browser.servers import AirflowHome, AirflowServer
from tests.support.runs import connection_json

pytestmark = pytest.mark.skipif(
    AIRFLOW_V3, reason="Airflow 2's Flask AppBuilder UI; Airflow 3 has its own test"
)
expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (the test extra)"
).expect

ENV_CONN_ID = "metronome_env"
USER = "admin"
TEST_ENDPOINT = "**/api/v1/connections/test"


@dataclass
class Airflow:
    home: AirflowHome
    server: AirflowServer
    disabled: AirflowServer  # the same Airflow, without [core] test_connection = Enabled
    sim: MetronomeSimulator
    token: str
    password: str  # the user's, to sign in


@pytest.fixture(scope="module")
def airflow(
    tmp_path_factory: pytest.TempPathFactory, metronome: MetronomeSimulator, token: str
) -> Iterator[Airflow]:
    password = secrets.token_hex(8)
    home = AirflowHome(
        tmp_path_factory.mktemp("airflow2-ui"),
        config={
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.token_hex(16),
        },
        secrets=[token, password],
    )
    home.cli("db", "migrate")

    def prepare() -> None:
        home.cli(
            *("users", "create", "--username", USER, "--password", password, "--role", "Admin"),
            *("--firstname", "Ada", "--lastname", "Admin", "--email", "admin@example.com"),
        )
        home.cli(
            *("connections", "add", "metronome_cli", "--conn-type", "metronome"),
            *("--conn-host", metronome.url, "--conn-password", token),
        )

    env_connection = {f"AIRFLOW_CONN_{ENV_CONN_ID.upper()}": connection_json(metronome.url, token)}
    without_the_setting = {"AIRFLOW__CORE__TEST_CONNECTION": None}
    with home.servers(env_connection, without_the_setting, meanwhile=prepare) as (server, disabled):
        yield Airflow(home, server, disabled, metronome, token, password)


def sign_in(page: Any, server: AirflowServer, password: str) -> None:
    """Sign in through the login form, as the user made by ``airflow users create``."""
    page.goto(f"{server.url}/login/")
    page.get_by_label("Username:").fill(USER)
    fill_secret(page.get_by_label("Password:"), password)
    page.get_by_role("button", name="Sign In").click()
    expect(page.get_by_role("link", name="DAGs", exact=True)).to_be_visible()


@pytest.fixture(scope="module")
def signed_in(airflow: Airflow, browser: Any) -> Iterator[Any]:
    """A page signed in through the login form, for the whole module."""
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, airflow.server, airflow.password)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(signed_in: Any, pages: Pages) -> Any:
    """The module's page; photographed if the test fails."""
    return pages.watch(signed_in)


def press_test(page: Any) -> dict[str, Any]:
    """Press the form's Test button; what the API answered and what the form sent (token left out)."""
    with page.expect_response(TEST_ENDPOINT) as answer:
        page.get_by_role("button", name="Test").click()
    response = answer.value
    sent = json.loads(response.request.post_data)
    return {"status": response.status, "json": response.json(), "sent_password": "password" in sent}


def alert(page: Any) -> Any:
    """The message box the Test button fills (Flask's alert at the top of the page)."""
    return page.locator(".container .row .alert")


def open_form(page: Any, airflow: Airflow, conn_id: str) -> None:
    page.goto(f"{airflow.server.url}/connection/list/?_flt_0_conn_id={conn_id}")
    page.get_by_role("row").filter(has_text=conn_id).get_by_role("link", name="Edit").click()
    expect(page.get_by_label("Connection Id")).to_have_value(conn_id)


def test_a_cli_connection_tests_fine_once_its_token_is_typed_again(page: Any, airflow: Airflow) -> None:
    open_form(page, airflow, "metronome_cli")
    # The form of a saved connection does not show its password: Test sends none.
    expect(page.get_by_label("API token")).to_have_value("")
    answer = press_test(page)

    message = (
        f"The connection with host {airflow.sim.url!r} has no API token: "
        "put the Metronome API token in its password field."
    )
    assert (answer["json"], answer["sent_password"]) == ({"status": False, "message": message}, False)
    expect(alert(page)).to_have_text(message)

    fill_secret(page.get_by_label("API token"), airflow.token)
    answer = press_test(page)

    message = f"Connected to Metronome at {airflow.sim.url}."
    assert answer["json"] == {"status": True, "message": message}
    expect(alert(page)).to_have_text(message)
    assert airflow.sim.requests[-1].authorized


def test_the_metronome_form_tests_a_new_connection_before_it_is_saved(page: Any, airflow: Airflow) -> None:
    page.goto(f"{airflow.server.url}/connection/add")
    page.get_by_label("Connection Id").fill("metronome_form")
    page.get_by_label("Connection Type").select_option("metronome")

    # The relabelled fields; login, schema and port are hidden.
    expect(page.get_by_label("API base URL")).to_have_attribute("placeholder", "https://api.metronome.com")
    expect(page.get_by_label("API token")).to_have_attribute("type", "password")
    for hidden in ("Login", "Schema", "Port"):
        expect(page.get_by_label(hidden, exact=True)).to_be_hidden()
    # Every extra has its field, empty: Airflow 2's form does not pre-fill the defaults.
    for spec in CONNECTION_EXTRAS.values():
        expect(page.get_by_label(spec["label"], exact=True)).to_have_value("")

    page.get_by_label("API base URL").fill(airflow.sim.url)
    fill_secret(page.get_by_label("API token"), airflow.token)
    page.get_by_label("Timeout (s)", exact=True).fill("0")
    answer = press_test(page)

    # The form sends its extras as strings.
    message = (
        f"The connection with host {airflow.sim.url!r} has extra timeout='0'; "
        "it must be a number above 0 up to 3600."
    )
    assert answer["json"] == {"status": False, "message": message}
    expect(alert(page)).to_have_text(message)

    page.get_by_label("Timeout (s)", exact=True).fill("30")
    answer = press_test(page)

    message = f"Connected to Metronome at {airflow.sim.url}."
    assert answer["json"] == {"status": True, "message": message}
    expect(alert(page)).to_have_text(message)

    with page.expect_navigation():
        page.get_by_role("button", name="Save").click()
    # Saved (Flask AppBuilder goes back to the page before), its form no longer holds the token:
    # Test then fails as for the CLI's connection.
    open_form(page, airflow, "metronome_form")
    expect(page.get_by_label("Timeout (s)", exact=True)).to_have_value("30")
    press_test(page)
    expect(alert(page)).to_have_text(
        f"The connection with host {airflow.sim.url!r} has no API token: "
        "put the Metronome API token in its password field."
    )


def test_an_environment_variable_connection_is_not_listed(page: Any, airflow: Airflow) -> None:
    page.goto(f"{airflow.server.url}/connection/list/?_flt_0_conn_id={ENV_CONN_ID}")

    expect(page.get_by_text("No records found")).to_be_visible()


def test_no_page_holds_the_token(page: Any, airflow: Airflow) -> None:
    open_form(page, airflow, "metronome_cli")

    assert not shows(page.content(), airflow.token)


def test_without_the_setting_the_test_button_is_disabled(airflow: Airflow, pages: Pages) -> None:
    """The same Airflow, its webserver started without ``[core] test_connection = Enabled``."""
    page = pages.new()
    sign_in(page, airflow.disabled, airflow.password)
    page.goto(f"{airflow.disabled.url}/connection/add")
    page.get_by_label("Connection Type").select_option("metronome")
    button = page.get_by_role("button", name="Test")

    expect(button).to_be_disabled()
    expect(button).to_have_attribute(
        "title",
        "Testing connections is disabled in Airflow configuration. Contact your deployment admin to enable it.",
    )
