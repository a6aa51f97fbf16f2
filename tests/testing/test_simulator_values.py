"""Pages whose values are loosely typed or exact, and bodies that are not JSON at all, over real sockets."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
import requests

from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from airflow_provider_metronome.testing.__main__ import FAULTS, main
from airflow_provider_metronome.testing.simulator import FaultKind
from airflow_provider_metronome.testing.values import ODD_TEXT
from tests.support.simulator import standalone_simulator
from tests.testing.simulator_client import AUTH, breakdowns_path, costs_path, get

NOW = dt.datetime(2024, 3, 10, 12, tzinfo=dt.timezone.utc)
WEEK: dict[str, Any] = {"starting_on": "2024-02-01T00:00:00Z", "ending_before": "2024-02-08T00:00:00Z"}
TEXTS = ["12.345678901234567890123", "9007199254740993", "1e5", "-0.0", "1.5E-7"]
MONEY = {"costs": "/cost", "breakdowns": "/total"}


@dataclass(frozen=True)
class Number:
    """A JSON number exactly as written."""

    text: str


@pytest.fixture
def sim() -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(now=NOW) as simulator:
        yield simulator


def path_of(sim: MetronomeSimulator, endpoint: str) -> str:
    cid = sim.costs_customer_ids[0]
    return costs_path(cid) if endpoint == "costs" else breakdowns_path(cid)


def exact(body: bytes) -> Any:
    """``body`` parsed with every number kept as its text."""
    return json.loads(body, parse_float=Number, parse_int=Number, parse_constant=Number)


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every scalar of a parsed JSON value with where it is, in document order."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}/{index}")
    else:
        yield path, value


def numbers(body: bytes) -> list[tuple[str, str]]:
    """Every number of a JSON body, as written, with where it is, in document order."""
    return [(path, value.text) for path, value in leaves(exact(body)) if isinstance(value, Number)]


def changes(before: bytes, after: bytes) -> dict[str, tuple[Any, Any]]:
    """The scalars that differ between two bodies of the same shape."""
    old, new = dict(leaves(exact(before))), dict(leaves(exact(after)))
    assert old.keys() == new.keys()
    return {path: (old[path], new[path]) for path in old if old[path] != new[path]}


def day_without_usage(sim: MetronomeSimulator, cid: str) -> dict[str, str]:
    """The query of a January day on which the customer used nothing (about one day in seven)."""
    january = [dt.date(2024, 1, day) for day in range(1, 32)]
    day = next(
        day for day in january if sim.costs_for(cid, day) == {**sim.costs_for(cid, day), "credit_types": {}}
    )
    return {"starting_on": f"{day}T00:00:00Z", "ending_before": f"{day + dt.timedelta(days=1)}T00:00:00Z"}


# -- exact numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["costs", "breakdowns"])
def test_exact_numbers_are_written_verbatim(sim: MetronomeSimulator, endpoint: str) -> None:
    path = path_of(sim, endpoint)
    normal = get(sim, path, **WEEK).content
    sim.inject(Fault.exact_numbers(TEXTS))

    spoiled = get(sim, path, **WEEK)

    written = numbers(spoiled.content)
    assert [where for where, _ in written] == [where for where, _ in numbers(normal)]  # the same places
    assert len(written) > len(TEXTS)
    assert [text for _, text in written] == [TEXTS[i % len(TEXTS)] for i in range(len(written))]
    places = {where.rsplit("/", 1)[1] for where, _ in written}
    assert places == ({"cost"} if endpoint == "costs" else {"total", "quantity", "unit_price"})
    assert all(isinstance(old, Number) for old, _ in changes(normal, spoiled.content).values())
    assert b":12.345678901234567890123," in spoiled.content
    assert sim.last_body(path) == spoiled.content
    assert get(sim, path, **WEEK).content == normal  # once only


@pytest.mark.parametrize("texts", [[], "12"])
def test_exact_numbers_needs_a_sequence_of_texts(texts: Any) -> None:
    with pytest.raises(ValueError, match="give a non-empty sequence of number texts"):
        Fault.exact_numbers(texts)


@pytest.mark.parametrize("text", ["1.", "NaN", " 1", "01", "+1", ".5", 1.5])
def test_exact_numbers_only_takes_json_numbers(text: Any) -> None:
    with pytest.raises(ValueError, match="not a JSON number"):
        Fault.exact_numbers(["1", text])
    assert Fault.exact_numbers(("0", "-1.5e+3")).texts == ("0", "-1.5e+3")


# -- wrong types, duplicate keys, odd text, foreign customers -------------------------------------


@pytest.mark.parametrize(("kind", "written"), [("string", str), ("boolean", bool)])
@pytest.mark.parametrize("endpoint", ["costs", "breakdowns"])
def test_wrong_type_spoils_the_first_money_number(
    sim: MetronomeSimulator, endpoint: str, kind: str, written: type
) -> None:
    path = path_of(sim, endpoint)
    normal = get(sim, path, **WEEK).content
    sim.inject(Fault.wrong_type(kind))  # type: ignore[arg-type]

    spoiled = get(sim, path, **WEEK).content

    first_money = next(where for where, _ in numbers(normal) if where.endswith(MONEY[endpoint]))
    ((where, (old, new)),) = changes(normal, spoiled).items()
    assert where == first_money
    assert type(new) is written
    assert new == (old.text if kind == "string" else True)


def test_wrong_type_checks_its_kind() -> None:
    with pytest.raises(ValueError, match="kind must be 'string' or 'boolean'"):
        Fault.wrong_type("null")  # type: ignore[arg-type]


@pytest.mark.parametrize("endpoint", ["costs", "breakdowns"])
def test_duplicate_key_writes_a_money_field_twice(sim: MetronomeSimulator, endpoint: str) -> None:
    path = path_of(sim, endpoint)
    normal = get(sim, path, **WEEK).content
    sim.inject(Fault.duplicate_key())
    spoiled = get(sim, path, **WEEK).content
    duplicated: list[list[tuple[str, Any]]] = []

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) < len(keys):
            duplicated.append(pairs)
        return dict(pairs)

    json.loads(spoiled, object_pairs_hook=keep_pairs, parse_float=Number, parse_int=Number)

    (pairs,) = duplicated
    key = MONEY[endpoint].lstrip("/")
    first, second = (value for name, value in pairs if name == key)
    assert first != second
    ((where, (old, new)),) = changes(normal, spoiled).items()  # json keeps the last of the two
    assert (old, new) == (first, second)
    # The page's first object with a money field: the first credit type with a cost, or the first invoice.
    assert where == (numbers(normal)[0][0] if endpoint == "costs" else "/data/0/total")
    assert re.fullmatch(
        r"/data/[0-9]+/credit_types/[^/]+/cost" if endpoint == "costs" else "/data/0/total", where
    )
    assert f'"{key}":{first.text},"{key}":{second.text}'.encode() in spoiled


@pytest.mark.parametrize(
    ("endpoint", "lines"), [("costs", "line_item_breakdown"), ("breakdowns", "line_items")]
)
def test_odd_text_puts_line_separators_in_a_line_item_name(
    sim: MetronomeSimulator, endpoint: str, lines: str
) -> None:
    path = path_of(sim, endpoint)
    normal = get(sim, path, **WEEK).content
    sim.inject(Fault.odd_text())

    spoiled = get(sim, path, **WEEK).content

    ((where, (old, new)),) = changes(normal, spoiled).items()
    first_name = next(where for where, _ in leaves(exact(normal)) if f"/{lines}/0/name" in where)
    assert where == first_name
    middle = len(old) // 2
    assert new == old[:middle] + ODD_TEXT + old[middle:]
    assert len(new.splitlines()) == 4
    for character in ODD_TEXT:
        assert character.encode() in spoiled  # raw UTF-8, not a \\u escape
        assert f"\\u{ord(character):04x}".encode() not in spoiled


def test_foreign_customer_names_another_customer(sim: MetronomeSimulator) -> None:
    cid = sim.costs_customer_ids[0]
    normal = get(sim, breakdowns_path(cid), **WEEK).content
    costs = get(sim, costs_path(cid), **WEEK).content
    sim.inject(Fault.foreign_customer())

    assert get(sim, costs_path(cid), **WEEK).content == costs  # costs name no customer: it waits
    spoiled = get(sim, breakdowns_path(cid), **WEEK).content

    ((where, (old, new)),) = changes(normal, spoiled).items()
    assert (where, old) == ("/data/0/customer_id", cid)
    assert new != cid
    assert new in {customer["id"] for customer in sim.customers}


@pytest.mark.parametrize(
    "fault",
    [Fault.exact_numbers(["1"]), Fault.wrong_type("string"), Fault.duplicate_key(), Fault.odd_text()],
    ids=lambda fault: fault.kind,
)
def test_value_faults_wait_for_a_page_with_what_they_alter(sim: MetronomeSimulator, fault: Fault) -> None:
    cid = sim.costs_customer_ids[0]
    empty_day = day_without_usage(sim, cid)
    normal = get(sim, costs_path(cid), **WEEK).content
    sim.inject(fault)

    assert get(sim, "/v1/customers").status_code == 200
    quiet = get(sim, costs_path(cid), **empty_day).json()["data"]
    spoiled = get(sim, costs_path(cid), **WEEK).content

    assert len(quiet) == 1
    assert quiet[0]["credit_types"] == {}  # nothing to alter there
    assert spoiled != normal
    assert get(sim, costs_path(cid), **WEEK).content == normal


# -- bodies that are not JSON ---------------------------------------------------------------------


def test_html_body_is_a_maintenance_page(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.html_body(), path="/v1/customers")

    answer = get(sim, "/v1/customers", headers={})  # before authentication, as a proxy in front would

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.content.startswith(b"<!DOCTYPE html>")
    assert "maintenance" in answer.text
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    with pytest.raises(requests.JSONDecodeError):
        answer.json()
    assert get(sim, "/v1/customers").json()["data"]


def test_empty_body_is_empty_json(sim: MetronomeSimulator) -> None:
    sim.inject(Fault.empty_body(), times=2)

    answers = [get(sim, "/v1/customers"), get(sim, costs_path(sim.costs_customer_ids[0]), **WEEK)]

    for answer in answers:
        assert (answer.status_code, answer.content) == (200, b"")
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.headers["Content-Length"] == "0"
        with pytest.raises(requests.JSONDecodeError):
            answer.json()
    assert get(sim, "/v1/customers").status_code == 200


# -- the last body --------------------------------------------------------------------------------


def test_last_body_is_the_latest_200_answer_for_a_path(sim: MetronomeSimulator) -> None:
    cid = sim.costs_customer_ids[0]
    with pytest.raises(KeyError, match="no 200 answer"):
        sim.last_body("/v1/customers")

    customers = get(sim, "/v1/customers", limit=2)
    get(sim, costs_path(cid))  # 400: no range
    assert sim.last_body("/v1/customers") == customers.content
    with pytest.raises(KeyError):
        sim.last_body("/costs")
    costs = get(sim, costs_path(cid), **WEEK)
    assert sim.last_body("/costs") == sim.last_body("/v1/customers") == costs.content  # the latest path
    assert sim.last_body("/v1/customers")[:1] == b"{"

    sim.clear_requests()
    with pytest.raises(KeyError):
        sim.last_body("/costs")


# -- the command line -----------------------------------------------------------------------------


def test_faults_from_the_command_line(tmp_path: Path) -> None:
    faults = ["html_body:/costs:2", "empty_body:/breakdowns:forever", "repeat_customers", "drop::1"]
    options = [
        "--now",
        "2024-03-10T12:00:00Z",
        *(argument for fault in faults for argument in ("--fault", fault)),
    ]

    with standalone_simulator(tmp_path, *options) as standalone:
        url = standalone.url
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/v1/customers", headers=AUTH, timeout=10)  # drop: any path
        first = requests.get(url + "/v1/customers?limit=5", headers=AUTH, timeout=10).json()
        second = requests.get(
            url + "/v1/customers",
            params={"limit": 5, "next_page": first["next_page"]},
            headers=AUTH,
            timeout=10,
        ).json()
        cid = first["data"][0]["id"]
        costs = [requests.get(url + costs_path(cid), params=WEEK, headers=AUTH, timeout=10) for _ in range(3)]
        breakdowns = [
            requests.get(url + breakdowns_path(cid), params=WEEK, headers=AUTH, timeout=10) for _ in range(3)
        ]

    assert second["data"][0] == first["data"][-1]
    assert [answer.headers["Content-Type"] for answer in costs] == [
        "text/html; charset=utf-8",
        "text/html; charset=utf-8",
        "application/json",
    ]
    assert len(costs[2].json()["data"]) == 7
    assert [answer.content for answer in breakdowns] == [b""] * 3


def test_the_command_line_documents_every_fault(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--fault KIND[:PATH_SUBSTRING[:TIMES]]" in text
    assert "'forever'" in text
    for kind in FAULTS:
        assert kind in text


def test_the_command_line_names_every_fault_made_without_arguments() -> None:
    for kind in get_args(FaultKind):
        if kind in FAULTS:
            assert FAULTS[kind]().kind == kind
        else:
            with pytest.raises((TypeError, ValueError)):
                getattr(Fault, kind)()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("status", "unknown fault 'status'"),
        ("nonsense:/v1", "unknown fault 'nonsense'"),
        ("drop:/v1:0", "TIMES must be a positive count or 'forever'"),
        ("drop::soon", "TIMES must be a positive count or 'forever'"),
        ("drop:/v1:1:2", "expected KIND[:PATH_SUBSTRING[:TIMES]]"),
    ],
)
def test_the_command_line_refuses_bad_faults(
    capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--fault", spec])

    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "argument --fault: " in error
    assert message in error
