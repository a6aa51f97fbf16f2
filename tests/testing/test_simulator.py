"""The Metronome simulator itself, driven with plain ``requests`` over real sockets.

The hook's tests lean on it, so it must be right: faithful to Metronome's documented pages, with
faults, a request log, a settable clock and concurrent connections that behave as described.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pendulum
import pytest
import requests

from airflow_provider_metronome.testing import DEFAULT_TOKEN, Fault, MetronomeSimulator
from tests.support.simulator import standalone_simulator

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 3, 10, 12, tzinfo=UTC)
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
USD = "2714e483-4ff1-48e4-9e25-ac732e8f24f2"
FEBRUARY = {"starting_on": "2024-02-01T00:00:00Z", "ending_before": "2024-03-01T00:00:00Z"}

# The 200 answer of GET /v1/customers/{customer_id}/costs, transcribed from Metronome's OpenAPI
# (schemas Costs, CostsPerCreditType, LineItemBreakdown; ``nullable`` spelled the JSON-schema way).
# Closed to unknown keys, so the simulator cannot drift from the documented shape unnoticed.
COSTS_PAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data", "next_page"],
    "additionalProperties": False,
    "properties": {
        "next_page": {"type": ["string", "null"]},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["start_timestamp", "end_timestamp", "credit_types"],
                "additionalProperties": False,
                "properties": {
                    "start_timestamp": {"type": "string", "format": "date-time"},
                    "end_timestamp": {"type": "string", "format": "date-time"},
                    "credit_types": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "cost": {"type": "number"},
                                "line_item_breakdown": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["name", "cost"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "name": {"type": "string"},
                                            "cost": {"type": "number"},
                                            "group_key": {"type": "string"},
                                            "group_value": {"type": ["string", "null"]},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
ERROR_SCHEMA = {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}
# CustomerDetail in Metronome's Python SDK reference.
CUSTOMER_KEYS = {
    "id",
    "external_id",
    "ingest_aliases",
    "name",
    "custom_fields",
    "customer_config",
    "created_at",
    "updated_at",
    "archived_at",
    "current_billable_status",
}


@pytest.fixture
def sim() -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(now=NOW) as simulator:
        yield simulator


def get(
    sim: MetronomeSimulator, path: str, headers: dict[str, str] | None = None, **params: Any
) -> requests.Response:
    return requests.get(
        sim.url + path, params=params, headers=AUTH if headers is None else headers, timeout=10
    )


def all_items(sim: MetronomeSimulator, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every item of a list endpoint, and how many pages it took."""
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        page = get(sim, path, **params).json()
        pages += 1
        items.extend(page["data"])
        if page["next_page"] is None:
            return items, pages
        params = {**params, "next_page": page["next_page"]}


def costs_path(customer_id: str) -> str:
    return f"/v1/customers/{customer_id}/costs"


def breakdowns_path(customer_id: str) -> str:
    return f"/v1/customers/{customer_id}/invoices/breakdowns"


def plain_customer(sim: MetronomeSimulator) -> str:
    return sim.costs_customer_ids[0]


def cents(amount: float) -> int:
    return round(amount * 100)


# -- a real HTTP server ---------------------------------------------------------------------------


def test_serves_http_with_keep_alive_and_stops() -> None:
    simulator = MetronomeSimulator()
    with pytest.raises(RuntimeError, match="not running"):
        _ = simulator.url
    with simulator:
        assert simulator.url == f"http://127.0.0.1:{simulator.port}"
        with requests.Session() as session:
            for _ in range(3):
                assert (
                    session.get(simulator.url + "/v1/customers", headers=AUTH, timeout=10).status_code == 200
                )
        assert len({record.connection_id for record in simulator.requests}) == 1
        with pytest.raises(RuntimeError, match="already running"):
            simulator.start()
        url = simulator.url

    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/v1/customers", headers=AUTH, timeout=2)
    simulator.stop()  # idempotent


