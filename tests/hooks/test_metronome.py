"""MetronomeHook over real HTTP: connection, endpoints, pagination, models, bad input, errors, secrecy.

Retries have their own module, test_retry.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pendulum
import pytest
import requests

from airflow_provider_metronome import __version__
from airflow_provider_metronome._compat import AIRFLOW_V3, AirflowException, redact
from airflow_provider_metronome.exceptions import (
    MetronomeAuthenticationError,
    MetronomeClientError,
    MetronomeNotFoundError,
    MetronomeResponseError,
    MetronomeTransientError,
)
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.models import CostWindow, Customer, InvoiceBreakdown, InvoiceLineItem
from airflow_provider_metronome.testing import DEFAULT_TOKEN, Fault, MetronomeSimulator
from airflow_provider_metronome.vocabulary import SOURCES
from tests.support.runs import connection_json

UTC = dt.timezone.utc
# Frozen so that February 2024 is finalized and March 2024 is still a draft.
NOW = dt.datetime(2024, 3, 10, 12, tzinfo=UTC)
USD = "2714e483-4ff1-48e4-9e25-ac732e8f24f2"


@pytest.fixture
def sim(simulator: MetronomeSimulator) -> MetronomeSimulator:
    simulator.now = NOW
    return simulator


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Callable[..., MetronomeHook]:
    """Build a hook on a ``metronome_default`` connection with the given host, token and extras."""

    def make(host: str | None, token: str = DEFAULT_TOKEN, **extra: Any) -> MetronomeHook:
        monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(host or "", token, **extra))
        return MetronomeHook()

    return make


@pytest.fixture
def hook(sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]) -> MetronomeHook:
    return connect(sim.url)


def customer_id(sim: MetronomeSimulator, index: int = 0) -> str:
    """An active customer whose plan supports /costs."""
    return sim.costs_customer_ids[index]


def raw_items(sim: MetronomeSimulator, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list endpoint as the simulator's JSON, fetched with plain requests."""
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    items: list[dict[str, Any]] = []
    query = dict(params)
    while True:
        page = requests.get(sim.url + path, params=query, headers=headers, timeout=10).json()
        items.extend(page["data"])
        if not page["next_page"]:
            return items
        query["next_page"] = page["next_page"]


def canonical(value: Any) -> str:
    """JSON text that tells 1 from 1.0 and an absent key from a null one."""
    return json.dumps(value, sort_keys=True)


def sent(sim: MetronomeSimulator, index: int = -1) -> dict[str, str]:
    """The query of a logged request, one value per parameter."""
    return {key: values[0] for key, values in sim.requests[index].query.items()}


# -- the connection -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_base_url_with_or_without_v1_and_slash_reaches_the_api(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook], suffix: str
) -> None:
    hook = connect(sim.url + suffix)

    assert len(list(hook.iter_customers())) == len(sim.active_customer_ids)
    assert hook.settings.base_url == sim.url
    assert [record.path for record in sim.requests] == ["/v1/customers"]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (None, "https://api.metronome.com"),
        ("api.metronome.com", "https://api.metronome.com"),
        ("api.metronome.com/v1/", "https://api.metronome.com"),
        ("https://api.metronome.com/", "https://api.metronome.com"),
        ("http://localhost:8080/v1", "http://localhost:8080"),
        ("  https://eu.example.com/metronome/v1  ", "https://eu.example.com/metronome"),
    ],
)
def test_base_url_normalisation(
    connect: Callable[..., MetronomeHook], host: str | None, expected: str
) -> None:
    assert connect(host).settings.base_url == expected


