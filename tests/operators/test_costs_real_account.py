"""MetronomeCostsOperator on a real account's data, against the simulator over real HTTP.

Customers created and archived at any time, customers without a contract or a plan, a listing that
repeats itself, answers of another customer, numbers that floats cannot hold, values of the wrong
type, text that breaks lines, and transient failures that outlast the hook's retries.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_metronome._compat import AirflowException
from airflow_provider_metronome.engine import fetch
from airflow_provider_metronome.exceptions import MetronomeResponseError, MetronomeTransientError
from airflow_provider_metronome.operators.costs import MetronomeCostsOperator
from airflow_provider_metronome.output.reading import summarize_output
from airflow_provider_metronome.testing import Fault, MetronomeSimulator

FIRST = dt.date(2024, 1, 5)
END = dt.date(2024, 1, 15)
MIDDLE = FIRST + (END - FIRST) / 2
SOURCES = ["costs", "invoice_breakdowns"]
DAY_FIELD = {"costs": "start_timestamp", "invoice_breakdowns": "breakdown_start_timestamp"}
PREVIOUS = b'{"customer_id":"previous run"}\n'
# Long decimals, integers above 2**53, exponents, a negative zero: what no float round trip keeps.
EXACT_TEXTS = ["12.345678901234567890123", "9007199254740993", "1e5", "-0.0", "1.5E-7", "12.50"]


def operator(**kwargs: Any) -> MetronomeCostsOperator:
    kwargs.setdefault("task_id", "fetch_costs")
    kwargs.setdefault("starting_on", FIRST.isoformat())
    kwargs.setdefault("ending_before", END.isoformat())
    return MetronomeCostsOperator(**kwargs)


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def written_days(path: Path, source: str) -> list[tuple[str, str]]:
    """(customer, day) of every raw record, in the order written."""
    return [(record["customer_id"], record[DAY_FIELD[source]][:10]) for record in lines_of(path)]


def model_days(sim: MetronomeSimulator, source: str, customer_ids: list[str]) -> list[tuple[str, str]]:
    """The simulator's own model of what a raw run of the window writes: one object per billed day.

    Breakdowns have one invoice per credit type with usage on a day, so a day may show more than once.
    """
    pairs = []
    for customer_id in sorted(customer_ids):
        for day in sim.billed_days(customer_id, source, FIRST, END):
            if source == "costs":
                pairs.append((customer_id, str(day)))
            else:
                invoices = sim.breakdowns_for(customer_id, day, day + dt.timedelta(days=1))
                pairs.extend((customer_id, str(day)) for _ in invoices)
    return pairs


def billed_in_window(sim: MetronomeSimulator, source: str) -> list[str]:
    """Every customer listed now, active or archived, that ``source`` serves, with days billed in the window."""
    refused = set(sim.unique_metric_customer_ids) if source == "costs" else set()
    listed = [*sim.active_customer_ids, *sim.archived_customer_ids]
    return [cid for cid in listed if cid not in refused and sim.billed_days(cid, source, FIRST, END)]


# -- the customers of a window ------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_every_customer_with_costs_in_the_window_is_written_once_and_the_rest_are_not_asked(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    roles = sim.add_lifecycle_customers(FIRST, END)
    target = tmp_path / "costs.jsonl"

    manifest = operator(
        source=source, record_format="raw", on_customer_error="skip", output_uri=f"file://{target}"
    ).execute({})

    written = written_days(target, source)
    assert written == model_days(sim, source, billed_in_window(sim, source))
    # The archived customers still have the days they were active; the rest were never asked.
    customers = {customer for customer, _ in written}
    assert {roles["archived_after"], roles["archived_inside"], roles["created_inside"]} <= customers
    for role in ("archived_before", "created_after"):
        assert not sim.requests_for(f"/v1/customers/{roles[role]}/")
    assert manifest["customer_set"] == {
        "active": len(sim.active_customer_ids) - 1,  # created_after is active now, but after the window
        "archived": 2,
        "created_after_window": 1,
        # archived_before, and the simulator's own customers archived in 2020
        "archived_before_window": 1 + len(sim.archived_customer_ids) - 3,
    }


@pytest.mark.parametrize("source", SOURCES)
def test_customers_with_nothing_billed_do_not_fail_the_run_and_are_named_per_day(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    roles = sim.add_lifecycle_customers(FIRST, END)

    manifest = operator(
        source=source, on_customer_error="skip", output_uri=f"file://{tmp_path}/costs.jsonl.gz"
    ).execute({})

    assert manifest["missing_days"] == {}
    not_billed = manifest["not_billed"]
    unbilled_role = "no_plan" if source == "costs" else "no_contract"
    for day in (FIRST, MIDDLE - dt.timedelta(days=1), END - dt.timedelta(days=1)):
        assert roles[unbilled_role] in not_billed[str(day)]["customer_ids"]
    assert roles["created_inside"] in not_billed[str(FIRST)]["customer_ids"]
    assert roles["created_inside"] not in not_billed.get(str(MIDDLE), {}).get("customer_ids", [])
    assert roles["plan_starts_inside"] in not_billed[str(FIRST)]["customer_ids"]
    assert roles["plan_ends_inside"] in not_billed[str(END - dt.timedelta(days=1))]["customer_ids"]
    assert roles["archived_inside"] in not_billed[str(END - dt.timedelta(days=1))]["customer_ids"]
    assert all(entry["customers"] == len(entry["customer_ids"]) for entry in not_billed.values())


@pytest.mark.parametrize("source", SOURCES)
def test_a_day_the_account_has_not_produced_still_fails_before_writing(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    sim.add_lifecycle_customers(FIRST, END)
    last = END - dt.timedelta(days=1)
    # The account's last day is late for every customer: the clock is before it is produced.
    sim.now = dt.datetime.combine(END, dt.time(1), tzinfo=dt.timezone.utc)
    target = tmp_path / "costs.jsonl"
    target.write_bytes(PREVIOUS)

    with pytest.raises(AirflowException, match=rf"no {source} yet for customer .* on {last} "):
        operator(source=source, on_customer_error="skip", output_uri=f"file://{target}").execute({})

    assert target.read_bytes() == PREVIOUS


def test_a_customer_late_alone_is_told_from_one_billed_until_the_day_before_for_a_single_customer(
    sim: MetronomeSimulator,
) -> None:
    customer = sorted(sim.costs_customer_ids)[0]
    sim.now = dt.datetime.combine(END, dt.time(1), tzinfo=dt.timezone.utc)

    # The customer was billed the day before, so the day it lacks is not produced yet.
    with pytest.raises(AirflowException, match=rf"on {END - dt.timedelta(days=1)} "):
        operator(
            customer_ids=customer,
            starting_on=(END - dt.timedelta(days=1)).isoformat(),
            ending_before=END.isoformat(),
        ).execute({})

    # A customer without a plan has nothing the day before either: nothing billed, not late.
    unbilled = sim.add_customer(created_at=dt.datetime(2023, 1, 1, tzinfo=dt.timezone.utc), plan=False)
    sim.now = dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc)
    records = operator(
        customer_ids=unbilled,
        starting_on=FIRST.isoformat(),
        ending_before=(FIRST + dt.timedelta(days=1)).isoformat(),
    ).execute({})
    assert records == []


# -- the listing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [Fault.repeat_customers(3), Fault.insert_customer()], ids=["repeat", "insert"]
)
def test_a_listing_that_repeats_customers_writes_each_once(
    sim: MetronomeSimulator, tmp_path: Path, fault: Fault
) -> None:
    sim.set_customer_count(150)  # two listing pages
    expected = billed_in_window(sim, "costs")
    sim.inject(fault, "/v1/customers")
    target = tmp_path / "costs.jsonl"

    manifest = operator(record_format="raw", on_customer_error="skip", output_uri=f"file://{target}").execute(
        {}
    )

    written = written_days(target, "costs")
    assert len(written) == len(set(written))
    assert {customer for customer, _ in written} >= set(expected)
    assert manifest["customers"] == len({customer for customer, _ in written})


def test_a_listing_page_of_nothing_but_repeats_fails_at_once(sim: MetronomeSimulator, tmp_path: Path) -> None:
    sim.set_customer_count(150)
    sim.inject(Fault.seen_customers_page(), "/v1/customers", times=None)

    with pytest.raises(MetronomeResponseError, match="only customers already listed"):
        operator(output_uri=f"file://{tmp_path}/costs.jsonl").execute({})

    # Customers of the first page are fetched meanwhile; the listing stops at its second page.
    assert [record.path for record in sim.requests].count("/v1/customers") == 2
    assert not tmp_path.joinpath("costs.jsonl").exists()


# -- answers that break the contract ----------------------------------------------------------------------


def test_a_breakdown_of_another_customer_is_a_response_error(sim: MetronomeSimulator, tmp_path: Path) -> None:
    customers = sorted(sim.active_customer_ids)[:3]
    sim.inject(Fault.foreign_customer(), f"/v1/customers/{customers[1]}/")
    target = tmp_path / "costs.jsonl"
    target.write_bytes(PREVIOUS)

    with pytest.raises(
        MetronomeResponseError, match=rf"customer {customers[1]} holds an invoice of customer"
    ):
        operator(customer_ids=customers, source="invoice_breakdowns", output_uri=f"file://{target}").execute(
            {}
        )

    assert target.read_bytes() == PREVIOUS


@pytest.mark.parametrize("kind", ["string", "boolean"])
@pytest.mark.parametrize("source", SOURCES)
def test_a_number_of_the_wrong_type_is_a_broken_answer_naming_the_field(
    sim: MetronomeSimulator, tmp_path: Path, source: str, kind: str
) -> None:
    customer = sorted(sim.costs_customer_ids)[0]
    sim.inject(Fault.wrong_type(kind), f"/v1/customers/{customer}/")  # type: ignore[arg-type]
    target = tmp_path / "costs.jsonl"
    target.write_bytes(PREVIOUS)
    sent = "a string ('" if kind == "string" else "a boolean (True)"

    with pytest.raises(MetronomeResponseError) as caught:
        operator(customer_ids=customer, source=source, output_uri=f"file://{target}").execute({})

    message = str(caught.value)
    assert customer in message
    assert "must be a JSON number, but is " + sent in message
    assert re.search(r"data\.[0-9]+\.[a-z_.0-9-]*(cost|total)", message), message
    assert target.read_bytes() == PREVIOUS


def test_a_key_twice_in_one_object_is_a_broken_answer(sim: MetronomeSimulator, tmp_path: Path) -> None:
    customer = sorted(sim.costs_customer_ids)[0]
    sim.inject(Fault.duplicate_key(), f"/v1/customers/{customer}/")

    with pytest.raises(MetronomeResponseError, match=r'names the key "(cost|total)" twice'):
        operator(customer_ids=customer, output_uri=f"file://{tmp_path}/costs.jsonl").execute({})

    assert not tmp_path.joinpath("costs.jsonl").exists()


# -- values as sent ---------------------------------------------------------------------------------------


def number_texts(body: bytes) -> list[str]:
    """The money and quantity numbers of a body, as written."""
    return re.findall(rb'"(?:cost|total|quantity)":\s*(-?[0-9][0-9.eE+-]*)', body)  # type: ignore[return-value]


@pytest.mark.parametrize("source", SOURCES)
def test_raw_writes_every_number_with_the_digits_metronome_sent(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    customer = sorted(sim.costs_customer_ids)[0]
    path = f"/v1/customers/{customer}/"
    sim.inject(Fault.exact_numbers(EXACT_TEXTS), path)
    target = tmp_path / "costs.jsonl"

    operator(
        customer_ids=customer, source=source, record_format="raw", output_uri=f"file://{target}"
    ).execute({})

    sent = number_texts(sim.last_body(path))
    assert {text.decode() for text in sent} == set(EXACT_TEXTS)
    # The day before the window was asked too (it costs nothing): what was written is the rest.
    assert number_texts(target.read_bytes()) == sent[len(sent) - len(number_texts(target.read_bytes())) :]
    assert all(text in sent for text in number_texts(target.read_bytes()))


@pytest.mark.parametrize("source", SOURCES)
def test_line_items_keep_costs_and_quantities_exact(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    customer = sorted(sim.costs_customer_ids)[0]
    sim.inject(Fault.exact_numbers(EXACT_TEXTS), f"/v1/customers/{customer}/")
    target = tmp_path / "costs.jsonl"

    operator(
        customer_ids=customer, source=source, record_format="line_items", output_uri=f"file://{target}"
    ).execute({})

    written = {text.decode() for text in number_texts(target.read_bytes())}
    assert written
    assert written <= set(EXACT_TEXTS)


def test_summaries_total_exactly_whatever_the_magnitude(sim: MetronomeSimulator, tmp_path: Path) -> None:
    customer = sorted(sim.costs_customer_ids)[0]
    texts = ["123456789012345678901234567890.01", "0.000000000000000000000000000001"]
    sim.inject(Fault.exact_numbers(texts), f"/v1/customers/{customer}/")
    target = tmp_path / "costs.jsonl"

    operator(customer_ids=customer, record_format="line_items", output_uri=f"file://{target}").execute({})

    expected: dict[str, Decimal] = {}
    with decimal.localcontext(decimal.Context(prec=200)):
        for line in target.read_bytes().splitlines():
            record = json.loads(line, parse_float=Decimal, parse_int=Decimal)
            name = record["credit_type_name"]
            expected[name] = expected.get(name, Decimal(0)) + record["cost"]
    summary = summarize_output(target)
    assert summary["totals"] == expected
    # More digits than a float (17) or Decimal's default context (28) keeps.
    assert all(len(total.as_tuple().digits) > 40 for total in summary["totals"].values())
    raw_costs = re.findall(rb'"cost":([0-9.]+)', target.read_bytes())
    with decimal.localcontext(decimal.Context(prec=200)):
        assert sum(map(Decimal, map(bytes.decode, raw_costs))) == sum(summary["totals"].values())


@pytest.mark.parametrize("source", SOURCES)
def test_line_and_paragraph_separators_are_escaped_one_record_a_line(
    sim: MetronomeSimulator, tmp_path: Path, source: str
) -> None:
    customer = sorted(sim.costs_customer_ids)[0]
    sim.inject(Fault.odd_text(), f"/v1/customers/{customer}/", times=None)
    target = tmp_path / "costs.jsonl"

    manifest = operator(
        customer_ids=customer, source=source, record_format="line_items", output_uri=f"file://{target}"
    ).execute({})

    text = target.read_bytes().decode()
    assert len(text.splitlines()) == manifest["records"]
    names = [json.loads(line)["line_item_name"] or "" for line in text.splitlines()]
    assert any("\u2028" in name and "\u2029" in name and "\u0085" in name for name in names)


# -- transient failures beyond the hook's retries -------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.html_body(), Fault.status(503)], ids=["html-200", "503"])
def test_a_customer_failing_after_its_retries_is_tried_again_later(
    sim: MetronomeSimulator, tmp_path: Path, fault: Fault
) -> None:
    customers = sorted(sim.costs_customer_ids)[:4]
    calm = operator(customer_ids=customers, output_uri=f"file://{tmp_path}/calm.jsonl").execute({})
    # Three failed attempts in a row: all of the hook's tries (max_retries=2) for that request.
    sim.inject(fault, f"/v1/customers/{customers[2]}/", times=3)

    turbulent = operator(customer_ids=customers, output_uri=f"file://{tmp_path}/turbulent.jsonl").execute({})

    assert (tmp_path / "turbulent.jsonl").read_bytes() == (tmp_path / "calm.jsonl").read_bytes()
    assert turbulent["records"] == calm["records"]


def test_the_run_fails_once_a_customer_has_used_its_tries_again(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    customers = sorted(sim.costs_customer_ids)[:4]
    sim.inject(Fault.html_body(), f"/v1/customers/{customers[1]}/", times=None)

    with pytest.raises(MetronomeTransientError) as caught:
        operator(customer_ids=customers, output_uri=f"file://{tmp_path}/costs.jsonl").execute({})

    message = str(caught.value)
    assert "1 customer(s) failed transiently after every retry" in message
    assert f"Customer {customers[1]}: HTTP 200" in message
    assert "not JSON (text/html" in message
    # Three attempts by the hook, then three more rounds of them by the engine.
    assert len(sim.requests_for(f"/v1/customers/{customers[1]}/")) == 3 * (1 + fetch.RETRIES_PER_CUSTOMER)
    assert not tmp_path.joinpath("costs.jsonl").exists()


def test_a_customer_listing_whose_cursor_never_ends_stops_once_it_goes_round(
    sim: MetronomeSimulator, tmp_path: Path
) -> None:
    sim.set_customer_count(150)  # two listing pages, then the cursor starts over
    sim.inject(Fault.endless_cursor(), "/v1/customers", times=None)

    with pytest.raises(MetronomeResponseError, match="the listing goes round in circles"):
        operator(output_uri=f"file://{tmp_path}/costs.jsonl").execute({})

    assert [record.path for record in sim.requests].count("/v1/customers") == 3
