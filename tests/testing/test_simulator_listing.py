"""A customer listing that misbehaves while it is read: replayed, shifted and looping pages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from tests.testing.simulator_client import FEBRUARY, all_pages, costs_path, get

NOW = dt.datetime(2024, 3, 10, 12, tzinfo=dt.timezone.utc)


@pytest.fixture
def sim() -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(now=NOW) as simulator:
        yield simulator


def ids(page: dict[str, Any]) -> list[str]:
    return [customer["id"] for customer in page["data"]]


def test_repeat_customers_replays_the_end_of_the_previous_page(sim: MetronomeSimulator) -> None:
    expected = sim.active_customer_ids
    sim.inject(Fault.repeat_customers(2), path="/v1/customers")

    first = get(sim, "/v1/customers", limit=10).json()  # no customer before it: the fault waits
    second = get(sim, "/v1/customers", limit=10, next_page=first["next_page"]).json()
    rest = all_pages(sim, "/v1/customers", limit=10, next_page=second["next_page"])

    assert ids(first) == expected[:10]
    assert ids(second) == expected[8:18]
    assert [c["id"] for page in rest for c in page] == expected[18:]
    assert second["next_page"] != first["next_page"]


def test_repeat_customers_one_by_default(sim: MetronomeSimulator) -> None:
    first = get(sim, "/v1/customers", limit=5).json()
    sim.inject(Fault.repeat_customers())

    second = get(sim, "/v1/customers", limit=5, next_page=first["next_page"]).json()

    assert ids(second) == sim.active_customer_ids[4:9]
    with pytest.raises(ValueError, match="count must be at least 1"):
        Fault.repeat_customers(0)


# With seed 3 a new customer's id would sort after the first one's, were it not made to sort first.
@pytest.mark.parametrize("seed", [0, 3])
def test_insert_customer_shifts_the_listing_while_it_is_read(seed: int) -> None:
    with MetronomeSimulator(seed=seed, now=NOW) as sim:
        check_insert_customer(sim)


def check_insert_customer(sim: MetronomeSimulator) -> None:
    before = sim.active_customer_ids
    first = get(sim, "/v1/customers", limit=10).json()
    sim.inject(Fault.insert_customer())

    second = get(sim, "/v1/customers", limit=10, next_page=first["next_page"]).json()
    rest = all_pages(sim, "/v1/customers", limit=10, next_page=second["next_page"])

    after = sim.active_customer_ids
    assert len(after) == len(before) + 1
    (inserted,) = set(after) - set(before)
    assert after == [inserted, *before]
    assert ids(second) == before[9:19]  # the previous page's last customer again
    read = ids(first) + ids(second) + [c["id"] for page in rest for c in page]
    assert sorted(set(read)) == sorted(before)  # the new customer was missed
    assert len(read) == len(before) + 1
    assert sim.customer(inserted)["created_at"] == sim.customer(before[0])["created_at"]
    assert sim.customer(inserted)["archived_at"] is None
    assert inserted in [customer["id"] for customer in sim.customers]
    assert ids(get(sim, "/v1/customers", limit=1).json()) == [inserted]  # a new reading finds it


def test_insert_customer_can_repeat(sim: MetronomeSimulator) -> None:
    before = sim.active_customer_ids
    sim.inject(Fault.insert_customer(), times=None)

    pages = all_pages(sim, "/v1/customers", limit=10)  # 3 pages: 2 customers inserted

    assert len(sim.active_customer_ids) == len(before) + 2
    assert sim.active_customer_ids[2:] == before
    assert [len(page) for page in pages] == [10, 10, 7]
    assert pages[1][0] == pages[0][-1]
    assert pages[2][0] == pages[1][-1]


def test_seen_customers_page_loops_with_fresh_cursors(sim: MetronomeSimulator) -> None:
    first = get(sim, "/v1/customers", limit=10).json()
    sim.inject(Fault.seen_customers_page(), times=None)

    cursors, params = [first["next_page"]], {"limit": 10, "next_page": first["next_page"]}
    for _ in range(5):
        page = get(sim, "/v1/customers", **params).json()
        assert ids(page) == ids(first)
        assert page["next_page"] is not None
        cursors.append(page["next_page"])
        params["next_page"] = page["next_page"]
    sim.clear_faults()
    resumed = get(sim, "/v1/customers", **params).json()

    assert len(set(cursors)) == len(cursors)
    assert ids(resumed) == sim.active_customer_ids[10:20]  # its cursors resume where the loop began


def test_seen_customers_page_only_holds_customers_already_served(sim: MetronomeSimulator) -> None:
    first = get(sim, "/v1/customers", limit=3).json()
    sim.inject(Fault.seen_customers_page())

    # A client that asks for more on its next page still only gets what the first page had.
    looped = get(sim, "/v1/customers", limit=20, next_page=first["next_page"]).json()

    assert ids(looped) == ids(first)


@pytest.mark.parametrize(
    "fault", [Fault.repeat_customers(), Fault.insert_customer(), Fault.seen_customers_page()]
)
def test_customer_page_faults_wait_for_a_customers_page_after_the_first(
    sim: MetronomeSimulator, fault: Fault
) -> None:
    cid = sim.costs_customer_ids[0]
    expected = sim.active_customer_ids
    sim.inject(fault)

    costs = get(sim, costs_path(cid), limit=5, **FEBRUARY).json()
    more_costs = get(sim, costs_path(cid), limit=5, next_page=costs["next_page"], **FEBRUARY).json()
    first = get(sim, "/v1/customers", limit=10).json()
    second = get(sim, "/v1/customers", limit=10, next_page=first["next_page"]).json()

    assert [window["start_timestamp"][:10] for window in more_costs["data"]] == [
        f"2024-02-{day:02d}" for day in range(6, 11)
    ]
    assert ids(first) == expected[:10]
    assert ids(second) != expected[10:20]


def test_insert_customer_waits_for_an_active_listing(sim: MetronomeSimulator) -> None:
    archived = sim.archived_customer_ids
    sim.inject(Fault.insert_customer())

    pages = all_pages(sim, "/v1/customers", only_archived="true", limit=1)

    assert [c["id"] for page in pages for c in page] == archived
    assert len(sim.active_customer_ids) == 25
    first = get(sim, "/v1/customers", limit=10).json()
    get(sim, "/v1/customers", limit=10, next_page=first["next_page"])
    assert len(sim.active_customer_ids) == 26
