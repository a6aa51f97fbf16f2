"""Customer lifecycles in the simulator: listed once created, archived later, billed only while they exist.

Every rule is checked over real HTTP, against both explicit dates and the simulator's own model
(:meth:`MetronomeSimulator.billed_days`).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import metronome
import pytest
import requests

from airflow_provider_metronome.testing import DEFAULT_TOKEN, MetronomeSimulator
from airflow_provider_metronome.testing.__main__ import main
from tests.support.simulator import standalone_simulator
from tests.testing.simulator_client import AUTH, all_pages, breakdowns_path, costs_path, get

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 3, 10, 12, tzinfo=UTC)
FIRST_DAY, END_DAY = dt.date(2024, 2, 1), dt.date(2024, 2, 8)
MIDDLE = dt.date(2024, 2, 4)
# A few days either side of the lifecycle window, so that what lies outside it shows too.
AROUND = {"starting_on": "2024-01-29T00:00:00Z", "ending_before": "2024-02-12T00:00:00Z"}
AROUND_DAYS = (dt.date(2024, 1, 29), dt.date(2024, 2, 12))


def days(first: dt.date, end: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=offset) for offset in range((end - first).days)]


def at(day: dt.date, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), UTC)


def costs_days(sim: MetronomeSimulator, cid: str, **params: Any) -> list[dt.date]:
    windows = [window for page in all_pages(sim, costs_path(cid), **(params or AROUND)) for window in page]
    return [dt.date.fromisoformat(window["start_timestamp"][:10]) for window in windows]


def breakdowns_days(sim: MetronomeSimulator, cid: str, **params: Any) -> list[dt.date]:
    invoices = [item for page in all_pages(sim, breakdowns_path(cid), **(params or AROUND)) for item in page]
    return sorted({dt.date.fromisoformat(invoice["breakdown_start_timestamp"][:10]) for invoice in invoices})


def listed_ids(sim: MetronomeSimulator, **params: Any) -> list[str]:
    return [
        customer["id"] for page in all_pages(sim, "/v1/customers", limit=100, **params) for customer in page
    ]


@pytest.fixture
def sim() -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(now=NOW) as simulator:
        yield simulator


@pytest.fixture
def roles(sim: MetronomeSimulator) -> dict[str, str]:
    return sim.add_lifecycle_customers(FIRST_DAY, END_DAY)


# -- generated customers --------------------------------------------------------------------------


def test_generated_customers_exist_from_their_creation_in_2020(sim: MetronomeSimulator) -> None:
    first = sim.active_customer_ids[0]
    created = [customer["created_at"] for customer in get(sim, "/v1/customers").json()["data"]]

    around_new_year = costs_days(
        sim, first, starting_on="2019-12-25T00:00:00Z", ending_before="2020-01-05T00:00:00Z"
    )

    assert created[:3] == ["2020-01-01T00:00:00Z", "2020-01-01T01:00:00Z", "2020-01-01T02:00:00Z"]
    assert created == sorted(created)
    assert around_new_year == days(dt.date(2020, 1, 1), dt.date(2020, 1, 5))
    assert sim.costs_for(first, dt.date(2019, 12, 31)) is None
    assert sim.costs_for(first, dt.date(2020, 1, 1)) is not None


def test_generated_archived_customers_have_no_costs_after_their_archive(sim: MetronomeSimulator) -> None:
    archived = get(sim, "/v1/customers", only_archived="true").json()["data"]
    customer = archived[0]
    created_at = dt.datetime.fromisoformat(customer["created_at"].replace("Z", "+00:00"))
    archived_at = dt.datetime.fromisoformat(customer["archived_at"].replace("Z", "+00:00"))
    # The day it is archived still has costs unless it is archived at midnight.
    last_day = (archived_at - dt.timedelta(microseconds=1)).date()
    spring = {"starting_on": "2020-03-01T00:00:00Z", "ending_before": "2020-06-01T00:00:00Z"}

    served_costs = costs_days(sim, customer["id"], **spring)
    served_breakdowns = breakdowns_days(sim, customer["id"], **spring)

    assert archived_at - created_at == dt.timedelta(days=90)
    assert served_costs == served_breakdowns == days(dt.date(2020, 3, 1), last_day + dt.timedelta(days=1))
    assert served_costs == sim.billed_days(customer["id"], "costs", dt.date(2020, 3, 1), dt.date(2020, 6, 1))
    assert costs_days(sim, customer["id"], **AROUND) == []
    assert sim.costs_for(customer["id"], last_day + dt.timedelta(days=1)) is None


# -- listing --------------------------------------------------------------------------------------


def test_a_customer_is_listed_once_created_and_as_archived_once_archived(sim: MetronomeSimulator) -> None:
    created_at, archived_at = at(MIDDLE, 9, 30), at(MIDDLE, 15)
    cid = sim.add_customer(created_at=created_at, archived_at=archived_at, name="Acme")

    def state() -> tuple[bool, bool]:
        return cid in listed_ids(sim), cid in listed_ids(sim, only_archived="true")

    sim.now = created_at - dt.timedelta(seconds=1)
    assert state() == (False, False)
    assert cid not in sim.active_customer_ids + sim.archived_customer_ids
    assert sim.customer(cid)["archived_at"] is None  # known, though not listed yet

    sim.now = created_at
    assert state() == (True, False)
    listed = next(c for c in get(sim, "/v1/customers", limit=100).json()["data"] if c["id"] == cid)
    assert listed == sim.customer(cid)
    assert (listed["name"], listed["created_at"], listed["archived_at"]) == (
        "Acme",
        "2024-02-04T09:30:00Z",
        None,
    )
    assert listed["updated_at"] == "2024-02-04T09:30:00Z"
    assert cid in sim.active_customer_ids

    sim.now = archived_at - dt.timedelta(seconds=1)
    assert state() == (True, False)

    sim.now = archived_at
    assert state() == (False, True)
    listed = get(sim, "/v1/customers", only_archived="true", customer_ids=cid).json()["data"][0]
    assert listed == sim.customer(cid)
    assert listed["archived_at"] == listed["updated_at"] == "2024-02-04T15:00:00Z"
    assert cid in sim.archived_customer_ids
    assert cid not in sim.active_customer_ids


def test_the_listing_is_ordered_by_creation_then_id(sim: MetronomeSimulator) -> None:
    generated = sim.active_customer_ids
    between = at(dt.date(2020, 1, 1), 0, 30)  # between the first two generated customers
    twins = {sim.add_customer(created_at=between) for _ in range(3)}
    latest = sim.add_customer(created_at=at(dt.date(2021, 1, 1)))
    earliest = sim.add_customer(created_at=at(dt.date(2019, 6, 1)))

    expected = [earliest, generated[0], *sorted(twins), *generated[1:], latest]
    assert listed_ids(sim) == expected
    assert sim.active_customer_ids == expected
    assert [customer["id"] for customer in sim.customers if customer["archived_at"] is None] == expected
    listed_in_pages = [c["id"] for page in all_pages(sim, "/v1/customers", limit=4) for c in page]
    assert listed_in_pages == expected


def test_added_customers_have_deterministic_ids_and_usage_like_the_others() -> None:
    created_at = at(dt.date(2023, 1, 1))
    one, same, other = MetronomeSimulator(seed=1), MetronomeSimulator(seed=1), MetronomeSimulator(seed=2)
    ids = [[sim.add_customer(created_at=created_at) for _ in range(3)] for sim in (one, same, other)]

    assert ids[0] == ids[1]
    assert len(set(ids[0])) == 3
    assert set(ids[0]).isdisjoint(ids[2])
    assert set(ids[0]).isdisjoint(one.active_customer_ids[: -len(ids[0])])
    windows = [one.costs_for(ids[0][0], day) for day in days(dt.date(2024, 2, 1), dt.date(2024, 2, 15))]
    assert windows == [
        same.costs_for(ids[1][0], day) for day in days(dt.date(2024, 2, 1), dt.date(2024, 2, 15))
    ]
    assert sum(bool(window and window["credit_types"]) for window in windows) >= 7
    assert one.customer(ids[0][0])["name"] == same.customer(ids[1][0])["name"]


def test_add_customer_checks_what_it_is_given(sim: MetronomeSimulator) -> None:
    created_at = at(dt.date(2023, 1, 1))
    with pytest.raises(ValueError, match="created_at must be a timezone-aware datetime"):
        sim.add_customer(created_at=dt.datetime(2023, 1, 1))
    with pytest.raises(ValueError, match="archived_at must be after created_at"):
        sim.add_customer(created_at=created_at, archived_at=created_at)
    with pytest.raises(ValueError, match="billing_end must be after billing_start"):
        sim.add_customer(
            created_at=created_at, billing_start=dt.date(2023, 2, 1), billing_end=dt.date(2023, 2, 1)
        )
    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(KeyError, match="unknown customer"):
        sim.customer(unknown)
    with pytest.raises(KeyError, match="unknown customer"):
        sim.billed_days(unknown, "costs", FIRST_DAY, END_DAY)
    assert len(sim.customers) == 28  # nothing was added


def test_customers_can_be_added_while_requests_are_served(sim: MetronomeSimulator) -> None:
    adders, per_adder = 4, 10
    start = threading.Barrier(adders + 1)
    added: list[str] = []
    listings: list[int] = []
    lock = threading.Lock()

    def add() -> None:
        start.wait()
        for number in range(per_adder):
            cid = sim.add_customer(created_at=at(dt.date(2022, 1, 1 + number)))
            with lock:
                added.append(cid)

    def read() -> None:
        start.wait()
        for _ in range(10):
            listings.append(len(listed_ids(sim)))

    threads = [threading.Thread(target=add) for _ in range(adders)] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(added)) == adders * per_adder
    assert listings == sorted(listings)  # customers only ever appear
    assert all(25 <= count <= 25 + adders * per_adder for count in listings)
    assert listed_ids(sim)[25:] == sorted(added, key=lambda cid: (sim.customer(cid)["created_at"], cid))


def test_set_customer_count_keeps_added_customers(sim: MetronomeSimulator) -> None:
    cid = sim.add_customer(created_at=at(dt.date(2020, 1, 1), 0, 30))

    sim.set_customer_count(5)

    listed = listed_ids(sim)
    assert listed == sim.active_customer_ids
    assert len(listed) == 6
    assert cid in listed
    created = [sim.customer(customer_id)["created_at"] for customer_id in listed]
    assert created == sorted(created)


def test_the_sdk_reads_added_customers_strictly(sim: MetronomeSimulator, roles: dict[str, str]) -> None:
    client = metronome.Metronome(
        bearer_token=DEFAULT_TOKEN, base_url=sim.url, max_retries=0, _strict_response_validation=True
    )
    with client:
        active = [customer.id for customer in client.v1.customers.list(limit=7)]
        archived = list(client.v1.customers.list(limit=7, only_archived=True))

    assert active == sim.active_customer_ids
    assert [customer.id for customer in archived] == sim.archived_customer_ids
    assert roles["archived_inside"] in [customer.id for customer in archived]
    assert all(customer.archived_at is not None for customer in archived)


# -- lifecycle roles ------------------------------------------------------------------------------

WINDOW = days(FIRST_DAY, END_DAY)
BEFORE_MIDDLE, FROM_MIDDLE = days(FIRST_DAY, MIDDLE), days(MIDDLE, END_DAY)
THROUGH_MIDDLE = days(FIRST_DAY, MIDDLE + dt.timedelta(days=1))
# The days of the window each role has costs and breakdowns for.
EXPECTED_DAYS: dict[str, tuple[list[dt.date], list[dt.date]]] = {
    "created_inside": (FROM_MIDDLE, FROM_MIDDLE),
    "archived_inside": (THROUGH_MIDDLE, THROUGH_MIDDLE),  # archived at 15:00 on the middle day
    "archived_after": (WINDOW, WINDOW),
    "archived_before": ([], []),
    "created_after": ([], []),
    "no_contract": (WINDOW, []),
    "no_plan": ([], WINDOW),
    "plan_ends_inside": (BEFORE_MIDDLE, BEFORE_MIDDLE),
    "plan_starts_inside": (FROM_MIDDLE, FROM_MIDDLE),
}


def test_add_lifecycle_customers_adds_one_customer_per_role(
    sim: MetronomeSimulator, roles: dict[str, str]
) -> None:
    assert list(roles) == list(EXPECTED_DAYS)
    assert len(set(roles.values())) == len(roles)
    created = {role: sim.customer(cid)["created_at"] for role, cid in roles.items()}
    assert created["created_inside"] == "2024-02-04T09:30:00Z"
    assert created["created_after"] == "2024-02-09T06:00:00Z"
    assert created["no_plan"] == created["archived_before"] == "2022-12-28T00:00:00Z"  # 400 days before
    archived = {role: sim.customer(cid)["archived_at"] for role, cid in roles.items()}
    assert archived["archived_inside"] == "2024-02-04T15:00:00Z"
    assert archived["archived_after"] == "2024-02-09T12:00:00Z"
    assert archived["archived_before"] == "2024-01-31T08:00:00Z"
    assert [role for role, value in archived.items() if value] == [
        "archived_inside",
        "archived_after",
        "archived_before",
    ]


@pytest.mark.parametrize("role", list(EXPECTED_DAYS))
def test_each_role_has_the_days_its_lifecycle_says(
    sim: MetronomeSimulator, roles: dict[str, str], role: str
) -> None:
    cid = roles[role]
    expected_costs, expected_breakdowns = EXPECTED_DAYS[role]

    served_costs, served_breakdowns = costs_days(sim, cid), breakdowns_days(sim, cid)

    in_window = [day for day in served_costs if FIRST_DAY <= day < END_DAY]
    assert in_window == expected_costs
    assert [day for day in served_breakdowns if FIRST_DAY <= day < END_DAY] == expected_breakdowns
    assert served_costs == sim.billed_days(cid, "costs", *AROUND_DAYS)
    assert served_breakdowns == sim.billed_days(cid, "invoice_breakdowns", *AROUND_DAYS)
    assert [day for day in WINDOW if sim.costs_for(cid, day) is not None] == expected_costs
    assert [day for day in WINDOW if sim.breakdowns_for(cid, day, day + dt.timedelta(days=1))] == (
        expected_breakdowns
    )


def test_roles_are_listed_as_the_clock_moves(sim: MetronomeSimulator, roles: dict[str, str]) -> None:
    def listed(**params: Any) -> set[str]:
        return {role for role, cid in roles.items() if cid in listed_ids(sim, **params)}

    always = {"no_contract", "no_plan", "plan_ends_inside", "plan_starts_inside"}
    sim.now = at(MIDDLE, 12)
    assert listed() == always | {"created_inside", "archived_inside", "archived_after"}
    assert listed(only_archived="true") == {"archived_before"}
    sim.now = at(END_DAY + dt.timedelta(days=2))
    assert listed() == always | {"created_inside", "created_after"}
    assert listed(only_archived="true") == {"archived_before", "archived_inside", "archived_after"}


def test_a_customer_without_a_contract_has_empty_breakdowns(
    sim: MetronomeSimulator, roles: dict[str, str]
) -> None:
    for params in (AROUND, {**AROUND, "window_size": "hour", "ending_before": "2024-01-30T00:00:00Z"}):
        answer = get(sim, breakdowns_path(roles["no_contract"]), **params)
        assert (answer.status_code, answer.json()) == (200, {"data": [], "next_page": None})
    no_plan = get(sim, costs_path(roles["no_plan"]), **AROUND)
    assert (no_plan.status_code, no_plan.json()) == (200, {"data": [], "next_page": None})


def test_hourly_breakdowns_follow_the_days(sim: MetronomeSimulator, roles: dict[str, str]) -> None:
    cid = roles["archived_inside"]  # archived at 15:00 on the middle day

    hours = [
        invoice["breakdown_start_timestamp"]
        for page in all_pages(
            sim,
            breakdowns_path(cid),
            window_size="hour",
            starting_on="2024-02-04T00:00:00Z",
            ending_before="2024-02-06T00:00:00Z",
        )
        for invoice in page
    ]

    assert sorted(set(hours)) == [f"2024-02-04T{hour:02d}:00:00Z" for hour in range(24)]


def test_the_delay_and_withheld_days_still_apply_on_top(
    sim: MetronomeSimulator, roles: dict[str, str]
) -> None:
    cid = roles["created_inside"]
    sim.now = at(MIDDLE + dt.timedelta(days=1), 1)  # the middle day ended an hour ago, the delay is 2 hours

    assert costs_days(sim, cid) == breakdowns_days(sim, cid) == []
    sim.now = at(MIDDLE + dt.timedelta(days=2), 3)
    assert costs_days(sim, cid) == breakdowns_days(sim, cid) == [MIDDLE, MIDDLE + dt.timedelta(days=1)]
    sim.withhold(cid, [MIDDLE])
    assert costs_days(sim, cid) == breakdowns_days(sim, cid) == [MIDDLE + dt.timedelta(days=1)]
    assert sim.billed_days(cid, "costs", MIDDLE, MIDDLE + dt.timedelta(days=2)) == [
        MIDDLE,
        MIDDLE + dt.timedelta(days=1),
    ]


def test_billing_periods_bound_the_days(sim: MetronomeSimulator) -> None:
    cid = sim.add_customer(
        created_at=at(dt.date(2023, 1, 1)),
        archived_at=at(dt.date(2024, 2, 10)),  # at midnight: 2024-02-10 is not billed
        billing_start=dt.date(2024, 1, 31),
        billing_end=dt.date(2024, 2, 11),
    )

    assert costs_days(sim, cid) == days(dt.date(2024, 1, 31), dt.date(2024, 2, 10))
    assert sim.billed_days(cid, "invoice_breakdowns", dt.date(2024, 2, 5), dt.date(2024, 2, 7)) == [
        dt.date(2024, 2, 5),
        dt.date(2024, 2, 6),
    ]


# -- the command line -----------------------------------------------------------------------------


def test_the_command_line_adds_customers_and_lifecycle_roles(tmp_path: Path) -> None:
    specs = [
        "created_at=2024-02-04T09:30:00Z,archived_at=2024-02-06T00:00:00Z,plan=no,name=Acme Widgets",
        "created_at=2023-06-01T00:00:00+02:00,contract=no,billing_start=2024-02-02,billing_end=2024-02-05",
    ]
    options = ["--now", "2024-02-05T12:00:00Z", "--lifecycle-window", "2024-02-01:2024-02-08"]
    options += [argument for spec in specs for argument in ("--customer", spec)]

    with standalone_simulator(tmp_path, *options, extra_lines=2 + len(EXPECTED_DAYS)) as standalone:
        printed = dict(line.removeprefix("Customer ").split(": ", 1)[::-1] for line in standalone.lines[1:])
        url = standalone.url

        def served(path: str) -> list[Any]:
            params = {"starting_on": "2024-01-25T00:00:00Z", "ending_before": "2024-02-12T00:00:00Z"}
            return requests.get(url + path, params=params, headers=AUTH, timeout=10).json()["data"]

        active = requests.get(url + "/v1/customers?limit=100", headers=AUTH, timeout=10).json()["data"]
        acme, second = printed["--customer 1"], printed["--customer 2"]
        acme_costs, acme_breakdowns = served(costs_path(acme)), served(breakdowns_path(acme))
        second_costs, second_breakdowns = served(costs_path(second)), served(breakdowns_path(second))
        no_plan_costs = served(costs_path(printed["no_plan"]))

    assert list(printed) == ["--customer 1", "--customer 2", *EXPECTED_DAYS]
    # The ids the Python API gives: they depend on the seed and on how many were added before.
    local = MetronomeSimulator()
    assert printed["--customer 1"] == local.add_customer(created_at=at(MIDDLE, 9, 30))
    assert printed["--customer 2"] == local.add_customer(created_at=at(dt.date(2023, 5, 31), 22))
    assert local.add_lifecycle_customers(FIRST_DAY, END_DAY) == {
        role: printed[role] for role in EXPECTED_DAYS
    }
    by_id = {customer["id"]: customer for customer in active}
    assert by_id[acme]["name"] == "Acme Widgets"
    assert by_id[second]["created_at"] == "2023-05-31T22:00:00Z"
    assert acme_costs == []
    assert sorted({item["breakdown_start_timestamp"][:10] for item in acme_breakdowns}) == [
        "2024-02-04"  # 2024-02-05 is not over yet
    ]
    assert [window["start_timestamp"][:10] for window in second_costs] == [
        "2024-02-02",
        "2024-02-03",
        "2024-02-04",
    ]
    assert second_breakdowns == []
    assert no_plan_costs == []
    assert printed["created_after"] not in by_id


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--customer", "plan=no"], "created_at=<RFC 3339 timestamp> is required"),
        (["--customer", "created_at=2024-01-01T00:00:00Z,colour=red"], "unknown key 'colour'"),
        (["--customer", "created_at=2024-01-01T00:00:00Z,plan=maybe"], "plan must be yes or no"),
        (["--customer", "created_at=2024-01-01"], "not an RFC 3339 timestamp"),
        (["--customer", "created_at=2024-01-01T00:00:00Z,billing_end=soon"], "not a YYYY-MM-DD date"),
        (["--customer", "created_at=2024-01-01T00:00:00Z,plan"], "expected key=value"),
        (["--customer", "created_at=2024-01-01T00:00:00Z,plan=no,plan=yes"], "plan is given twice"),
        (
            ["--customer", "created_at=2024-01-02T00:00:00Z,archived_at=2024-01-01T00:00:00Z"],
            "archived_at must be after created_at",
        ),
        (["--lifecycle-window", "2024-02-08:2024-02-01"], "END_DAY must be after FIRST_DAY"),
        (["--lifecycle-window", "2024-02-01"], "expected FIRST_DAY:END_DAY"),
    ],
)
def test_the_command_line_refuses_bad_customers(
    capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(arguments)

    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {arguments[0]}: " in error
    assert message in error
