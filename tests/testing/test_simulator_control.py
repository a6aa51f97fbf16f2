"""The control endpoint (``/_simulator/``) and its command-line client, over real sockets.

Every action is shown to change what ``/v1`` answers; the client runs as a process of its own against a
simulator started from the command line.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_metronome.testing import DEFAULT_TOKEN, MetronomeSimulator
from airflow_provider_metronome.testing.__main__ import main
from airflow_provider_metronome.testing.arguments import FAULTS
from tests.support.simulator import standalone_simulator
from tests.testing.simulator_client import AUTH, breakdowns_path, costs_path

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 1, 10, 12, tzinfo=UTC)
DAY = dt.date(2024, 1, 9)
# The days around DAY, all of them served at NOW (two hours after each day's end).
WEEK: dict[str, Any] = {"starting_on": "2024-01-03T00:00:00Z", "ending_before": "2024-01-10T00:00:00Z"}


@pytest.fixture
def sim() -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(now=NOW, extra_tokens=["other-token"]) as simulator:
        yield simulator


def control(
    url: str, method: str, name: str, body: object = None, token: str = DEFAULT_TOKEN
) -> requests.Response:
    return requests.request(
        method,
        f"{url}/_simulator/{name}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def steer(sim: MetronomeSimulator, method: str, name: str, body: object = None) -> dict[str, Any]:
    """A control request that must succeed; its JSON answer."""
    response = control(sim.url, method, name, body)
    assert response.ok, response.text
    answer: dict[str, Any] = response.json()
    return answer


def v1(url: str, path: str, **params: Any) -> requests.Response:
    return requests.get(url + path, params=params, headers=AUTH, timeout=10)


def costs_days(url: str, customer_id: str) -> list[str]:
    response = v1(url, costs_path(customer_id), **WEEK)
    assert response.status_code == 200, response.text
    return [window["start_timestamp"][:10] for window in response.json()["data"]]


def breakdown_days(url: str, customer_id: str) -> list[str]:
    invoices = v1(url, breakdowns_path(customer_id), limit=100, **WEEK).json()["data"]
    return sorted({invoice["breakdown_start_timestamp"][:10] for invoice in invoices})


# -- withheld days --------------------------------------------------------------------------------------


def test_a_withheld_day_is_missing_for_every_customer_until_released(sim: MetronomeSimulator) -> None:
    first, second = sim.costs_customer_ids[:2]
    assert "2024-01-09" in costs_days(sim.url, first)

    state = steer(sim, "POST", "withhold", {"days": ["2024-01-09"]})
    late = sim.add_customer(created_at=dt.datetime(2023, 6, 1, tzinfo=UTC))

    assert state["withheld"] == {"all_customers": ["2024-01-09"], "customers": {}}
    for customer_id in (first, second, late):
        assert costs_days(sim.url, customer_id)[-1] == "2024-01-08"
        assert breakdown_days(sim.url, customer_id)[-1] == "2024-01-08"

    state = steer(sim, "POST", "release", {"days": ["2024-01-09"]})

    assert state["withheld"] == {"all_customers": [], "customers": {}}
    for customer_id in (first, second, late):
        assert costs_days(sim.url, customer_id)[-1] == "2024-01-09"
        assert breakdown_days(sim.url, customer_id)[-1] == "2024-01-09"


def test_a_day_withheld_from_one_customer_stays_for_the_others(sim: MetronomeSimulator) -> None:
    first, second = sim.costs_customer_ids[:2]

    state = steer(
        sim, "POST", "withhold", {"days": ["2024-01-05", "2024-01-06"], "customer_id": first.upper()}
    )

    assert state["withheld"]["customers"] == {first: ["2024-01-05", "2024-01-06"]}
    assert "2024-01-05" not in costs_days(sim.url, first)
    assert "2024-01-06" not in costs_days(sim.url, first)
    assert len(costs_days(sim.url, second)) == 7

    steer(sim, "POST", "release", {"days": ["2024-01-05"], "customer_id": first})
    assert costs_days(sim.url, first) == [
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
        "2024-01-07",
        "2024-01-08",
        "2024-01-09",
    ]

    state = steer(sim, "POST", "release", {"all": True, "customer_id": first})
    assert state["withheld"]["customers"] == {}
    assert len(costs_days(sim.url, first)) == 7


def test_today_and_yesterday_are_the_simulators_days(sim: MetronomeSimulator) -> None:
    state = steer(sim, "POST", "withhold", {"days": ["yesterday", "today"]})

    assert state["withheld"]["all_customers"] == ["2024-01-09", "2024-01-10"]
    assert sim.withheld_days.all_customers == (DAY, NOW.date())


def test_release_all_serves_every_withheld_day_again(sim: MetronomeSimulator) -> None:
    customer_id = sim.costs_customer_ids[0]
    steer(sim, "POST", "withhold", {"days": ["2024-01-08"]})
    steer(sim, "POST", "withhold", {"days": ["2024-01-07"], "customer_id": customer_id})

    state = steer(sim, "POST", "release", {"all": True})

    assert state["withheld"] == {"all_customers": [], "customers": {}}
    assert len(costs_days(sim.url, customer_id)) == 7


def test_one_customer_cannot_be_let_off_a_day_the_whole_account_lacks(sim: MetronomeSimulator) -> None:
    customer_id = sim.costs_customer_ids[0]
    steer(sim, "POST", "withhold", {"days": ["2024-01-09"]})

    refused = control(sim.url, "POST", "release", {"days": ["2024-01-09"], "customer_id": customer_id})

    assert refused.status_code == 400
    assert refused.json()["message"] == (
        "2024-01-09 is withheld from every customer: release it for every customer"
    )
    assert costs_days(sim.url, customer_id)[-1] == "2024-01-08"


# -- faults ---------------------------------------------------------------------------------------------


def test_an_injected_fault_answers_the_next_matching_requests(sim: MetronomeSimulator) -> None:
    customer_id = sim.costs_customer_ids[0]

    state = steer(sim, "POST", "faults", {"fault": "status=503:/costs:2"})

    assert state["faults"] == [
        {
            "kind": "status",
            "status_code": 503,
            "path": "/costs",
            "remaining": 2,
            "probability": None,
            "seed": 0,
        }
    ]
    assert v1(sim.url, "/v1/customers").status_code == 200
    assert v1(sim.url, costs_path(customer_id), **WEEK).status_code == 503
    assert steer(sim, "GET", "status")["faults"][0]["remaining"] == 1
    assert v1(sim.url, costs_path(customer_id), **WEEK).status_code == 503
    assert v1(sim.url, costs_path(customer_id), **WEEK).status_code == 200
    assert steer(sim, "GET", "status")["faults"] == []


@pytest.mark.parametrize("kind", ["status=429", *FAULTS])
def test_every_fault_the_command_line_knows_can_be_injected(sim: MetronomeSimulator, kind: str) -> None:
    state = steer(sim, "POST", "faults", {"fault": f"{kind}:/v1/:forever@0.5,7"})

    (injected,) = state["faults"]
    assert injected["kind"] == kind.partition("=")[0]
    assert injected["path"] == "/v1/"
    assert injected["remaining"] is None
    assert (injected["probability"], injected["seed"]) == (0.5, 7)


def test_clear_faults_lets_every_request_through_again(sim: MetronomeSimulator) -> None:
    steer(sim, "POST", "faults", {"fault": "status=500::forever"})
    assert v1(sim.url, "/v1/customers").status_code == 500

    state = steer(sim, "DELETE", "faults")

    assert state["faults"] == []
    assert v1(sim.url, "/v1/customers").status_code == 200


def test_the_control_endpoint_is_never_faulted_throttled_or_logged(sim: MetronomeSimulator) -> None:
    steer(sim, "POST", "faults", {"fault": "drop::forever"})
    steer(sim, "PUT", "rate-limit", {"rate": 0.001, "burst": 1})
    with pytest.raises(requests.ConnectionError):
        v1(sim.url, "/v1/customers")

    statuses = [control(sim.url, "GET", "status").status_code for _ in range(5)]

    assert statuses == [200] * 5
    assert [record.path for record in sim.requests] == ["/v1/customers"]
    steer(sim, "DELETE", "faults")
    assert v1(sim.url, "/v1/customers").status_code == 429


# -- clock, rate limit, customers ------------------------------------------------------------------------


def test_setting_the_clock_decides_which_days_are_served(sim: MetronomeSimulator) -> None:
    customer_id = sim.costs_customer_ids[0]

    state = steer(sim, "PUT", "clock", {"now": "2024-01-09T01:00:00Z"})

    assert state["now"] == "2024-01-09T01:00:00Z"
    assert costs_days(sim.url, customer_id)[-1] == "2024-01-07"
    steer(sim, "PUT", "clock", {"now": "2024-01-10T02:00:00+00:00"})
    assert costs_days(sim.url, customer_id)[-1] == "2024-01-09"

    state = steer(sim, "PUT", "clock", {"now": None})

    assert sim.now > NOW
    assert state["now"] != "2024-01-10T02:00:00Z"


def test_a_rate_limit_throttles_until_removed(sim: MetronomeSimulator) -> None:
    # One request per 1,000 seconds: the second is refused whatever the machine's speed.
    state = steer(sim, "PUT", "rate-limit", {"rate": 0.001, "burst": 1, "retry_after": "seconds"})

    assert state["rate_limit"] == {"rate": 0.001, "burst": 1.0, "retry_after": "seconds"}
    assert v1(sim.url, "/v1/customers").status_code == 200
    throttled = v1(sim.url, "/v1/customers")
    assert throttled.status_code == 429
    # About 1,000 seconds less the time since the first request: a count of whole seconds, not a time.
    assert 1 <= int(throttled.headers["Retry-After"]) <= 1000
    assert steer(sim, "GET", "status")["requests"]["throttled"] == 1

    state = steer(sim, "DELETE", "rate-limit")

    assert state["rate_limit"] is None
    assert [v1(sim.url, "/v1/customers").status_code for _ in range(3)] == [200] * 3


def test_a_customer_rate_limit_throttles_that_customer_until_removed(sim: MetronomeSimulator) -> None:
    busy, other = sim.active_customer_ids[:2]

    state = steer(sim, "PUT", "customer-rate-limit", {"customer_id": busy, "rate": 0.001, "burst": 1})

    assert state["customer_rate_limits"] == {busy: {"rate": 0.001, "burst": 1.0, "retry_after": "none"}}
    assert v1(sim.url, costs_path(busy), **WEEK).status_code == 200
    throttled = v1(sim.url, costs_path(busy), **WEEK)
    assert (throttled.status_code, throttled.headers["X-Metronome-Rate-Limit-Type"]) == (429, "customer")
    assert v1(sim.url, costs_path(other), **WEEK).status_code == 200

    state = steer(sim, "DELETE", "customer-rate-limit", {"customer_id": busy})

    assert state["customer_rate_limits"] == {}
    assert v1(sim.url, costs_path(busy), **WEEK).status_code == 200


def test_every_customer_can_be_limited_at_once(sim: MetronomeSimulator) -> None:
    state = steer(sim, "PUT", "customer-rate-limit", {"customer_id": "*", "rate": 2, "retry_after": "ms"})

    assert state["customer_rate_limits"] == {"*": {"rate": 2.0, "burst": 2.0, "retry_after": "ms"}}


def test_a_rate_limit_without_burst_takes_the_rate(sim: MetronomeSimulator) -> None:
    state = steer(sim, "PUT", "rate-limit", {"rate": 8})

    assert state["rate_limit"] == {"rate": 8.0, "burst": 8.0, "retry_after": "none"}


def test_added_customers_follow_their_lifecycle(sim: MetronomeSimulator) -> None:
    spec = "created_at=2024-01-05T00:00:00Z,archived_at=2024-01-08T00:00:00Z,contract=no,name=Late Inc"

    response = control(sim.url, "POST", "customers", {"spec": spec})

    assert response.status_code == 201
    added = response.json()
    customer_id = added["id"]
    assert added["customer"]["name"] == "Late Inc"
    assert added["customer"]["archived_at"] == "2024-01-08T00:00:00Z"
    archived = v1(sim.url, "/v1/customers", only_archived="true", limit=100).json()["data"]
    assert customer_id in [customer["id"] for customer in archived]
    assert costs_days(sim.url, customer_id) == ["2024-01-05", "2024-01-06", "2024-01-07"]
    assert breakdown_days(sim.url, customer_id) == []
    assert steer(sim, "GET", "status")["customers"] == {"active": 25, "archived": 4}


# -- status -----------------------------------------------------------------------------------------------


def test_status_counts_the_requests_by_kind_and_status(sim: MetronomeSimulator) -> None:
    customer_id = sim.costs_customer_ids[0]
    before = steer(sim, "GET", "status")
    v1(sim.url, "/v1/customers")
    v1(sim.url, costs_path(customer_id), **WEEK)
    v1(sim.url, breakdowns_path(customer_id), **WEEK)
    v1(sim.url, "/v1/nothing")

    after = steer(sim, "GET", "status")

    assert before["requests"] == {
        "total": 0,
        "by_kind": {"customers": 0, "costs": 0, "breakdowns": 0, "other": 0},
        "by_status": {},
        "throttled": 0,
    }
    assert after["requests"] == {
        "total": 4,
        "by_kind": {"customers": 1, "costs": 1, "breakdowns": 1, "other": 1},
        "by_status": {"200": 3, "404": 1},
        "throttled": 0,
    }
    assert after["now"] == "2024-01-10T12:00:00Z"
    assert after["availability_delay_hours"] == 2.0


# -- refusals ----------------------------------------------------------------------------------------------

ACTIONS = [
    ("GET", "status", None),
    ("POST", "withhold", {"days": ["2024-01-09"]}),
    ("POST", "release", {"all": True}),
    ("POST", "faults", {"fault": "drop"}),
    ("DELETE", "faults", None),
    ("PUT", "clock", {"now": "2024-01-01T00:00:00Z"}),
    ("PUT", "rate-limit", {"rate": 1}),
    ("DELETE", "rate-limit", None),
    ("PUT", "customer-rate-limit", {"customer_id": "*", "rate": 1}),
    ("DELETE", "customer-rate-limit", {"customer_id": "*"}),
    ("POST", "customers", {"spec": "created_at=2024-01-01T00:00:00Z"}),
]


@pytest.mark.parametrize(("method", "name", "body"), ACTIONS, ids=[f"{m} {n}" for m, n, _ in ACTIONS])
def test_a_wrong_token_is_refused_and_changes_nothing(
    sim: MetronomeSimulator, method: str, name: str, body: object
) -> None:
    before = steer(sim, "GET", "status")

    refused = control(sim.url, method, name, body, token="wrong-token")
    bare = requests.request(method, f"{sim.url}/_simulator/{name}", json=body, timeout=10)

    assert (refused.status_code, bare.status_code) == (401, 401)
    assert "Bearer" in refused.json()["message"]
    assert steer(sim, "GET", "status") == before
    assert control(sim.url, "GET", "status", token="other-token").status_code == 200


BAD_INPUT = [
    ("POST", "withhold", {}, "days is required"),
    ("POST", "withhold", {"days": "2024-01-09"}, "days must be a non-empty list"),
    ("POST", "withhold", {"days": []}, "days must be a non-empty list"),
    ("POST", "withhold", {"days": ["2024-02-30"]}, "days: not a YYYY-MM-DD date: '2024-02-30'"),
    (
        "POST",
        "withhold",
        {"days": ["2024-01-09"], "customer": "x"},
        "unknown key 'customer'; known keys: days, customer_id",
    ),
    ("POST", "withhold", {"days": ["2024-01-09"], "customer_id": 7}, "customer_id must be a customer's id"),
    ("POST", "release", {}, 'give either days (a list of days) or "all": true'),
    (
        "POST",
        "release",
        {"all": True, "days": ["2024-01-09"]},
        'give either days (a list of days) or "all": true',
    ),
    ("POST", "release", {"all": "yes"}, "all must be true or false"),
    ("POST", "faults", {}, "fault is required: a string KIND[:PATH_SUBSTRING[:TIMES]]"),
    ("POST", "faults", {"fault": "status=999"}, "fault: status=CODE needs an HTTP status code, got '999'"),
    ("POST", "faults", {"fault": "boom"}, "fault: unknown fault 'boom'; known faults: status=CODE, drop"),
    ("POST", "faults", {"fault": "drop::0"}, "fault: TIMES must be a positive count or 'forever'"),
    ("POST", "faults", {"fault": "drop@2"}, "fault: PROBABILITY must be a number from 0 to 1"),
    ("PUT", "clock", {}, "now is required"),
    ("PUT", "clock", {"now": "2024-01-10"}, "now: not an RFC 3339 timestamp: '2024-01-10'"),
    ("PUT", "rate-limit", {}, "rate is required"),
    ("PUT", "rate-limit", {"rate": "fast"}, "rate must be a number, got 'fast'"),
    ("PUT", "rate-limit", {"rate": True}, "rate must be a number, got True"),
    ("PUT", "rate-limit", {"rate": -1}, "rate must be positive and finite"),
    ("PUT", "rate-limit", {"rate": 8, "burst": 0.5}, "burst must be at least 1"),
    (
        "PUT",
        "rate-limit",
        {"rate": 8, "retry_after": "minutes"},
        "retry_after must be one of none, seconds, ms",
    ),
    ("PUT", "customer-rate-limit", {"rate": 1}, "customer_id is required"),
    ("PUT", "customer-rate-limit", {"customer_id": "*"}, "rate is required"),
    ("PUT", "customer-rate-limit", {"customer_id": "*", "rate": 0}, "rate must be positive and finite"),
    ("DELETE", "customer-rate-limit", {}, "customer_id is required"),
    ("POST", "customers", {"spec": "plan=no"}, "spec: created_at=<RFC 3339 timestamp> is required"),
    (
        "POST",
        "customers",
        {"spec": "created_at=2024-01-05T00:00:00Z,colour=red"},
        "spec: unknown key 'colour'",
    ),
    (
        "POST",
        "customers",
        {"spec": "created_at=2024-01-05T00:00:00Z,archived_at=2024-01-01T00:00:00Z"},
        "spec: archived_at must be after created_at",
    ),
    ("POST", "withhold", ["2024-01-09"], 'the body must be a JSON object such as {"days": ["2024-01-09"]}'),
]


@pytest.mark.parametrize(
    ("method", "name", "body", "message"),
    BAD_INPUT,
    ids=[f"{n}-{i}" for i, (_, n, _, _) in enumerate(BAD_INPUT)],
)
def test_bad_input_gets_a_400_that_names_what_to_fix(
    sim: MetronomeSimulator, method: str, name: str, body: object, message: str
) -> None:
    before = steer(sim, "GET", "status")

    refused = control(sim.url, method, name, body)

    assert refused.status_code == 400, refused.text
    assert message in refused.json()["message"]
    assert steer(sim, "GET", "status") == before


def test_a_body_that_is_not_json_is_refused(sim: MetronomeSimulator) -> None:
    refused = requests.post(f"{sim.url}/_simulator/withhold", data=b"{days: [", headers=AUTH, timeout=10)

    assert refused.status_code == 400
    assert (
        refused.json()["message"] == 'the body is not JSON; send an object such as {"days": ["2024-01-09"]}'
    )


def test_a_chunked_body_is_refused(sim: MetronomeSimulator) -> None:
    chunks = iter([b'{"days": ["2024-01-09"]}'])

    refused = requests.post(f"{sim.url}/_simulator/withhold", data=chunks, headers=AUTH, timeout=10)

    assert refused.status_code == 400
    assert "Content-Length" in refused.json()["message"]
    assert sim.withheld_days.all_customers == ()


def test_an_unknown_customer_is_a_404(sim: MetronomeSimulator) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"

    refused = control(sim.url, "POST", "withhold", {"days": ["2024-01-09"], "customer_id": unknown})

    assert refused.status_code == 404
    assert refused.json()["message"] == f"unknown customer {unknown}"


def test_unknown_paths_and_methods_say_what_there_is(sim: MetronomeSimulator) -> None:
    missing = control(sim.url, "GET", "faults/all")
    wrong_method = control(sim.url, "POST", "rate-limit", {"rate": 1})
    bare_prefix = requests.get(f"{sim.url}/_simulator", headers=AUTH, timeout=10)

    assert missing.status_code == 404
    assert "GET /_simulator/status" in missing.json()["message"]
    assert bare_prefix.status_code == 404
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "PUT, DELETE"
    assert wrong_method.json()["message"] == "POST is not allowed on /_simulator/rate-limit; use PUT, DELETE"


# -- the command-line client, end to end -------------------------------------------------------------------


def client(url: str, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m airflow_provider_metronome.testing control --url URL [--token T] ARGS``, run to its end."""
    command = [sys.executable, "-m", "airflow_provider_metronome.testing", "control", "--url", url]
    command += [] if token is None else ["--token", token]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_the_client_steers_a_simulator_started_from_the_command_line(tmp_path: Path) -> None:
    started = ("--now", "2024-01-10T12:00:00Z", "--token", "rehearsal", "--unique-metric-customers", "0")
    with standalone_simulator(tmp_path, *started) as running:
        url = running.url
        customer_id = v1_with(url, "rehearsal", "/v1/customers").json()["data"][0]["id"]

        assert ok(client(url, "withhold", "yesterday", token="rehearsal"))["withheld"]["all_customers"] == [
            "2024-01-09"
        ]
        assert costs_with(url, customer_id)[-1] == "2024-01-08"
        assert ok(client(url, "release", "2024-01-09", token="rehearsal"))["withheld"]["all_customers"] == []
        assert costs_with(url, customer_id)[-1] == "2024-01-09"

        ok(client(url, "withhold", "2024-01-05", "--customer", customer_id, token="rehearsal"))
        assert "2024-01-05" not in costs_with(url, customer_id)
        ok(client(url, "release", "--all", "--customer", customer_id, token="rehearsal"))
        assert "2024-01-05" in costs_with(url, customer_id)

        assert (
            ok(client(url, "fault", "status=503:/costs:1", token="rehearsal"))["faults"][0]["kind"]
            == "status"
        )
        assert v1_with(url, "rehearsal", costs_path(customer_id), **WEEK).status_code == 503
        ok(client(url, "fault", "status=502::forever", token="rehearsal"))
        assert v1_with(url, "rehearsal", "/v1/customers").status_code == 502
        assert ok(client(url, "clear-faults", token="rehearsal"))["faults"] == []
        assert v1_with(url, "rehearsal", "/v1/customers").status_code == 200

        assert (
            ok(client(url, "clock", "2024-01-09T01:00:00Z", token="rehearsal"))["now"]
            == "2024-01-09T01:00:00Z"
        )
        assert costs_with(url, customer_id)[-1] == "2024-01-07"

        limited = ok(
            client(url, "rate-limit", "0.001", "--burst", "1", "--retry-after", "ms", token="rehearsal")
        )
        assert limited["rate_limit"] == {"rate": 0.001, "burst": 1.0, "retry_after": "ms"}
        assert v1_with(url, "rehearsal", "/v1/customers").status_code == 200
        assert v1_with(url, "rehearsal", "/v1/customers").status_code == 429
        assert ok(client(url, "rate-limit", "off", token="rehearsal"))["rate_limit"] is None
        assert v1_with(url, "rehearsal", "/v1/customers").status_code == 200

        gateway = ok(client(url, "gateway", "2", "--seconds", "0", token="rehearsal"))["gateway_timeout"]
        assert gateway == {"max_line_items": 2, "seconds": 0.0}
        breakdowns = f"/v1/customers/{customer_id}/invoices/breakdowns"
        assert v1_with(url, "rehearsal", breakdowns, **WEEK).status_code == 504
        assert ok(client(url, "gateway", "off", token="rehearsal"))["gateway_timeout"] is None
        assert v1_with(url, "rehearsal", breakdowns, **WEEK).status_code == 200
        limited = ok(
            client(url, "customer-rate-limit", customer_id, "0.001", "--burst", "1", token="rehearsal")
        )
        assert limited["customer_rate_limits"] == {
            customer_id: {"rate": 0.001, "burst": 1.0, "retry_after": "none"}
        }
        assert v1_with(url, "rehearsal", costs_path(customer_id), **WEEK).status_code == 200
        assert v1_with(url, "rehearsal", costs_path(customer_id), **WEEK).status_code == 429
        off = ok(client(url, "customer-rate-limit", customer_id, "off", token="rehearsal"))
        assert off["customer_rate_limits"] == {}
        assert v1_with(url, "rehearsal", costs_path(customer_id), **WEEK).status_code == 200

        added = ok(client(url, "customer", "created_at=2024-01-01T00:00:00Z,plan=no", token="rehearsal"))
        listed = v1_with(url, "rehearsal", "/v1/customers", limit=100).json()["data"]
        assert added["id"] in [customer["id"] for customer in listed]

        status = ok(client(url, "status", token="rehearsal"))
        assert status["requests"]["throttled"] == 2  # one of the organisation's limit, one of the customer's
        assert status["requests"]["by_status"]["503"] == 1
        assert status["customers"]["active"] == 26


