"""``tests/benchmarks/run.py`` writes its results into docs/benchmarks.md: only the regions of the parts it ran.

No benchmark runs here: the page's regions are rewritten from made-up results, and the one part ``main``
runs (``imports``) measures nothing (its measurement is replaced). The benchmarks' own folder is not
collected (tests/benchmarks/conftest.py), so this test lives here.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks import run
from tests.benchmarks.run import PARTS, PageError, Target

PAGE_BEFORE = """# Benchmarks

Prose the script never touches, with `<!-- bench:imports -->` quoted inline.

<!-- bench:targets -->

| part | target | measured | result |
|---|---|---|---|
| fetch | All-customers fetch within 1.3x of the floor | 1.27x | PASS |
| imports | Import overhead under 100 ms | 61 ms | PASS |
| turbulence | Turbulence: 10 of 10 runs | 10 of 10 | PASS |

<!-- /bench:targets -->

More prose.

<!-- bench:fetch -->

### 1. All-customers day fetch

Measured by hand, long ago.

| path | wall (s) |
|---|---:|
| operator | 7.30 |

<!-- /bench:fetch -->

<!-- bench:imports -->

### 4. Import cost in DAG parsing

| step | median ms |
|---|---:|
| operator + sensor modules of this provider | 61 |

<!-- /bench:imports -->