def test_runs_standalone_from_the_command_line(tmp_path: Path) -> None:
    options = ["--now", "2024-03-10T12:00:00Z", "--customers", "3", "--archived-customers", "1"]
    with standalone_simulator(tmp_path, *options, "--unique-metric-customers", "0") as standalone:
        url = standalone.url
        customers = requests.get(url + "/v1/customers", headers=AUTH, timeout=10).json()["data"]
        assert len(customers) == 3
        archived = requests.get(url + "/v1/customers?only_archived=true", headers=AUTH, timeout=10).json()
        assert len(archived["data"]) == 1
        day = {"starting_on": "2024-03-01T00:00:00Z", "ending_before": "2024-03-02T00:00:00Z"}
        statuses = {
            requests.get(
                f"{url}/v1/customers/{c['id']}/costs", params=day, headers=AUTH, timeout=10
            ).status_code
            for c in customers
        }
        assert statuses == {200}  # no customer on a UNIQUE-metric plan
    assert standalone.lines[0].startswith(f"Metronome simulator listening on {url}")


# -- faithful to Metronome's documented pages -----------------------------------------------------


def test_costs_pages_match_the_documented_schema(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)
    next_page = None
    pages = 0
    while True:
        body = get(
            sim, costs_path(cid), limit=10, **FEBRUARY, **({"next_page": next_page} if next_page else {})
        ).json()
        jsonschema.validate(body, COSTS_PAGE_SCHEMA)
        pages += 1
        next_page = body["next_page"]
        if next_page is None:
            break
    assert pages == 3


