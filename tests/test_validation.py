"""The shared argument checks."""

from __future__ import annotations

import pytest

from airflow_provider_metronome.validation import (
    check_customer_ids,
    check_int,
    check_positive_number,
    check_record_format,
)


@pytest.mark.parametrize("value", ["raw", "line_items"])
def test_record_format_accepts_the_two_formats(value: str) -> None:
    assert check_record_format(value) == value


def test_record_format_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"record_format='flat' must be one of 'raw', 'line_items'"):
        check_record_format("flat")


@pytest.mark.parametrize("value", [True, 0, 1.5, "3", None])
def test_int_refuses_bools_floats_text_and_out_of_range(value: object) -> None:
    with pytest.raises(ValueError, match=r"max_workers=.* must be an integer of at least 1\."):
        check_int("max_workers", value, minimum=1)


def test_int_with_a_range_says_the_range() -> None:
    with pytest.raises(ValueError, match=r"page_size=101 must be an integer from 1 to 100\."):
        check_int("page_size", 101, minimum=1, maximum=100)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), True, "5"])
def test_positive_number_refuses_zero_negative_and_non_numbers(value: object) -> None:
    with pytest.raises(
        ValueError, match=r"must be a positive number of requests per second, or None for no cap"
    ):
        check_positive_number("requests_per_second", value, unit="requests per second", none_means="no cap")


def test_positive_number_passes_none_only_when_it_means_something() -> None:
    assert check_positive_number("rps", None, unit="requests per second", none_means="no cap") is None
    with pytest.raises(ValueError, match=r"rps=None must be a positive number of seconds\.$"):
        check_positive_number("rps", None, unit="seconds")


def test_customer_ids_are_sorted_deduplicated_and_canonical() -> None:
    one = "D7ABD0CD-4AE9-4DB7-8676-E986A4EBD8DC"
    two = "0b0f6c1e-1f44-4c55-9d1e-2a3b4c5d6e7f"
    assert check_customer_ids(f"{one}, {two},{one.lower()}") == [two, one.lower()]