The end.
"""


def region(text: str, name: str) -> str:
    start, end = run.region_span(text, name)
    return text[start:end]


def outside_regions(text: str) -> str:
    """The page without the bodies of its regions: what no run may change."""
    return re.sub(r"(<!-- bench:([\w-]+) -->\n).*?(<!-- /bench:\2 -->)", r"\1\3", text, flags=re.DOTALL)


def test_a_part_rewrites_its_region_and_its_rows_only() -> None:
    lines = [
        "### 4. Import cost in DAG parsing",
        "",
        "| step | median ms |",
        "|---|---:|",
        "| provider | 55 |",
    ]
    targets = [Target("Import overhead under 100 ms", "55 ms", True)]

    after = run.write_part(PAGE_BEFORE, "imports", lines, targets, "Measured by `cmd`, today, on here.")

    assert region(after, "imports") == (
        "\n### 4. Import cost in DAG parsing\n\nMeasured by `cmd`, today, on here.\n\n"
        "| step | median ms |\n|---|---:|\n| provider | 55 |\n\n"
    )
    assert region(after, "fetch") == region(PAGE_BEFORE, "fetch")
    assert outside_regions(after) == outside_regions(PAGE_BEFORE)
    assert region(after, "targets").splitlines() == [
        "",
        "| part | target | measured | result |",
        "|---|---|---|---|",
        "| fetch | All-customers fetch within 1.3x of the floor | 1.27x | PASS |",
        "| imports | Import overhead under 100 ms | 55 ms | PASS |",
        "| turbulence | Turbulence: 10 of 10 runs | 10 of 10 | PASS |",
        "",
    ]


def test_a_part_with_no_rows_yet_gets_them_in_the_order_of_the_parts() -> None:
    existing = region(PAGE_BEFORE, "targets").splitlines()

    merged = run.merge_targets(existing, "ratelimit", [Target("At most 10% throttled", "7.3%", False)])

    assert [line.split(" | ")[0] for line in merged if line.startswith("| ") and "---" not in line] == [
        "| part",
        "| fetch",
        "| imports",
        "| ratelimit",
        "| turbulence",
    ]
    assert "| ratelimit | At most 10% throttled | 7.3% | MISS |" in merged


@pytest.mark.parametrize(
    ("page", "says"),
    [
        ("<!-- bench:fetch -->\n| a |\n", "no region"),
        ("| a |\n<!-- /bench:fetch -->\n", "no region"),
        ("text <!-- bench:fetch -->\n| a |\n<!-- /bench:fetch -->\n", "no region"),
        (
            "<!-- bench:fetch -->\n<!-- /bench:fetch -->\n<!-- bench:fetch -->\n<!-- /bench:fetch -->\n",
            "more than once",
        ),
        ("<!-- /bench:fetch -->\n| a |\n<!-- bench:fetch -->\n", "comes before"),
    ],
    ids=["no-closing-marker", "no-opening-marker", "marker-not-on-its-own-line", "twice", "closing-first"],
)
def test_a_region_must_be_well_formed(page: str, says: str) -> None:
    with pytest.raises(PageError, match=says):
        run.region_span(page, "fetch")


def test_a_page_must_have_the_targets_and_every_region_to_write() -> None:
    run.check_page(PAGE_BEFORE, ["fetch", "imports"])
    with pytest.raises(PageError, match="no region <!-- bench:cpu -->"):
        run.check_page(PAGE_BEFORE, ["fetch", "cpu"])
    with pytest.raises(PageError, match="no region <!-- bench:targets -->"):
        run.check_page(PAGE_BEFORE.replace("bench:targets", "bench:other"), ["fetch"])


def fake_imports(env: dict[str, str], tmp: Path) -> dict[str, Any]:
    return {
        "airflow": 0.9,
        "dag_api_name": "from airflow.sdk import DAG",
        "dag_api": 0.0,
        "provider": 0.042,
        "samples": 7,
    }


def test_main_writes_the_parts_it_ran_and_prints_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE_BEFORE, encoding="utf-8")
    monkeypatch.setattr(run.import_cost, "measure", fake_imports)

    status = run.main(["--only", "imports", "--page", str(page)])

    after = page.read_text(encoding="utf-8")
    printed = capsys.readouterr().out
    assert status == 0
    # Stdout as before: the header, the targets of the parts run, their sections.
    assert printed.startswith("`python tests/benchmarks/run.py`, ")
    assert "| Import overhead under 100 ms | 42 ms | PASS |" in printed
    assert "| operator + sensor modules of this provider | 42 |" in printed
    # The page: the imports region and row, measured by this command on this machine, nothing else.
    measured = region(after, "imports").splitlines()[3]
    assert measured.startswith(f"Measured by `python tests/benchmarks/run.py --only imports --page {page}`, ")
    assert re.search(r", \d{4}-\d\d-\d\d \d\d:\d\d(-\d\d:\d\d)? UTC, on .+ CPUs\*\* ", measured), measured
    assert "| operator + sensor modules of this provider | 42 |" in region(after, "imports")
    assert "| imports | Import overhead under 100 ms | 42 ms | PASS |" in region(after, "targets")
    assert region(after, "fetch") == region(PAGE_BEFORE, "fetch")
    assert outside_regions(after) == outside_regions(PAGE_BEFORE)
    assert not list(tmp_path.glob(".benchmarks.md.tmp-*"))


def test_a_page_lacking_a_region_of_the_run_is_refused_before_anything_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE_BEFORE, encoding="utf-8")

    def never(*args: object) -> dict[str, Any]:
        raise AssertionError("measured although the page cannot take the results")

    monkeypatch.setattr(run.import_cost, "measure", never)

    with pytest.raises(SystemExit) as exited:
        run.main(["--only", "imports", "--only", "cpu", "--page", str(page)])

    assert exited.value.code == 2
    assert "no region <!-- bench:cpu -->" in capsys.readouterr().err
    assert page.read_text(encoding="utf-8") == PAGE_BEFORE


def test_no_page_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run.import_cost, "measure", fake_imports)

    assert run.main(["--only", "imports", "--no-page", "--page", str(tmp_path / "absent.md")]) == 0
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("started", "ended", "shown"),
    [
        ("2026-12-03T10:00:05", "2026-12-03T10:00:50", "2026-12-03 10:00 UTC"),
        ("2026-12-03T10:00:00", "2026-12-03T10:05:00", "2026-12-03 10:00-10:05 UTC"),
        ("2026-12-03T23:50:00", "2026-12-04T00:10:00", "2026-12-03 23:50 UTC to 2026-12-04 00:10 UTC"),
    ],
)
def test_the_time_of_a_part(started: str, ended: str, shown: str) -> None:
    def utc(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)

    assert run.span(utc(started), utc(ended)) == shown


def test_the_published_page_has_one_region_per_part_and_the_targets() -> None:
    text = run.PAGE.read_text(encoding="utf-8")

    run.check_page(text, PARTS)
    assert re.findall(r"^<!-- bench:([\w-]+) -->$", text, re.MULTILINE) == ["targets", *PARTS]
    rows = [line for line in region(text, "targets").splitlines() if run.TARGET_ROW.match(line)]
    assert {row.split(" | ")[0].strip("| ") for row in rows} - {"part"} == set(PARTS)


def test_the_readme_headline_is_the_published_page_s() -> None:
    readme = run.README.read_text(encoding="utf-8")

    assert region(readme, run.HEADLINE_REGION).splitlines() == run.headline(
        run.PAGE.read_text(encoding="utf-8")
    )
    assert "| sharing | A customer-scoped limit slows the run at most 1.25x |" in readme
    assert "**2 CPUs**" in region(readme, run.HEADLINE_REGION)