def test_costs_are_daily_windows_whose_lines_add_up(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)

    windows, _ = all_items(sim, costs_path(cid), **FEBRUARY)

    assert [(w["start_timestamp"], w["end_timestamp"]) for w in windows] == [
        (
            f"2024-02-{day:02d}T00:00:00Z",
            (dt.date(2024, 2, day) + dt.timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z"),
        )
        for day in range(1, 30)
    ]
    credit_types = [ct for w in windows for ct in w["credit_types"].values()]
    assert {ct["name"] for ct in credit_types} >= {"USD (cents)"}
    assert all(w["credit_types"][USD]["name"] == "USD (cents)" for w in windows if USD in w["credit_types"])
    assert any(not w["credit_types"] for w in windows)  # days without usage are listed, empty
    for ct in credit_types:
        if "line_item_breakdown" in ct:
            assert cents(ct["cost"]) == sum(cents(line["cost"]) for line in ct["line_item_breakdown"])
    assert windows == [sim.costs_for(cid, dt.date(2024, 2, day)) for day in range(1, 30)]


def test_customers_have_the_sdk_documented_fields(sim: MetronomeSimulator) -> None:
    active, _ = all_items(sim, "/v1/customers")
    archived, _ = all_items(sim, "/v1/customers", only_archived="true")

    assert [c["id"] for c in active] == sim.active_customer_ids
    assert [c["id"] for c in archived] == sim.archived_customer_ids
    for customer in active + archived:
        assert set(customer) == CUSTOMER_KEYS
        assert str(uuid.UUID(customer["id"])) == customer["id"]
        assert customer["external_id"] in customer["ingest_aliases"]
        assert customer["current_billable_status"]["value"] in ("billable", "unbillable")
    assert all(c["archived_at"] is None for c in active)
    assert all(c["archived_at"] for c in archived)


def test_customers_filters(sim: MetronomeSimulator) -> None:
    wanted = sim.active_customer_ids[:3]
    by_list, _ = all_items(sim, "/v1/customers", customer_ids=",".join(wanted))
    by_repeat = get(sim, "/v1/customers", **{"customer_ids[]": wanted}).json()["data"]
    alias = sim.customers[0]["ingest_aliases"][0]
    by_alias = get(sim, "/v1/customers", ingest_alias=alias).json()["data"]

    assert [c["id"] for c in by_list] == [c["id"] for c in by_repeat] == wanted
    assert [c["ingest_aliases"] for c in by_alias] == [sim.customers[0]["ingest_aliases"]]


def test_breakdowns_are_invoices_per_window(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)

    invoices, _ = all_items(
        sim, breakdowns_path(cid), starting_on="2024-02-25T00:00:00Z", ending_before="2024-03-05T00:00:00Z"
    )

    assert invoices == sim.breakdowns_for(cid, dt.date(2024, 2, 25), dt.date(2024, 3, 5))
    for invoice in invoices:
        assert {"id", "credit_type", "customer_id", "line_items", "status", "total", "type"} <= set(invoice)
        assert invoice["customer_id"] == cid
        assert cents(invoice["total"]) == sum(cents(item["total"]) for item in invoice["line_items"])
        start = dt.datetime.fromisoformat(invoice["breakdown_start_timestamp"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(invoice["breakdown_end_timestamp"].replace("Z", "+00:00"))
        assert end - start == dt.timedelta(days=1)
        # February is finalized once March 1 is a day old; March is still a draft.
        assert invoice["status"] == ("FINALIZED" if start.month == 2 else "DRAFT")


def test_breakdowns_agree_with_costs_and_hours_add_up_to_days(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)
    day = {"starting_on": "2024-02-07T00:00:00Z", "ending_before": "2024-02-08T00:00:00Z"}

    costs, _ = all_items(sim, costs_path(cid), **day)
    daily, _ = all_items(sim, breakdowns_path(cid), **day)
    hourly, _ = all_items(sim, breakdowns_path(cid), window_size="hour", **day)

    from_costs = {ct_id: cents(ct["cost"]) for ct_id, ct in costs[0]["credit_types"].items()}
    from_daily = {invoice["credit_type"]["id"]: cents(invoice["total"]) for invoice in daily}
    from_hourly: dict[str, int] = defaultdict(int)
    for invoice in hourly:
        from_hourly[invoice["credit_type"]["id"]] += cents(invoice["total"])
    assert from_costs
    assert from_costs == from_daily == dict(from_hourly)
    assert len({invoice["breakdown_start_timestamp"] for invoice in hourly}) > 1


def test_breakdowns_options(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)
    window = {"starting_on": "2024-02-20T00:00:00Z", "ending_before": "2024-03-08T00:00:00Z"}
    everything, _ = all_items(sim, breakdowns_path(cid), **window)

    desc, _ = all_items(sim, breakdowns_path(cid), sort="date_desc", **window)
    starts = [invoice["breakdown_start_timestamp"] for invoice in desc]
    assert starts == sorted(starts, reverse=True)
    assert sorted(map(str, desc)) == sorted(map(str, everything))

    usd, _ = all_items(sim, breakdowns_path(cid), credit_type_id=USD, **window)
    assert usd == [invoice for invoice in everything if invoice["credit_type"]["id"] == USD]

    drafts, _ = all_items(sim, breakdowns_path(cid), status="draft", **window)
    assert drafts == [invoice for invoice in everything if invoice["status"] == "DRAFT"]
    assert drafts

    without_zeros, _ = all_items(sim, breakdowns_path(cid), skip_zero_qty_line_items="true", **window)
    assert any(item["quantity"] == 0 for invoice in everything for item in invoice["line_items"])
    assert all(item["quantity"] > 0 for invoice in without_zeros for item in invoice["line_items"])

    upper, _ = all_items(sim, breakdowns_path(cid), window_size="DAY", **window)  # the SDK's spelling
    assert upper == everything


def test_a_breakdowns_page_spans_at_most_35_days(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)

    page = get(
        sim,
        breakdowns_path(cid),
        limit=100,
        starting_on="2023-11-01T00:00:00Z",
        ending_before="2024-03-01T00:00:00Z",
    ).json()

    starts = {invoice["breakdown_start_timestamp"] for invoice in page["data"]}
    assert len(page["data"]) < 100
    assert max(starts) < "2023-12-06"
    assert page["next_page"] is not None


def test_pagination_and_default_page_size() -> None:
    with MetronomeSimulator(customers=30, default_page_size=25) as sim:
        first = get(sim, "/v1/customers").json()
        assert len(first["data"]) == 25
        rest = get(sim, "/v1/customers", next_page=first["next_page"], limit=100).json()  # limit may change
        assert [c["id"] for c in first["data"] + rest["data"]] == sim.active_customer_ids
        assert rest["next_page"] is None

        items, pages = all_items(sim, "/v1/customers", limit=7)
        assert (len(items), pages) == (30, math.ceil(30 / 7))


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/v1/customers", {"limit": "0"}, 400, "limit must be an integer between 1 and 100, got '0'"),
        ("/v1/customers", {"limit": "101"}, 400, "limit must be an integer between 1 and 100"),
        ("/v1/customers", {"next_page": "garbage"}, 400, "next_page is not a valid cursor"),
        ("/v1/customers", {"customer_ids": "acme"}, 400, "customer_ids must be a UUID, got 'acme'"),
        ("/v1/customers", {"only_archived": "maybe"}, 400, "only_archived must be true or false"),
        ("COSTS", {"ending_before": "2024-02-01T00:00:00Z"}, 400, "starting_on is required"),
        (
            "COSTS",
            {**FEBRUARY, "starting_on": "2024-02-01"},
            400,
            "starting_on must be an RFC 3339 timestamp",
        ),
        (
            "COSTS",
            {"starting_on": "2024-03-01T00:00:00Z", "ending_before": "2024-02-01T00:00:00Z"},
            400,
            "starting_on must be before ending_before",
        ),
        (
            "UNIQUE",
            FEBRUARY,
            400,
            "Costs are not supported for customers whose plan includes a UNIQUE-type billable metric",
        ),
        ("/v1/customers/not-a-uuid/costs", FEBRUARY, 400, "customer_id must be a UUID"),
        (f"/v1/customers/{uuid.UUID(int=7)}/costs", FEBRUARY, 404, "Customer not found"),
        ("BREAKDOWNS", {**FEBRUARY, "window_size": "week"}, 400, "window_size must be one of day, hour"),
        ("BREAKDOWNS", {**FEBRUARY, "status": "PAID"}, 400, "status must be DRAFT or FINALIZED"),
        ("/v1/contracts", {}, 404, "Not found"),
    ],
)
def test_errors_are_json_with_a_message(
    sim: MetronomeSimulator, path: str, params: dict[str, str], status: int, message: str
) -> None:
    path = {
        "COSTS": costs_path(plain_customer(sim)),
        "UNIQUE": costs_path(sim.unique_metric_customer_ids[0]),
        "BREAKDOWNS": breakdowns_path(plain_customer(sim)),
    }.get(path, path)

    response = get(sim, path, **params)

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    jsonschema.validate(response.json(), ERROR_SCHEMA)
    assert response.json()["message"].startswith(message)


def test_a_cursor_only_fits_its_own_query(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)
    first = get(sim, costs_path(cid), limit=5, **FEBRUARY).json()

    changed = get(
        sim,
        costs_path(cid),
        limit=5,
        next_page=first["next_page"],
        starting_on="2024-02-02T00:00:00Z",
        ending_before=FEBRUARY["ending_before"],
    )

    assert changed.status_code == 400
    assert changed.json() == {"message": "next_page cursor does not match the query"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": DEFAULT_TOKEN}])
def test_requests_without_the_token_are_refused(sim: MetronomeSimulator, headers: dict[str, str]) -> None:
    response = get(sim, "/v1/customers", headers=headers)

    assert (response.status_code, response.json()) == (401, {"message": "Unauthorized"})
    assert [record.authorized for record in sim.requests] == [False]


def test_other_methods_are_refused(sim: MetronomeSimulator) -> None:
    response = requests.post(sim.url + "/v1/customers", json={"name": "x"}, headers=AUTH, timeout=10)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    assert sim.requests[0].method == "POST"


# -- faults ---------------------------------------------------------------------------------------


def test_status_fault_with_headers_and_message(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.status(429, headers={"Retry-After": "7"}, message="slow down"), times=2)

    answers = [get(sim, "/v1/customers") for _ in range(3)]

    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].json() == {"message": "slow down"}
    assert answers[0].headers["Retry-After"] == "7"
    assert Fault.status(503).message == "Service Unavailable"
    with pytest.raises(ValueError, match="not an HTTP status code"):
        Fault.status(700)
    with pytest.raises(ValueError, match="times must be at least 1"):
        sim.inject(Fault.drop(), times=0)


def test_faults_follow_their_path_until_cleared(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)
    sim.inject(Fault.status(500), path="/costs", times=None)

    assert get(sim, "/v1/customers").status_code == 200
    assert [get(sim, costs_path(cid), **FEBRUARY).status_code for _ in range(3)] == [500] * 3
    sim.clear_faults()
    assert get(sim, costs_path(cid), **FEBRUARY).status_code == 200


def test_transport_faults_come_before_authentication(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.status(503))

    assert get(sim, "/v1/customers", headers={}).status_code == 503
    assert get(sim, "/v1/customers", headers={}).status_code == 401


def test_drop_closes_without_an_answer(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.drop())

    with pytest.raises(requests.ConnectionError):
        get(sim, "/v1/customers")
    assert get(sim, "/v1/customers").status_code == 200
    assert len(sim.requests) == 2


def test_slow_answers_late(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.slow(2))

    with pytest.raises(requests.ReadTimeout):
        requests.get(sim.url + "/v1/customers", headers=AUTH, timeout=(5, 0.2))
    sim.inject(Fault.slow(0.1))
    assert get(sim, "/v1/customers").status_code == 200


def test_malformed_json(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.malformed_json())

    response = get(sim, "/v1/customers")

    assert response.status_code == 200
    with pytest.raises(ValueError, match=r"Expecting|Unterminated|Invalid"):
        response.json()


def test_empty_page_resumes_where_it_was_asked(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.empty_page(), path="/v1/customers")

    empty = get(sim, "/v1/customers", limit=10).json()
    resumed = get(sim, "/v1/customers", limit=10, next_page=empty["next_page"]).json()

    assert empty["data"] == []
    assert empty["next_page"]
    assert [c["id"] for c in resumed["data"]] == sim.active_customer_ids[:10]


def test_repeating_cursor_sends_the_request_cursor_back(sim: MetronomeSimulator) -> None:
    first = get(sim, "/v1/customers", limit=10).json()
    sim.inject(Fault.repeating_cursor())

    second = get(sim, "/v1/customers", limit=10, next_page=first["next_page"]).json()

    assert [c["id"] for c in second["data"]] == sim.active_customer_ids[10:20]
    assert second["next_page"] == first["next_page"]


def test_page_faults_wait_for_a_successful_page(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.empty_page())

    assert get(sim, costs_path(str(uuid.UUID(int=7))), **FEBRUARY).status_code == 404
    assert get(sim, "/v1/customers").json()["data"] == []


# -- the request log ------------------------------------------------------------------------------


def test_request_log(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)
    with requests.Session() as session:
        session.get(sim.url + "/v1/customers", params={"limit": 3}, headers=AUTH, timeout=10)
        session.get(sim.url + costs_path(cid), params=FEBRUARY, timeout=10)

        first, second = sim.requests
        assert (first.method, first.path, first.query, first.authorized) == (
            "GET",
            "/v1/customers",
            {"limit": ["3"]},
            True,
        )
        assert (second.path, second.authorized) == (costs_path(cid), False)
        assert second.query == {key: [value] for key, value in FEBRUARY.items()}
        assert first.started_at <= second.started_at
        assert first.connection_id == second.connection_id
        assert (first.in_flight, sim.max_in_flight) == (1, 1)
        assert sim.requests_for("/costs") == [second]
        assert DEFAULT_TOKEN not in repr(sim.requests)

        sim.clear_requests()
        assert sim.requests == []
        session.get(sim.url + "/v1/customers", headers=AUTH, timeout=10)
        assert [record.path for record in sim.requests] == ["/v1/customers"]
        assert sim.max_in_flight == 1


# -- the clock ------------------------------------------------------------------------------------


def test_a_day_appears_once_its_end_plus_the_delay_has_passed(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)
    day = {"starting_on": "2024-01-05T00:00:00Z", "ending_before": "2024-01-06T00:00:00Z"}
    ready = dt.datetime(2024, 1, 6, tzinfo=UTC) + sim.availability_delay

    sim.now = ready - dt.timedelta(seconds=1)
    assert get(sim, costs_path(cid), **day).json()["data"] == []
    assert get(sim, breakdowns_path(cid), **day).json()["data"] == []

    sim.now = ready
    assert get(sim, costs_path(cid), **day).json()["data"] == [sim.costs_for(cid, dt.date(2024, 1, 5))]

    sim.availability_delay = dt.timedelta(hours=30)
    assert get(sim, costs_path(cid), **day).json()["data"] == []


def test_invoices_finalize_a_day_after_their_month(sim: MetronomeSimulator) -> None:
    cid = plain_customer(sim)
    day = {"starting_on": "2024-01-30T00:00:00Z", "ending_before": "2024-02-01T00:00:00Z"}

    sim.now = dt.datetime(2024, 2, 1, 23, 59, tzinfo=UTC)
    assert {i["status"] for i in get(sim, breakdowns_path(cid), **day).json()["data"]} == {"DRAFT"}
    sim.now = dt.datetime(2024, 2, 2, tzinfo=UTC)
    assert {i["status"] for i in get(sim, breakdowns_path(cid), **day).json()["data"]} == {"FINALIZED"}


def test_clock_settings() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        MetronomeSimulator(now=dt.datetime(2024, 1, 1))
    simulator = MetronomeSimulator(now=dt.datetime(2024, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    assert simulator.now == dt.datetime(2024, 1, 1, tzinfo=UTC)
    simulator.now = None
    assert abs(simulator.now - dt.datetime.now(UTC)) < dt.timedelta(minutes=1)


def test_clock_accepts_pendulum_datetimes(sim: MetronomeSimulator) -> None:
    cid = sim.active_customer_ids[0]
    day = {"starting_on": "2024-01-05T00:00:00Z", "ending_before": "2024-01-06T00:00:00Z"}

    sim.now = pendulum.datetime(2024, 1, 6, 1, tz="Europe/Paris")  # 00:00 UTC: not yet available
    assert get(sim, f"/v1/customers/{cid}/costs", **day).json()["data"] == []
    sim.now = pendulum.datetime(2024, 1, 7, tz="UTC")
    assert len(get(sim, f"/v1/customers/{cid}/costs", **day).json()["data"]) == 1
    assert len(sim.breakdowns_for(cid, dt.date(2024, 1, 5), dt.date(2024, 1, 6))) >= 1


# -- data and concurrency -------------------------------------------------------------------------


def test_data_is_deterministic_per_seed() -> None:
    one, same, other = MetronomeSimulator(seed=1), MetronomeSimulator(seed=1), MetronomeSimulator(seed=2)
    cid = one.active_customer_ids[0]

    assert one.customers == same.customers
    assert one.costs_for(cid, dt.date(2024, 1, 5)) == same.costs_for(cid, dt.date(2024, 1, 5))
    assert set(one.active_customer_ids).isdisjoint(other.active_customer_ids)


def test_customer_counts(sim: MetronomeSimulator) -> None:
    assert (
        len(sim.active_customer_ids),
        len(sim.archived_customer_ids),
        len(sim.unique_metric_customer_ids),
    ) == (25, 3, 2)
    assert set(sim.unique_metric_customer_ids) <= set(sim.active_customer_ids)

    sim.set_customer_count(120)

    assert len(all_items(sim, "/v1/customers")[0]) == 120
    with pytest.raises(KeyError, match="unknown customer"):
        sim.costs_for(str(uuid.UUID(int=7)), dt.date(2024, 1, 1))


def test_concurrent_connections_are_served_at_once(sim: MetronomeSimulator) -> None:
    sim.latency = 0.1
    customers = sim.costs_customer_ids[:10]
    start = threading.Barrier(len(customers))
    answers: dict[str, list[dict[str, Any]]] = {}

    def fetch(cid: str) -> None:
        start.wait()
        answers[cid] = get(sim, costs_path(cid), limit=100, **FEBRUARY).json()["data"]

    threads = [threading.Thread(target=fetch, args=(cid,)) for cid in customers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sim.max_in_flight > 1
    assert len({record.connection_id for record in sim.requests}) == len(customers)
    for cid in customers:
        assert answers[cid] == [sim.costs_for(cid, dt.date(2024, 2, day)) for day in range(1, 30)]
