"""docs/simulator.md stays true: its Python blocks run, its tables are the code's, its commands work.

A Python block marked ``<!-- run -->`` on the line before its fence runs in a fresh interpreter; the
control-client commands of the page run for real against a simulator started as the page says.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_metronome.testing import MetronomeSimulator
from airflow_provider_metronome.testing.__main__ import main
from tests.support.simulator import standalone_simulator

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "simulator.md"
TEXT = PAGE.read_text(encoding="utf-8")
MODULE = "python -m airflow_provider_metronome.testing"
CONTROL = f"{MODULE} control"
DOC_URL = "http://127.0.0.1:8080"
MIN_RUN_BLOCKS = 8

RUN_BLOCK = re.compile(r"^<!-- run -->\n```python\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)
PYTHON_FENCE = re.compile(r"^```python$", re.MULTILINE)
SHELL_BLOCK = re.compile(
    r"^(?P<indent> *)```(?:bash|console)\n(?P<body>.*?)^(?P=indent)```$", re.MULTILINE | re.DOTALL
)
JSON_BLOCK = re.compile(r"^```json\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def section(heading: str) -> str:
    """The page's text under ``heading``, up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = TEXT.index(f"\n{heading}\n")
    following = re.compile(rf"^#{{1,{len(level)}}} ", re.MULTILINE)
    end = following.search(TEXT, start + len(heading) + 2)
    return TEXT[start : len(TEXT) if end is None else end.start()]


def shell_lines(text: str) -> list[str]:
    """The commands of the shell blocks in ``text``, continuation lines joined."""
    lines = []
    for block in SHELL_BLOCK.finditer(text):
        joined = re.sub(r"\\\n\s*", "", block["body"])
        lines += [line.strip() for line in joined.splitlines() if line.strip()]
    return lines