def test_host_and_port_fields_combine(monkeypatch: pytest.MonkeyPatch, sim: MetronomeSimulator) -> None:
    conn = {"conn_type": "metronome", "host": "http://127.0.0.1", "port": sim.port, "password": DEFAULT_TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", json.dumps(conn))

    assert MetronomeHook().test_connection()[0] is True
    assert MetronomeHook().settings.base_url == sim.url


def test_non_http_host_is_refused(connect: Callable[..., MetronomeHook]) -> None:
    with pytest.raises(ValueError, match=r"not an http\(s\) URL; use e.g. https://api.metronome.com"):
        _ = connect("ftp://files.example.com").settings


def test_extras_are_read_as_numbers_or_numeric_strings(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    settings = connect(
        sim.url, timeout=7.5, connect_timeout="2", max_retries="4", max_retry_wait=9, pool_size=3.0
    ).settings
    assert (settings.timeout, settings.connect_timeout, settings.max_retries) == (7.5, 2.0, 4)
    assert (settings.max_retry_wait, settings.pool_size) == (9.0, 3)
    assert isinstance(settings.max_retries, int)
    assert isinstance(settings.pool_size, int)

    # Airflow 2's connection form may store them prefixed.
    prefixed = connect(sim.url, extra__metronome__timeout="11", extra__metronome__max_retries="0").settings
    assert (prefixed.timeout, prefixed.max_retries) == (11.0, 0)

    defaults = connect(sim.url).settings
    assert (defaults.timeout, defaults.connect_timeout, defaults.max_retries) == (60.0, 5.0, 2)
    assert (defaults.max_retry_wait, defaults.pool_size) == (60.0, 32)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"timeout": "soon"}, "timeout='soon'; it must be a number above 0 up to 3600"),
        ({"timeout": 0}, "timeout=0; it must be a number above 0 up to 3600"),
        ({"timeout": 1e300}, "timeout=1e+300; it must be a number above 0 up to 3600"),
        ({"connect_timeout": -1}, "connect_timeout=-1; it must be a number above 0 up to 600"),
        ({"max_retries": 2.5}, "max_retries=2.5; it must be a whole number from 0 up to 100"),
        ({"max_retries": -1}, "max_retries=-1; it must be a whole number from 0 up to 100"),
        ({"max_retry_wait": "nan"}, "max_retry_wait='nan'; it must be a number from 0 up to 3600"),
        ({"pool_size": 0}, "pool_size=0; it must be a whole number from 1 up to 1024"),
        ({"pool_size": True}, "pool_size=True; it must be a whole number from 1 up to 1024"),
        ({"requests_per_second": 0}, "requests_per_second=0; it must be a number above 0 up to 10000"),
        ({"rate_limit_timeout": -5}, "rate_limit_timeout=-5; it must be a number above 0 up to 86400"),
    ],
)
def test_bad_extras_are_named_before_any_request(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook], extra: dict[str, Any], problem: str
) -> None:
    hook = connect(sim.url, **extra)

    with pytest.raises(ValueError, match="connection 'metronome_default' has extra") as err:
        list(hook.iter_customers())
    assert problem in str(err.value)
    # A test names the connection by its host (the UI tests a copy under a random id).
    by_host = str(err.value).replace(
        "Airflow connection 'metronome_default'", f"connection with host {sim.url!r}"
    )
    assert hook.test_connection() == (False, by_host)
    assert sim.requests == []


