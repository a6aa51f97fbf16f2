"""Faults that hit a share of requests, drawn from a seeded generator per injection, over real sockets."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_provider_metronome.testing import Fault, MetronomeSimulator
from airflow_provider_metronome.testing.__main__ import main
from tests.support.simulator import standalone_simulator
from tests.testing.simulator_client import AUTH, costs_path

NOW = dt.datetime(2024, 3, 10, 12, tzinfo=dt.timezone.utc)
DAY = {"starting_on": "2024-02-01T00:00:00Z", "ending_before": "2024-02-02T00:00:00Z"}


@pytest.fixture
def sim() -> Iterator[MetronomeSimulator]:
    with MetronomeSimulator(now=NOW) as simulator:
        yield simulator


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers.update(AUTH)
        yield client


def statuses(session: requests.Session, url: str, count: int, **params: str) -> list[int]:
    return [session.get(url, params=params, timeout=10).status_code for _ in range(count)]


def expected_hits(seed: int, probability: float, count: int) -> list[bool]:
    """What ``random.Random(seed)`` draws for ``count`` requests, as documented."""
    draws = random.Random(seed)
    return [draws.random() < probability for _ in range(count)]


def test_a_probability_faults_about_that_share_of_requests(
    sim: MetronomeSimulator, session: requests.Session
) -> None:
    sim.inject(Fault.status(503), probability=0.2, seed=11)

    answers = statuses(session, sim.url + "/v1/customers", 1000, limit="1")

    assert set(answers) == {200, 503}
    # 0.2 +- 0.04 is 3 standard deviations of a share of 1,000 draws.
    assert abs(answers.count(503) / len(answers) - 0.2) < 0.04
    assert [record.fault for record in sim.requests].count("status") == answers.count(503)
    assert all(record.fault is None for record in sim.requests if record.status == 200)


def test_the_same_seed_gives_the_same_faults(sim: MetronomeSimulator, session: requests.Session) -> None:
    url = sim.url + "/v1/customers"

    def run(seed: int) -> list[bool]:
        sim.clear_faults()
        sim.inject(Fault.html_body(), probability=0.3, seed=seed)
        answers = [session.get(url, params={"limit": 1}, timeout=10) for _ in range(200)]
        return [answer.headers["Content-Type"].startswith("text/html") for answer in answers]

    first, again, other = run(5), run(5), run(6)

    assert first == again == expected_hits(5, 0.3, 200)
    assert other != first


def test_only_the_requests_a_fault_could_alter_draw(
    sim: MetronomeSimulator, session: requests.Session
) -> None:
    customer_id = sim.costs_customer_ids[0]
    sim.inject(Fault.status(500), costs_path(customer_id), probability=0.5, seed=3)

    costs = []
    for _ in range(60):
        # Requests to other paths in between take nothing from the injection's generator.
        assert session.get(sim.url + "/v1/customers", params={"limit": 1}, timeout=10).status_code == 200
        costs.append(
            session.get(sim.url + costs_path(customer_id), params=DAY, timeout=10).status_code == 500
        )

    assert costs == expected_hits(3, 0.5, 60)


def test_times_counts_the_faulted_answers(sim: MetronomeSimulator, session: requests.Session) -> None:
    sim.inject(Fault.status(502), times=3, probability=0.25, seed=1)

    answers = statuses(session, sim.url + "/v1/customers", 100, limit="1")

    assert answers.count(502) == 3
    last_fault = max(index for index, status in enumerate(answers) if status == 502)
    hits = expected_hits(1, 0.25, 100)
    assert last_fault == [index for index, hit in enumerate(hits) if hit][2]


def test_a_fault_that_does_not_fire_leaves_the_request_to_the_next(
    sim: MetronomeSimulator, session: requests.Session
) -> None:
    sim.inject(Fault.html_body(), probability=0.1, seed=2)
    sim.inject(Fault.status(503), probability=1.0)

    answers = [session.get(sim.url + "/v1/customers", timeout=10) for _ in range(100)]

    html = [answer.status_code == 200 for answer in answers]
    assert html == expected_hits(2, 0.1, 100)
    assert all(
        answer.status_code == 503 for answer, is_html in zip(answers, html, strict=True) if not is_html
    )


@pytest.mark.parametrize("probability", [-0.1, 1.5, math.nan])
def test_a_probability_outside_zero_to_one_is_refused(sim: MetronomeSimulator, probability: float) -> None:
    with pytest.raises(ValueError, match="probability must be between 0 and 1"):
        sim.inject(Fault.drop(), probability=probability)


# -- the command line -----------------------------------------------------------------------------


def test_probability_faults_from_the_command_line(tmp_path: Path, session: requests.Session) -> None:
    options = [
        "--now",
        "2024-03-10T12:00:00Z",
        "--fault",
        "status=503:/costs@0.4,9",
        "--fault",
        "drop::2@0.5",
    ]

    with standalone_simulator(tmp_path, *options) as standalone:
        url = standalone.url
        dropped: list[bool] = []
        while sum(dropped) < 2:  # drop: on any path, twice, each request with probability 0.5
            try:
                session.get(url + "/v1/customers", timeout=10)
                dropped.append(False)
            except requests.ConnectionError:
                dropped.append(True)
        listing = statuses(session, url + "/v1/customers", 20, limit="1")
        customer_id = session.get(url + "/v1/customers", timeout=10).json()["data"][0]["id"]
        costs = [status == 503 for status in statuses(session, url + costs_path(customer_id), 80, **DAY)]

    assert dropped == expected_hits(0, 0.5, len(dropped))
    assert listing == [200] * 20
    assert costs == expected_hits(9, 0.4, 80)


def test_the_command_line_documents_the_probability_form(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--fault KIND[:PATH_SUBSTRING[:TIMES]][@PROBABILITY[,SEED]]" in text
    assert "status=CODE" in text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("drop@2", "PROBABILITY must be a number from 0 to 1, got '2'"),
        ("drop@often", "PROBABILITY must be a number from 0 to 1, got 'often'"),
        ("drop::3@0.5,x", "SEED must be an integer, got 'x'"),
        ("drop::0@0.5", "TIMES must be a positive count or 'forever'"),
        ("status=99", "status=CODE needs an HTTP status code, got '99'"),
        ("status=", "status=CODE needs an HTTP status code, got ''"),
    ],
)
def test_the_command_line_refuses_bad_probability_faults(
    capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--fault", spec])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err