def table_cells(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in ``text`` (header and separator rows included)."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def run_blocks() -> list[str]:
    return [match["code"] for match in RUN_BLOCK.finditer(TEXT)]


# -- the Python blocks ---------------------------------------------------------------------------------------


def test_every_python_block_is_marked_to_run() -> None:
    assert len(PYTHON_FENCE.findall(TEXT)) == len(run_blocks())
    assert len(run_blocks()) >= MIN_RUN_BLOCKS


@pytest.mark.parametrize("code", run_blocks(), ids=[f"block-{n}" for n in range(1, len(run_blocks()) + 1)])
def test_the_python_block_runs(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )

    assert result.returncode == 0, f"{code}\n{result.stderr}"


# -- the tables are the code's --------------------------------------------------------------------------------


def test_the_command_line_table_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    documented = {
        cells[0].strip("`").split(" ")[0]
        for cells in table_cells(section("### From the command line"))
        if cells[0].startswith("`--")
    }
    with pytest.raises(SystemExit):
        main(["--help"])

    options = set(re.findall(r"^  (--[a-z][a-z-]*)", capsys.readouterr().out, re.MULTILINE))

    assert documented == options - {"--help"}


def test_the_client_table_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    documented = {
        cells[0].strip("`").split(" ")[0]
        for cells in table_cells(section("## The control client"))
        if cells[0].startswith("`")
    }
    with pytest.raises(SystemExit):
        main(["control", "--help"])

    # A long command's help starts on the next line.
    commands = set(re.findall(r"^    ([a-z][a-z-]*)(?:  |$)", capsys.readouterr().out, re.MULTILINE))

    assert documented == commands


def endpoint_rows() -> list[tuple[str, str, Any]]:
    """Each documented control request: method, path and the body the row shows (None: none)."""
    rows = []
    for cells in table_cells(section("## The control endpoint")):
        if cells[0] not in {"GET", "POST", "PUT", "DELETE"}:
            continue
        body = re.match(r"`(\{.*?\})`", cells[2])
        rows.append((cells[0], cells[1].strip("`"), None if body is None else json.loads(body[1])))
    return rows


def test_every_documented_control_request_is_served() -> None:
    with MetronomeSimulator(now=dt.datetime(2024, 1, 10, 6, tzinfo=dt.timezone.utc)) as sim:
        headers = {"Authorization": f"Bearer {sim.token}"}
        customer_id = sim.active_customer_ids[0]
        for method, path, shown in endpoint_rows():
            body = shown
            if shown is not None and shown.get("customer_id") == "<id>":
                body = {**shown, "customer_id": customer_id}

            answer = requests.request(method, sim.url + path, json=body, headers=headers, timeout=10)

            assert answer.status_code in {200, 201}, (method, path, answer.text)
        listed = requests.get(f"{sim.url}/_simulator/", headers=headers, timeout=10).json()["message"]

    served = set(re.findall(r"(GET|POST|PUT|DELETE) (/_simulator/[a-z-]+)", listed))
    assert {(method, path) for method, path, _ in endpoint_rows()} == served


def test_the_status_example_has_the_shape_of_a_status() -> None:
    (example,) = [
        json.loads(block["body"]) for block in JSON_BLOCK.finditer(section("## The control endpoint"))
    ]
    with MetronomeSimulator(now=dt.datetime(2024, 1, 10, 6, tzinfo=dt.timezone.utc)) as sim:
        status = requests.get(
            f"{sim.url}/_simulator/status", headers={"Authorization": f"Bearer {sim.token}"}, timeout=10
        ).json()

    assert list(example) == list(status)
    assert list(example["requests"]) == list(status["requests"])
    assert list(example["faults"][0]) == ["kind", "status_code", "path", "remaining", "probability", "seed"]


# -- the commands ----------------------------------------------------------------------------------------------


def control_command(line: str, url: str) -> list[str]:
    """A documented ``python -m ... control`` line, pointed at ``url`` and run with this interpreter."""
    assert line.startswith(CONTROL), line
    assert DOC_URL in line, line
    return [sys.executable, *shlex.split(line.replace(DOC_URL, url))[1:]]


def command_words(line: str) -> list[str]:
    """The client command of a documented control line and its arguments: what follows the options."""
    words = shlex.split(line)
    return words[words.index("--token") + 2 :]


def run_control(line: str, url: str) -> dict[str, Any]:
    result = subprocess.run(
        control_command(line, url), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{line}\n{result.stderr}"
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def has_day(url: str, token: str, customer_id: str, day: dt.date) -> bool:
    """Whether the customer's daily breakdowns (what the daily DAG reads) have ``day``."""
    start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
    invoices = requests.get(
        f"{url}/v1/customers/{customer_id}/invoices/breakdowns",
        params={
            "starting_on": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_before": (start + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()["data"]
    return bool(invoices)


def test_the_recipe_rehearses_a_late_day(tmp_path: Path) -> None:
    lines = shell_lines(section("## Rehearse a late day in your own Airflow"))
    (start,) = [line for line in lines if line.startswith(f"{MODULE} --")]
    (connection,) = [line for line in lines if line.startswith("airflow connections add")]
    controls = [line for line in lines if line.startswith(CONTROL)]
    arguments = shlex.split(start)[3:]
    token = arguments[arguments.index("--token") + 1]
    conn = json.loads(shlex.split(connection)[-1])
    assert (conn["host"], conn["password"]) == (DOC_URL, token)
    assert [command_words(line) for line in controls] == [
        ["withhold", "yesterday"],
        ["status"],
        ["release", "yesterday"],
    ]
    arguments[arguments.index("--port") + 1] = "0"

    with standalone_simulator(tmp_path, *arguments) as running:
        url = running.url
        customers = requests.get(
            f"{url}/v1/customers", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()["data"]
        sample = [customer["id"] for customer in customers[:3]]
        seen_by_kind = {}
        for line in controls:
            answer = run_control(line, url)
            yesterday = dt.date.fromisoformat(answer["now"][:10]) - dt.timedelta(days=1)
            command = command_words(line)[0]
            if command == "withhold":
                assert answer["withheld"]["all_customers"] == [yesterday.isoformat()]
                assert not any(has_day(url, token, customer_id, yesterday) for customer_id in sample)
            elif command == "release":
                assert answer["withheld"]["all_customers"] == []
                assert all(has_day(url, token, customer_id, yesterday) for customer_id in sample)
            else:
                seen_by_kind = answer["requests"]["by_kind"]

    assert seen_by_kind == {"customers": 1, "costs": 0, "breakdowns": 3, "other": 0}


def test_the_client_examples_run() -> None:
    lines = [line for line in shell_lines(section("## The control client")) if line.startswith(CONTROL)]
    assert lines
    token = shlex.split(lines[0])[shlex.split(lines[0]).index("--token") + 1]

    with MetronomeSimulator(token=token) as sim:
        answers = [run_control(line, sim.url) for line in lines]
        assert (
            requests.get(
                f"{sim.url}/v1/customers/{sim.costs_customer_ids[0]}/costs",
                params={"starting_on": "2024-01-01T00:00:00Z", "ending_before": "2024-01-02T00:00:00Z"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ).status_code
            == 503
        )

    assert answers[-1]["faults"][0]["path"] == "/costs"
    assert answers[-1]["rate_limit"] == {"rate": 8.0, "burst": 8.0, "retry_after": "none"}
    assert answers[-1]["now"] == "2024-01-10T06:00:00Z"
