"""The order in which an availability check asks customers."""

from __future__ import annotations

from airflow_provider_metronome.engine.availability import asking_order

IDS = [f"c{index:02d}" for index in range(10)]


def test_every_customer_in_order_by_default() -> None:
    assert asking_order(IDS, None, None) == IDS


def test_the_customer_missing_last_time_comes_first() -> None:
    assert asking_order(IDS, "c07", None) == ["c07", *[cid for cid in IDS if cid != "c07"]]


def test_a_customer_no_longer_listed_is_not_asked() -> None:
    assert asking_order(IDS, "gone", None) == IDS


def test_a_sample_spreads_over_the_list_after_the_last_missing_customer() -> None:
    assert asking_order(IDS, None, 3) == ["c00", "c04", "c09"]
    assert asking_order(IDS, "c05", 3) == ["c05", "c00", "c09"]
    assert asking_order(IDS, None, 1) == ["c00"]
    assert asking_order(IDS, None, 20) == IDS