def test_missing_token_is_explained_before_any_request(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    hook = connect(sim.url, token="  ")

    with pytest.raises(ValueError, match="has no API token: put the Metronome API token in its password"):
        list(hook.iter_customers())
    assert sim.requests == []


def test_token_with_inner_whitespace_is_refused_without_echoing_it(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    token = "tok-" + uuid.uuid4().hex + "\nsecond-line"
    hook = connect(sim.url, token=token)

    ok, message = hook.test_connection()

    assert not ok
    assert "contains spaces or control characters" in message
    assert "second-line" not in message
    assert sim.requests == []


def test_session_is_pooled_authenticated_and_kept_alive(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]
) -> None:
    hook = connect(sim.url, pool_size=5)
    session = hook.get_conn()

    assert hook.get_conn() is session
    assert session.get_adapter(sim.url)._pool_maxsize == 5  # type: ignore[attr-defined]
    for _ in range(3):
        list(hook.iter_customers(page_size=10))
    assert all(record.authorized for record in sim.requests)
    assert {record.connection_id for record in sim.requests} == {sim.requests[0].connection_id}

    hook.close()
    assert hook.get_conn() is not session


def test_hook_is_shared_safely_across_threads(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    sim.latency = 0.05
    customers = [customer_id(sim, index) for index in range(8)]
    results: dict[str, list[CostWindow]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(customers))

    def fetch(cid: str) -> None:
        start.wait()
        try:
            results[cid] = list(hook.iter_costs(cid, "2024-02-01", "2024-02-11", page_size=5))
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=fetch, args=(cid,)) for cid in customers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sim.max_in_flight > 1
    for cid in customers:
        assert [w.model_dump(mode="json") for w in results[cid]] == [
            sim.costs_for(cid, dt.date(2024, 2, day)) for day in range(1, 11)
        ]


class _Scripted(BaseHTTPRequestHandler):
    """Serves prepared list pages in order, and records what the simulator's log leaves out: headers.

    For shapes the simulator never sends (a missing or empty cursor, a broken item) and for the
    User-Agent; it keeps only whether the bearer token matched, never the header itself.
    """

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this each answer waits for a delayed ACK.
    disable_nagle_algorithm = True
    pages: list[dict[str, Any]]
    seen: list[dict[str, Any]]

    def do_GET(self) -> None:
        self.seen.append(
            {
                "path": self.path,
                "user_agent": self.headers.get("User-Agent"),
                "accept": self.headers.get("Accept"),
                "bearer_ok": self.headers.get("Authorization") == f"Bearer {DEFAULT_TOKEN}",
            }
        )
        body = json.dumps(self.pages.pop(0) if self.pages else {"data": [], "next_page": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced."""


Scripted = Callable[[list[dict[str, Any]]], tuple[str, list[dict[str, Any]]]]


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    """Start a server answering the given pages in order; returns its URL and the requests it saw."""
    servers: list[ThreadingHTTPServer] = []

    def serve(pages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []
        handler = type("Handler", (_Scripted,), {"pages": list(pages), "seen": seen})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_requests_carry_bearer_token_and_user_agent(
    scripted: Scripted, connect: Callable[..., MetronomeHook]
) -> None:
    url, seen = scripted([])

    assert connect(url).test_connection()[0] is True

    assert len(seen) == 1
    assert seen[0]["bearer_ok"] is True
    assert seen[0]["accept"] == "application/json"
    assert seen[0]["user_agent"].startswith(f"airflow-provider-metronome/{__version__} ")


# -- test_connection ------------------------------------------------------------------------------


def test_connection_ok_with_one_cheap_call(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    assert hook.test_connection() == (True, f"Connected to Metronome at {sim.url}.")
    assert [(r.path, r.query["limit"], r.authorized) for r in sim.requests] == [
        ("/v1/customers", ["1"], True)
    ]


def test_netrc_credentials_never_replace_the_token(
    sim: MetronomeSimulator, hook: MetronomeHook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("default login someone password something-else\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    assert hook.test_connection()[0] is True
    assert [record.authorized for record in sim.requests] == [True]


def test_connection_with_a_bad_token(sim: MetronomeSimulator, connect: Callable[..., MetronomeHook]) -> None:
    ok, message = connect(sim.url, token="not-the-token").test_connection()

    assert not ok
    assert message == (
        "Metronome API error (HTTP 401) on GET /v1/customers: Unauthorized "
        "(check the API token in the Airflow connection's password field)"
    )
    assert "not-the-token" not in message
    assert [record.authorized for record in sim.requests] == [False]


def test_connection_to_nothing(connect: Callable[..., MetronomeHook]) -> None:
    with MetronomeSimulator() as stopped:
        url = stopped.url

    ok, message = connect(url, max_retries=0).test_connection()

    assert not ok
    port = url.rsplit(":", 1)[1]
    assert f"no answer after 1 attempt(s): the connection to 127.0.0.1:{port} was refused" in message


# -- endpoints and parameters ---------------------------------------------------------------------


def test_customers_active_by_default(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    customers = list(hook.iter_customers())

    assert all(isinstance(customer, Customer) for customer in customers)
    assert [c.id for c in customers] == sim.active_customer_ids
    assert all(c.archived_at is None for c in customers)
    assert [sent(sim, i) for i in range(len(sim.requests))] == [{"only_archived": "false", "limit": "100"}]


def test_customers_including_archived(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    customers = list(hook.iter_customers(include_archived=True))

    assert [c.id for c in customers] == sim.active_customer_ids + sim.archived_customer_ids
    assert all(c.archived_at for c in customers[len(sim.active_customer_ids) :])
    assert [sent(sim, i)["only_archived"] for i in range(len(sim.requests))] == ["false", "true"]


def test_customers_filtered_by_id(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    wanted = [sim.active_customer_ids[3], sim.active_customer_ids[1].upper(), sim.archived_customer_ids[0]]

    customers = list(hook.iter_customers(include_archived=True, customer_ids=wanted))

    assert sorted(c.id for c in customers) == sorted(cid.lower() for cid in wanted)
    assert {sent(sim, i)["customer_ids"] for i in range(len(sim.requests))} == {
        ",".join(cid.lower() for cid in wanted)
    }


def test_more_than_100_customer_ids_go_in_batches(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    sim.set_customer_count(150)

    customers = list(hook.iter_customers(customer_ids=sim.active_customer_ids))

    assert sorted(c.id for c in customers) == sorted(sim.active_customer_ids)
    assert [len(sent(sim, i)["customer_ids"].split(",")) for i in range(len(sim.requests))] == [100, 50]


def test_no_customer_ids_means_no_customers(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    assert list(hook.iter_customers(customer_ids=[])) == []
    assert sim.requests == []


def test_costs_for_a_window(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    cid = customer_id(sim)

    windows = list(hook.iter_costs(cid, "2024-02-26", "2024-03-03"))

    assert all(isinstance(window, CostWindow) for window in windows)
    days = [dt.date(2024, 2, 26) + dt.timedelta(days=n) for n in range(6)]
    assert [window.model_dump(mode="json") for window in windows] == [sim.costs_for(cid, d) for d in days]
    assert [window.window_start for window in windows] == [f"{d}T00:00:00Z" for d in days]
    assert sim.requests[0].path == f"/v1/customers/{cid}/costs"
    assert sent(sim) == {
        "starting_on": "2024-02-26T00:00:00Z",
        "ending_before": "2024-03-03T00:00:00Z",
        "limit": "100",
    }


@pytest.mark.parametrize(
    ("starting_on", "ending_before"),
    [
        ("2024-02-01T00:00:00Z", "2024-02-03T00:00:00Z"),
        ("2024-02-01", "2024-02-03"),
        ("2024-02-01T01:00:00+01:00", "2024-02-02T19:00:00-05:00"),
        ("2024-02-01 00:00:00+00:00", "2024-02-03 00:00:00+00:00"),
        (dt.date(2024, 2, 1), dt.date(2024, 2, 3)),
        (dt.datetime(2024, 2, 1), dt.datetime(2024, 2, 3)),  # naive: read as UTC
        (
            dt.datetime(2024, 2, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            dt.datetime(2024, 2, 3, tzinfo=UTC),
        ),
        (pendulum.datetime(2024, 2, 1, tz="UTC"), pendulum.datetime(2024, 2, 2, 19, tz="America/New_York")),
        (pendulum.naive(2024, 2, 1), pendulum.naive(2024, 2, 3)),
    ],
)
def test_every_kind_of_date_means_the_same_utc_instant(
    sim: MetronomeSimulator, hook: MetronomeHook, starting_on: Any, ending_before: Any
) -> None:
    windows = list(hook.iter_costs(customer_id(sim), starting_on, ending_before))

    assert len(windows) == 2
    assert (sent(sim)["starting_on"], sent(sim)["ending_before"]) == (
        "2024-02-01T00:00:00Z",
        "2024-02-03T00:00:00Z",
    )


def test_breakdowns_daily(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    cid = customer_id(sim)

    breakdowns = list(hook.iter_invoice_breakdowns(cid, "2024-02-20", "2024-03-05"))

    assert all(isinstance(item, InvoiceBreakdown) for item in breakdowns)
    expected = sim.breakdowns_for(cid, dt.date(2024, 2, 20), dt.date(2024, 3, 5))
    assert [item.model_dump(mode="json") for item in breakdowns] == expected
    assert sim.requests[0].path == f"/v1/customers/{cid}/invoices/breakdowns"
    assert sent(sim) == {
        "starting_on": "2024-02-20T00:00:00Z",
        "ending_before": "2024-03-05T00:00:00Z",
        "window_size": "day",
        "limit": "100",
    }


def test_breakdowns_hourly(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    cid = customer_id(sim)
    start, end = dt.datetime(2024, 2, 5, 6, tzinfo=UTC), dt.datetime(2024, 2, 5, 18, tzinfo=UTC)

    breakdowns = list(hook.iter_invoice_breakdowns(cid, start, end, window_size="hour"))

    assert [b.model_dump(mode="json") for b in breakdowns] == sim.breakdowns_for(
        cid, start, end, window_size="hour"
    )
    starts = {b.breakdown_start_timestamp for b in breakdowns}
    assert starts <= {f"2024-02-05T{hour:02d}:00:00Z" for hour in range(6, 18)}
    assert len(starts) > 1
    assert sent(sim)["window_size"] == "hour"


def test_breakdowns_filters_and_sort(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    cid = customer_id(sim)
    window = ("2024-02-25", "2024-03-08")
    everything = list(hook.iter_invoice_breakdowns(cid, *window))
    assert {b.status for b in everything} == {"DRAFT", "FINALIZED"}
    assert any(item.get("quantity") == 0 for b in everything for item in b.line_items)
    assert len({b.credit_type["id"] for b in everything}) > 1

    only_usd = list(hook.iter_invoice_breakdowns(cid, *window, credit_type_id=USD))
    assert sent(sim)["credit_type_id"] == USD
    assert only_usd == [b for b in everything if b.credit_type["id"] == USD]

    for status in ("DRAFT", "FINALIZED"):
        filtered = list(hook.iter_invoice_breakdowns(cid, *window, status=[status]))
        assert sent(sim)["status"] == status
        assert filtered == [b for b in everything if b.status == status]

    no_zeros = list(hook.iter_invoice_breakdowns(cid, *window, skip_zero_qty_line_items=True))
    assert sent(sim)["skip_zero_qty_line_items"] == "true"
    assert no_zeros
    assert all(item.get("quantity") != 0 for b in no_zeros for item in b.line_items)

    newest_first = list(hook.iter_invoice_breakdowns(cid, *window, sort="date_desc"))
    assert sent(sim)["sort"] == "date_desc"
    starts = [b.breakdown_start_timestamp for b in newest_first]
    assert starts == sorted(starts, reverse=True)
    assert sorted(b.id for b in newest_first) == sorted(b.id for b in everything)

    list(hook.iter_invoice_breakdowns(cid, *window, sort="date_asc", skip_zero_qty_line_items=False))
    assert (sent(sim)["sort"], sent(sim)["skip_zero_qty_line_items"]) == ("date_asc", "false")


@pytest.mark.parametrize("source", SOURCES)
def test_iter_source_dispatches(sim: MetronomeSimulator, hook: MetronomeHook, source: str) -> None:
    cid = customer_id(sim)

    records = list(hook.iter_source(source, cid, dt.date(2024, 2, 1), dt.date(2024, 2, 4)))  # type: ignore[arg-type]

    if source == "costs":
        assert [r.model_dump(mode="json") for r in records] == [
            sim.costs_for(cid, dt.date(2024, 2, day)) for day in (1, 2, 3)
        ]
    else:
        assert [r.model_dump(mode="json") for r in records] == sim.breakdowns_for(
            cid, dt.date(2024, 2, 1), dt.date(2024, 2, 4)
        )
        assert sent(sim)["window_size"] == "day"


# -- pagination -----------------------------------------------------------------------------------


def test_several_pages_resend_the_query_with_the_cursor(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    cid = customer_id(sim)

    windows = list(hook.iter_costs(cid, "2024-01-01", "2024-03-01", page_size=7))

    assert len(windows) == 60
    assert [w.start_timestamp for w in windows] == sorted({w.start_timestamp for w in windows})
    first, *others = [record.query for record in sim.requests]
    assert len(others) == 8  # ceil(60 / 7) pages
    assert "next_page" not in first
    assert [{k: v for k, v in query.items() if k != "next_page"} for query in others] == [first] * 8
    assert len({query["next_page"][0] for query in others}) == 8


def test_several_pages_of_filtered_customers_and_hourly_breakdowns(
    sim: MetronomeSimulator, hook: MetronomeHook
) -> None:
    wanted = sim.active_customer_ids[2:13]
    assert [c.id for c in hook.iter_customers(customer_ids=wanted, page_size=3)] == wanted
    assert len(sim.requests) == 4

    sim.clear_requests()
    cid = customer_id(sim)
    hourly = list(
        hook.iter_invoice_breakdowns(cid, "2024-02-05", "2024-02-06", window_size="hour", page_size=5)
    )
    assert [b.model_dump(mode="json") for b in hourly] == sim.breakdowns_for(
        cid, dt.date(2024, 2, 5), dt.date(2024, 2, 6), window_size="hour"
    )
    assert len(sim.requests) == -(-len(hourly) // 5)


def test_an_empty_page_with_a_cursor_is_followed(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    cid = customer_id(sim)
    sim.inject(Fault.empty_page(), path="/costs")

    windows = list(hook.iter_costs(cid, "2024-02-01", "2024-02-11", page_size=4))

    assert [w.model_dump(mode="json") for w in windows] == [
        sim.costs_for(cid, dt.date(2024, 2, day)) for day in range(1, 11)
    ]
    assert len(sim.requests) == 1 + 3


def test_a_repeating_cursor_stops_with_a_clear_error(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    sim.inject(Fault.repeating_cursor(), path="/v1/customers", times=None)
    received: list[Customer] = []

    with pytest.raises(MetronomeResponseError, match="next_page cursor repeated after 2 pages") as err:
        received.extend(hook.iter_customers(page_size=5))

    # The second page came back with the cursor it was asked with: its items are not handed out.
    assert [c.id for c in received] == sim.active_customer_ids[:5]
    assert len(sim.requests) == 2
    assert (err.value.method, err.value.path, err.value.retryable) == ("GET", "/v1/customers", False)


def _page(*items: dict[str, Any], cursor: str | None = None) -> dict[str, Any]:
    return {"data": list(items), "next_page": cursor}


@pytest.mark.parametrize(
    "last_page", [{"next_page": None}, {}, {"next_page": ""}], ids=["null", "missing", "empty"]
)
def test_pagination_stops_on_null_missing_or_empty_cursor(
    sim: MetronomeSimulator,
    connect: Callable[..., MetronomeHook],
    scripted: Scripted,
    last_page: dict[str, Any],
) -> None:
    first, second = sim.customers[:2]
    url, seen = scripted([_page(first, cursor="page-2"), {"data": [second], **last_page}])

    customers = list(connect(url).iter_customers())

    assert [c.model_dump(mode="json") for c in customers] == [first, second]
    assert [request["path"] for request in seen] == [
        "/v1/customers?only_archived=false&limit=100",
        "/v1/customers?only_archived=false&limit=100&next_page=page-2",
    ]


def test_empty_pages_in_the_middle_are_followed(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook], scripted: Scripted
) -> None:
    first, second = sim.customers[:2]
    url, seen = scripted([_page(first, cursor="a"), _page(cursor="b"), _page(cursor="c"), _page(second)])

    assert [c.id for c in connect(url).iter_customers()] == [first["id"], second["id"]]
    assert len(seen) == 4


def test_an_endless_chain_of_empty_pages_is_stopped(
    connect: Callable[..., MetronomeHook], scripted: Scripted
) -> None:
    url, seen = scripted([_page(cursor=f"c{n}") for n in range(60)])

    with pytest.raises(MetronomeResponseError, match="50 empty pages in a row, each with a new cursor"):
        list(connect(url).iter_customers())
    assert len(seen) == 50


# -- models ---------------------------------------------------------------------------------------


def test_customers_round_trip_to_the_api_json(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    raw = raw_items(sim, "/v1/customers", only_archived="true") + raw_items(sim, "/v1/customers")

    dumped = [c.model_dump(mode="json") for c in hook.iter_customers(include_archived=True)]

    assert sorted(map(canonical, dumped)) == sorted(map(canonical, raw))
    assert any(c["archived_at"] is None for c in raw)  # a null stays a null


def test_costs_round_trip_keeping_ints_and_absent_fields(
    sim: MetronomeSimulator, hook: MetronomeHook
) -> None:
    cid = customer_id(sim)
    params = {"starting_on": "2024-01-01T00:00:00Z", "ending_before": "2024-03-01T00:00:00Z"}
    raw = raw_items(sim, f"/v1/customers/{cid}/costs", **params)

    dumped = [w.model_dump(mode="json") for w in hook.iter_costs(cid, **params)]

    assert list(map(canonical, dumped)) == list(map(canonical, raw))
    # The data has what could go wrong: integer costs, credit types without a breakdown, ungrouped lines.
    credit_types = [ct for window in raw for ct in window["credit_types"].values()]
    assert any(isinstance(ct["cost"], int) for ct in credit_types)
    assert any(isinstance(ct["cost"], float) for ct in credit_types)
    assert any("line_item_breakdown" not in ct for ct in credit_types)
    lines = [line for ct in credit_types for line in ct.get("line_item_breakdown", [])]
    assert any("group_key" not in line for line in lines)
    assert any("group_key" in line and line["group_value"] is None for line in lines)


def test_breakdowns_round_trip_with_fields_the_model_does_not_declare(
    sim: MetronomeSimulator, hook: MetronomeHook
) -> None:
    cid = customer_id(sim)
    params = {"starting_on": "2024-02-20T00:00:00Z", "ending_before": "2024-03-05T00:00:00Z"}
    raw = raw_items(sim, f"/v1/customers/{cid}/invoices/breakdowns", **params)

    breakdowns = list(hook.iter_invoice_breakdowns(cid, **params))

    assert [canonical(b.model_dump(mode="json")) for b in breakdowns] == list(map(canonical, raw))
    # The line items' ending_before (the invoice's end) is a field no model declares: kept as sent.
    assert "ending_before" not in InvoiceLineItem.__annotations__
    assert all("ending_before" in line for b in breakdowns for line in b.line_items)
    assert json.loads(breakdowns[0].model_dump_json()) == raw[0]
    # Whole amounts keep their integer spelling: 0 stays 0, never 0.0.
    assert any(str(b.total).isdigit() for b in breakdowns)


def test_unknown_fields_anywhere_are_kept() -> None:
    item = {
        "start_timestamp": "2024-01-01T00:00:00Z",
        "end_timestamp": "2024-01-02T00:00:00Z",
        "credit_types": {
            USD: {
                "name": "USD (cents)",
                "cost": 5,
                "new": [1, 2.5],
                "line_item_breakdown": [{"name": "x", "cost": 0, "tier": {"n": 1}}],
            }
        },
        "currency_hint": None,
    }

    window = CostWindow.model_validate_json(json.dumps(item))

    assert canonical(window.model_dump(mode="json")) == canonical(item)


# -- bad input ------------------------------------------------------------------------------------


BadCall = Callable[[MetronomeHook, str], Any]
BAD_INPUT: dict[str, tuple[BadCall, str]] = {
    "customer id not a uuid": (
        lambda h, cid: h.iter_costs("cust_00001", "2024-01-01", "2024-01-02"),
        "customer_id='cust_00001' is not a Metronome customer id; it must be a UUID",
    ),
    "empty customer id": (
        lambda h, cid: h.iter_invoice_breakdowns("", "2024-01-01", "2024-01-02"),
        "customer_id='' is not a Metronome customer id",
    ),
    "customer_ids filter": (
        lambda h, cid: h.iter_customers(customer_ids=[cid, "acme"]),
        "customer_id='acme' is not a Metronome customer id",
    ),
    "start after end": (
        lambda h, cid: h.iter_costs(cid, "2024-01-02", "2024-01-01"),
        "starting_on (2024-01-02T00:00:00Z) must be before ending_before (2024-01-01T00:00:00Z)",
    ),
    "empty range": (
        lambda h, cid: h.iter_invoice_breakdowns(cid, "2024-01-01", dt.datetime(2024, 1, 1)),
        "must be before ending_before",
    ),
    "words for a date": (
        lambda h, cid: h.iter_costs(cid, "yesterday", "2024-01-01"),
        "starting_on='yesterday' is not a valid RFC 3339 timestamp or date; use e.g.",
    ),
    "impossible date": (
        lambda h, cid: h.iter_costs(cid, "2024-01-01", "2024-02-30"),
        "ending_before='2024-02-30' is not a valid RFC 3339 timestamp or date",
    ),
    "bare number": (
        lambda h, cid: h.iter_costs(cid, "1", "2024-02-01"),
        "starting_on='1' is not a valid RFC 3339 timestamp or date",
    ),
    "time without date": (
        lambda h, cid: h.iter_invoice_breakdowns(cid, "2024-02-01", "12:00"),
        "ending_before='12:00' is not a valid RFC 3339 timestamp or date",
    ),
    "page_size 0": (
        lambda h, cid: h.iter_costs(cid, "2024-01-01", "2024-01-02", page_size=0),
        "page_size=0 must be an integer from 1 to 100",
    ),
    "page_size 101": (
        lambda h, cid: h.iter_invoice_breakdowns(cid, "2024-01-01", "2024-01-02", page_size=101),
        "page_size=101 must be an integer from 1 to 100",
    ),
    "page_size bool": (lambda h, cid: h.iter_customers(page_size=True), "page_size=True must be an integer"),
    "page_size str": (lambda h, cid: h.iter_customers(page_size="10"), "page_size='10' must be an integer"),
    "page_size of paginate": (
        lambda h, cid: h.paginate("/v1/customers", {}, Customer, page_size=-1),
        "page_size=-1 must be an integer",
    ),
    "window_size": (
        lambda h, cid: h.iter_invoice_breakdowns(cid, "2024-01-01", "2024-01-02", window_size="week"),
        "window_size='week' must be 'day' or 'hour'",
    ),
    "sort": (
        lambda h, cid: h.iter_invoice_breakdowns(cid, "2024-01-01", "2024-01-02", sort="newest"),
        "sort='newest' must be 'date_asc' or 'date_desc'",
    ),
    "source": (
        lambda h, cid: h.iter_source("usage", cid, "2024-01-01", "2024-01-02"),
        "source='usage' must be one of 'costs', 'invoice_breakdowns'",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_fails_before_any_request(sim: MetronomeSimulator, hook: MetronomeHook, case: str) -> None:
    call, message = BAD_INPUT[case]

    with pytest.raises(ValueError, match=re.escape(message)):
        list(call(hook, customer_id(sim)))

    assert sim.requests == []


def test_customer_ids_are_validated_when_called_not_when_iterated(
    sim: MetronomeSimulator, hook: MetronomeHook
) -> None:
    with pytest.raises(ValueError, match="must be a UUID"):
        hook.iter_customers(customer_ids=["nope"])
    with pytest.raises(ValueError, match="must be before"):
        hook.iter_invoice_breakdowns(customer_id(sim), "2024-01-02", "2024-01-01")
    assert sim.requests == []


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_customer_is_a_not_found_error(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    unknown = str(uuid.uuid4())

    with pytest.raises(MetronomeNotFoundError) as err:
        list(hook.iter_costs(unknown, "2024-02-01", "2024-02-02"))

    error = err.value
    assert isinstance(error, AirflowException)
    assert (error.status_code, error.method, error.path) == (404, "GET", f"/v1/customers/{unknown}/costs")
    assert error.message == "Customer not found"
    assert (
        str(error)
        == f"Metronome API error (HTTP 404) on GET /v1/customers/{unknown}/costs: Customer not found"
    )
    assert len(sim.requests) == 1


def test_unique_metric_customer_costs_is_a_client_error(sim: MetronomeSimulator, hook: MetronomeHook) -> None:
    cid = sim.unique_metric_customer_ids[0]

    with pytest.raises(MetronomeClientError, match=r"HTTP 400.*UNIQUE-type billable metric") as err:
        list(hook.iter_costs(cid, "2024-02-01", "2024-02-02"))

    assert not err.value.retryable
    assert len(sim.requests) == 1
    # Its invoice breakdowns are served.
    assert list(hook.iter_invoice_breakdowns(cid, "2024-02-01", "2024-02-02"))


def test_a_cut_off_body_is_a_failed_attempt_retried_like_a_5xx(
    sim: MetronomeSimulator, hook: MetronomeHook
) -> None:
    cid = customer_id(sim)
    sim.inject(Fault.malformed_json())

    windows = list(hook.iter_costs(cid, "2024-02-01", "2024-02-02"))

    assert [w.model_dump(mode="json") for w in windows] == [sim.costs_for(cid, dt.date(2024, 2, 1))]
    assert len(sim.requests) == 2


def test_a_body_that_stays_cut_off_fails_as_transient_after_the_retries(
    sim: MetronomeSimulator, hook: MetronomeHook
) -> None:
    sim.inject(Fault.malformed_json(), times=None)

    with pytest.raises(
        MetronomeTransientError,
        match=r"\(HTTP 200\) on GET .*/costs: no usable answer after 3 attempt\(s\): HTTP 200 with a body "
        r"that is not JSON \(application/json: '\{\"data\"",
    ) as err:
        list(hook.iter_costs(customer_id(sim), "2024-02-01", "2024-02-02"))

    assert err.value.retryable
    assert len(sim.requests) == 3


def test_an_item_missing_a_required_field_names_it(
    sim: MetronomeSimulator, connect: Callable[..., MetronomeHook], scripted: Scripted
) -> None:
    broken = {key: value for key, value in sim.customers[0].items() if key != "name"}
    url, seen = scripted([_page(broken)])

    with pytest.raises(
        MetronomeResponseError, match=r"not the documented JSON \(data\.0\.name: Field required\)"
    ):
        list(connect(url).iter_customers())
    assert len(seen) == 1


# -- secrecy and logging --------------------------------------------------------------------------


class Logs:
    """What was logged: stdlib records, and on Airflow 3 the structlog events hooks emit."""

    def __init__(self, caplog: pytest.LogCaptureFixture, events: list[dict[str, Any]]) -> None:
        self._caplog = caplog
        self._events = events

    def messages(self) -> list[tuple[str, str]]:
        """(LEVEL, message) pairs, in the order each source recorded them."""
        stdlib = [(record.levelname, record.getMessage()) for record in self._caplog.records]
        return stdlib + [(str(event["log_level"]).upper(), str(event["event"])) for event in self._events]

    def text(self) -> str:
        """Everything, formatted exceptions and structured fields included."""
        return self._caplog.text + "\n".join(map(repr, self._events))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    """Capture everything logged at DEBUG and above while the test runs, on both Airflow lines."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="airflow.task")
    if not AIRFLOW_V3:
        yield Logs(caplog, [])
        return
    # Airflow 3 hooks log through structlog, which stdlib capture does not see.
    import structlog
    from structlog.testing import LogCapture

    saved = structlog.get_config()
    capture = LogCapture()
    structlog.configure(
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    try:
        yield Logs(caplog, capture.entries)
    finally:
        structlog.configure(**saved)


def test_token_never_shows_in_logs_errors_or_reprs(logs: Logs) -> None:
    token = f"secret-{uuid.uuid4().hex}"
    with MetronomeSimulator(token=token, now=NOW) as sim, pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("AIRFLOW_CONN_METRONOME_DEFAULT", connection_json(sim.url, token))
        hook = MetronomeHook()
        assert redact(token) == token  # unknown to the secrets masker until the connection is read

        assert list(hook.iter_customers())  # a success
        sim.inject(Fault.status(503, headers={"retry-after-ms": "1"}))
        assert list(hook.iter_customers())  # a retry
        sim.inject(Fault.status(403, message=f"token {token} may not read customers"))
        with pytest.raises(MetronomeAuthenticationError) as err:  # a failure that echoes the token
            list(hook.iter_customers())

    assert redact(token) != token
    assert (
        "WARNING",
        "Metronome GET /v1/customers failed (HTTP 503); retry 1 of 2 in 0.00 s",
    ) in logs.messages()
    texts = {
        "logs": logs.text(),
        "str": str(err.value),
        "repr": repr(err.value),
        "message": err.value.message,
        "traceback": "".join(traceback.format_exception(err.value)),
        "hook": repr(hook),
        "settings": repr(hook.settings) + str(hook.settings),
    }
    assert {name: token in text for name, text in texts.items()} == dict.fromkeys(texts, False)
    assert str(err.value) == (
        "Metronome API error (HTTP 403) on GET /v1/customers: token *** may not read customers "
        "(check the API token in the Airflow connection's password field)"
    )


def test_each_request_and_each_iteration_is_logged_at_debug(hook: MetronomeHook, logs: Logs) -> None:
    list(hook.iter_customers(page_size=10))

    ours = [
        (level, text) for level, text in logs.messages() if "/v1/customers" in text and "HTTP/1.1" not in text
    ]
    assert [level for level, _ in ours] == ["DEBUG", "DEBUG", "DEBUG", "DEBUG"]
    assert all(
        re.fullmatch(r"GET /v1/customers -> 200 in \d+\.\d{3} s \(attempt 1\)", text) for _, text in ours[:3]
    )
    assert re.fullmatch(r"Read 25 Customer in 3 page\(s\) from /v1/customers in \d+\.\d\d s", ours[3][1])


class _EchoingProxy(BaseHTTPRequestHandler):
    """A gateway's HTML error page that echoes the request's headers, token included, past 190 characters."""

    def do_GET(self) -> None:
        authorization = self.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ")
        body = (
            "<html><body><h1>403 Forbidden</h1><p>"
            + "x" * 150
            + f"Authorization: {authorization}</p><p>key {token[:8]}...</p></body></html>"
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced."""


def test_no_piece_of_the_token_survives_an_echoing_error_page(
    connect: Callable[..., MetronomeHook], logs: Logs
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingProxy)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        hook = connect(f"http://127.0.0.1:{server.server_address[1]}", token=token)
        with pytest.raises(MetronomeAuthenticationError) as err:
            list(hook.iter_customers())
    finally:
        server.shutdown()
        server.server_close()

    texts = [str(err.value), err.value.message, "".join(traceback.format_exception(err.value)), logs.text()]
    pieces = {token[i : i + 6] for i in range(len(token) - 5)}
    assert [piece for piece in pieces for text in texts if piece in text] == []
    assert "403 Forbidden" in err.value.message