def test_the_client_reports_refusals_and_exits_1(tmp_path: Path) -> None:
    with standalone_simulator(tmp_path, "--now", "2024-01-10T12:00:00Z") as running:
        wrong_token = client(running.url, "status", token="wrong")
        bad_day = client(running.url, "withhold", "2024-01-32")
        bad_fault = client(running.url, "fault", "status=abc")

    assert (wrong_token.returncode, wrong_token.stdout) == (1, "")
    assert "Unauthorized" in wrong_token.stderr
    assert "(HTTP 401)" in wrong_token.stderr
    assert bad_day.returncode == 1
    assert "days: not a YYYY-MM-DD date: '2024-01-32'" in bad_day.stderr
    assert bad_fault.returncode == 1
    assert "fault: status=CODE needs an HTTP status code" in bad_fault.stderr


def test_the_client_says_when_nothing_answers(sim: MetronomeSimulator) -> None:
    url = sim.url
    sim.stop()

    result = client(url, "status")

    assert result.returncode == 1
    assert f"error: no answer from {url}/_simulator/status" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["release"], "release takes DAY... or --all"),
        (["release", "--all", "2024-01-09"], "release takes DAY... or --all"),
        (["rate-limit", "off", "--burst", "3"], "rate-limit off takes no --burst or --retry-after"),
        (["customer-rate-limit", "*", "off", "--retry-after", "ms"], "customer-rate-limit off takes no"),
        (["rate-limit", "fast"], "RATE must be a number of requests per second or 'off'"),
        (["rate-limit", "8", "--retry-after", "minutes"], "invalid choice: 'minutes'"),
        (["teleport"], "invalid choice: 'teleport'"),
    ],
)
def test_the_client_refuses_bad_usage_before_sending_anything(
    sim: MetronomeSimulator, args: list[str], message: str
) -> None:
    result = client(sim.url, *args)

    assert result.returncode == 2
    assert message in result.stderr
    assert sim.requests == []


def test_the_simulators_own_command_line_points_at_the_client(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    words = " ".join(capsys.readouterr().out.split())
    assert (
        "Steer a running simulator with: python -m airflow_provider_metronome.testing control --help" in words
    )


def v1_with(url: str, token: str, path: str, **params: Any) -> requests.Response:
    return requests.get(url + path, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def costs_with(url: str, customer_id: str) -> list[str]:
    """The days of WEEK in a customer's costs, asked with the token ``rehearsal``."""
    response = v1_with(url, "rehearsal", costs_path(customer_id), **WEEK)
    assert response.status_code == 200, response.text
    return [window["start_timestamp"][:10] for window in response.json()["data"]]
