"""The simulator's newer faults, withheld days and per-request statuses, over real sockets."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from tests.support.simulator import wait_until
from tests.testing.simulator_client import (
    AUTH,
    FEBRUARY,
    all_pages,
    breakdowns_path,
    connection_threads,
    costs_path,
    get,
)

NOW = dt.datetime(2024, 3, 10, 12, tzinfo=dt.timezone.utc)
FIRST_WEEK: dict[str, Any] = {"starting_on": "2024-02-01T00:00:00Z", "ending_before": "2024-02-08T00:00:00Z"}


@pytest.fixture
def sim() -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(now=NOW) as simulator:
        yield simulator


def day_starts(items: list[dict[str, Any]], key: str = "start_timestamp") -> list[str]:
    return [item[key][:10] for item in items]


def numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a JSON value, with where it is."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers(item, f"{path}/{index}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def refuse_constant(token: str) -> float:
    raise ValueError(f"not JSON: {token}")


# -- trickle --------------------------------------------------------------------------------------


def test_trickle_sends_the_whole_answer_slowly_without_a_read_timeout(sim: MetronomeSimulator) -> None:
    expected = get(sim, "/v1/customers", limit=1).content
    sim.inject(Fault.trickle(bytes_per_second=400))

    started = time.monotonic()
    # A 0.5 s read timeout: it would fire if the body stalled, not while bytes keep coming.
    response = requests.get(sim.url + "/v1/customers?limit=1", headers=AUTH, timeout=(5, 0.5))
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.content == expected
    assert elapsed >= 0.9 * len(expected) / 400 > 0.5  # the server paused before every byte


def test_trickle_stops_when_the_client_hangs_up(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.trickle(seconds_per_byte=0.05))  # a 100-customer page would take ~10 minutes

    response = requests.get(sim.url + "/v1/customers?limit=100", headers=AUTH, timeout=(5, 5), stream=True)
    assert response.raw.read(5) == b'{"dat'
    assert sim.open_connections == 1
    response.close()

    wait_until(lambda: sim.open_connections == 0, "the simulator notices the client left")
    assert get(sim, "/v1/customers").status_code == 200


def test_trickle_stops_when_the_simulator_stops() -> None:
    sim = MetronomeSimulator().start()
    port = sim.port
    sim.inject(Fault.trickle(seconds_per_byte=0.05))
    outcome: list[BaseException] = []
    response = requests.get(sim.url + "/v1/customers?limit=100", headers=AUTH, timeout=(5, 30), stream=True)
    assert response.raw.read(1) == b"{"

    def read_rest() -> None:
        try:
            response.content  # noqa: B018
        except requests.RequestException as error:
            outcome.append(error)

    reader = threading.Thread(target=read_rest)
    reader.start()
    sim.stop()

    reader.join(timeout=20)
    assert not reader.is_alive(), "the client was left waiting for the rest of the body"
    assert len(outcome) == 1  # a truncated body, not a complete one
    wait_until(lambda: not connection_threads(port), "the trickling thread ends")


# -- endless cursor -------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["customers", "costs", "breakdowns"])
def test_endless_cursor_never_runs_out(sim: MetronomeSimulator, endpoint: str) -> None:
    cid = sim.costs_customer_ids[0]
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "customers": ("/v1/customers", {"limit": 10}),  # 25 customers: 3 pages normally
        "costs": (costs_path(cid), {**FEBRUARY, "limit": 10}),  # 29 days: 3 pages
        "breakdowns": (breakdowns_path(cid), {**FIRST_WEEK, "limit": 5}),
    }
    path, params = cases[endpoint]
    normal_pages = len(all_pages(sim, path, **params))
    sim.inject(Fault.endless_cursor(), path=path, times=None)

    cursors = []
    for _ in range(3 * normal_pages):
        page = get(sim, path, **params).json()
        assert page["data"]
        assert page["next_page"]
        cursors.append(page["next_page"])
        params = {**params, "next_page": page["next_page"]}

    assert len(set(cursors)) == len(cursors)
    sim.clear_faults()
    assert get(sim, path, **params).status_code == 200  # its cursors are still valid ones


# -- redirects and encodings ----------------------------------------------------------------------


def test_redirect_to_another_host(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.redirect())
    sim.inject(Fault.redirect("https://elsewhere.example/v1/customers", status=307))

    first = requests.get(sim.url + "/v1/customers?limit=2", headers=AUTH, allow_redirects=False, timeout=10)
    second = requests.get(sim.url + "/v1/customers", headers=AUTH, allow_redirects=False, timeout=10)

    assert (first.status_code, first.headers["Location"]) == (
        302,
        f"http://127.0.0.2:{sim.port}/v1/customers?limit=2",
    )
    assert (second.status_code, second.headers["Location"]) == (307, "https://elsewhere.example/v1/customers")
    assert get(sim, "/v1/customers").status_code == 200
    with pytest.raises(ValueError, match="not a redirect status"):
        Fault.redirect(status=200)


def test_bad_encoding_claims_gzip_over_plain_bytes(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.bad_encoding(), times=2)

    with pytest.raises(requests.exceptions.ContentDecodingError):
        get(sim, "/v1/customers")
    raw = requests.get(sim.url + "/v1/customers", headers=AUTH, timeout=10, stream=True)

    assert raw.status_code == 200
    assert raw.headers["Content-Encoding"] == "gzip"
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(raw.raw.read(decode_content=False))


# -- spoiled windows ------------------------------------------------------------------------------


@pytest.mark.parametrize(("token", "check"), [("NaN", math.isnan), ("Infinity", math.isinf)])
@pytest.mark.parametrize("endpoint", ["costs", "breakdowns"])
def test_nan_body_spoils_one_number(sim: MetronomeSimulator, endpoint: str, token: str, check: Any) -> None:
    cid = sim.costs_customer_ids[0]
    path = costs_path(cid) if endpoint == "costs" else breakdowns_path(cid)
    normal = get(sim, path, **FIRST_WEEK).json()
    sim.inject(Fault.nan_body(token))  # type: ignore[arg-type]

    assert get(sim, "/v1/customers").status_code == 200  # no numbers there: the fault waits
    text = get(sim, path, **FIRST_WEEK).text

    with pytest.raises(ValueError, match=f"not JSON: {token}"):
        json.loads(text, parse_constant=refuse_constant)
    spoiled = dict(numbers(json.loads(text)))
    expected = dict(numbers(normal))
    assert spoiled.keys() == expected.keys()
    changed = [where for where, value in spoiled.items() if value != expected[where]]
    assert len(changed) == 1
    assert check(spoiled[changed[0]])
    assert changed[0].endswith("/cost" if endpoint == "costs" else "/total")
    assert get(sim, path, **FIRST_WEEK).json() == normal


def test_nan_body_checks_its_token() -> None:
    with pytest.raises(ValueError, match="token must be one of"):
        Fault.nan_body("nan")  # type: ignore[arg-type]


def test_duplicate_window_repeats_the_first_day(sim: MetronomeSimulator) -> None:
    cid = sim.costs_customer_ids[0]
    sim.inject(Fault.duplicate_window(), times=2)

    costs = get(sim, costs_path(cid), limit=5, **FEBRUARY).json()
    breakdowns = get(sim, breakdowns_path(cid), **FIRST_WEEK).json()["data"]

    days = [f"2024-02-0{day}" for day in range(1, 6)]
    assert day_starts(costs["data"]) == [*days, "2024-02-01"]
    assert costs["data"][0] == costs["data"][-1]
    rest = get(sim, costs_path(cid), limit=5, next_page=costs["next_page"], **FEBRUARY).json()
    assert day_starts(rest["data"])[0] == "2024-02-06"  # the cursor is not disturbed
    first_day = sim.breakdowns_for(cid, dt.date(2024, 2, 1), dt.date(2024, 2, 2))
    assert breakdowns == sim.breakdowns_for(cid, dt.date(2024, 2, 1), dt.date(2024, 2, 8)) + first_day


def test_out_of_range_window(sim: MetronomeSimulator) -> None:
    cid = sim.costs_customer_ids[0]
    veteran = sim.add_customer(created_at=dt.datetime(2018, 1, 1, tzinfo=dt.timezone.utc))
    sim.inject(Fault.out_of_range_window(), times=3)

    costs = get(sim, costs_path(cid), **FIRST_WEEK).json()["data"]
    breakdowns = get(sim, breakdowns_path(cid), **FIRST_WEEK).json()["data"]
    around_2019 = get(
        sim, costs_path(veteran), starting_on="2018-12-01T00:00:00Z", ending_before="2019-02-01T00:00:00Z"
    ).json()["data"]

    assert day_starts(costs) == [*(f"2024-02-0{day}" for day in range(1, 8)), "2019-01-01"]
    assert costs[-1]["end_timestamp"] == "2019-01-02T00:00:00Z"
    assert sim.costs_for(cid, dt.date(2019, 1, 1)) is None  # a made-up window: the customer came in 2020
    assert day_starts(breakdowns, "breakdown_start_timestamp")[-1] == "2019-01-01"
    # When the range covers 2019-01-01, the extra window is the day before the range instead.
    assert day_starts(around_2019)[-1] == "2018-11-30"
    assert around_2019[-1] == sim.costs_for(veteran, dt.date(2018, 11, 30))

    sim.inject(Fault.out_of_range_window(dt.date(2030, 6, 1)))
    assert day_starts(get(sim, costs_path(cid), **FIRST_WEEK).json()["data"])[-1] == "2030-06-01"


def test_window_faults_wait_for_a_page_with_data(sim: MetronomeSimulator) -> None:
    cid = sim.costs_customer_ids[0]
    future: dict[str, Any] = {"starting_on": "2030-01-01T00:00:00Z", "ending_before": "2030-01-02T00:00:00Z"}
    sim.inject(Fault.duplicate_window())

    assert len(get(sim, "/v1/customers").json()["data"]) == 25  # customers: not a windowed page
    assert get(sim, costs_path(cid), **future).json()["data"] == []  # nothing available yet
    costs = get(sim, costs_path(cid), **FIRST_WEEK).json()["data"]
    assert len(costs) == 8


# -- withheld days --------------------------------------------------------------------------------


def test_withheld_days_are_missing_for_one_customer_only(sim: MetronomeSimulator) -> None:
    cid, other = sim.costs_customer_ids[:2]
    withheld = [dt.date(2024, 2, 3), dt.date(2024, 2, 5)]
    kept = ["2024-02-01", "2024-02-02", "2024-02-04", "2024-02-06", "2024-02-07"]

    sim.withhold(cid.upper(), withheld)

    assert day_starts(get(sim, costs_path(cid), **FIRST_WEEK).json()["data"]) == kept
    assert len(get(sim, costs_path(other), **FIRST_WEEK).json()["data"]) == 7
    daily = get(sim, breakdowns_path(cid), **FIRST_WEEK).json()["data"]
    assert sorted(set(day_starts(daily, "breakdown_start_timestamp"))) == kept
    assert daily == sim.breakdowns_for(cid, dt.date(2024, 2, 1), dt.date(2024, 2, 8))
    hourly = get(
        sim,
        breakdowns_path(cid),
        window_size="hour",
        starting_on="2024-02-03T00:00:00Z",
        ending_before="2024-02-04T00:00:00Z",
    ).json()["data"]
    assert hourly == []
    assert sim.costs_for(cid, dt.date(2024, 2, 3))["start_timestamp"] == "2024-02-03T00:00:00Z"

    sim.clear_withheld(cid)
    assert len(get(sim, costs_path(cid), **FIRST_WEEK).json()["data"]) == 7
    with pytest.raises(KeyError, match="unknown customer"):
        sim.withhold("00000000-0000-4000-8000-000000000000", withheld)


def test_withholding_adds_up_until_cleared(sim: MetronomeSimulator) -> None:
    cid, other = sim.costs_customer_ids[:2]
    sim.withhold(cid, [dt.date(2024, 2, 1)])
    sim.withhold(cid, [dt.datetime(2024, 2, 2, 12, tzinfo=dt.timezone.utc)])
    sim.withhold(other, [dt.date(2024, 2, 7)])

    assert len(get(sim, costs_path(cid), **FIRST_WEEK).json()["data"]) == 5
    sim.clear_withheld()
    assert len(get(sim, costs_path(cid), **FIRST_WEEK).json()["data"]) == 7
    assert len(get(sim, costs_path(other), **FIRST_WEEK).json()["data"]) == 7


# -- the request log ------------------------------------------------------------------------------


def test_the_log_keeps_each_answers_status(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.drop(), path="/dropped")

    get(sim, "/v1/customers")
    get(sim, "/v1/customers", headers={})
    get(sim, "/v1/nothing-here")
    with pytest.raises(requests.ConnectionError):
        get(sim, "/dropped")

    assert [(record.path, record.status, record.throttled) for record in sim.requests] == [
        ("/v1/customers", 200, False),
        ("/v1/customers", 401, False),
        ("/v1/nothing-here", 404, False),
        ("/dropped", None, False),  # closed without an answer
    ]
