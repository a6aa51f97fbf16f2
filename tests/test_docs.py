"""The README and every page of docs/ are checked: their code blocks are tested, and their links resolve.

Every python block of ``README.md`` and ``docs/*.md`` carries a marker on the line just before it:

- ``<!-- snippet: dags_examples/<file>.py#<name> -->``: the block equals, exactly, the lines between
  ``# [START <name>]`` and ``# [END <name>]`` in that file, dedented (regenerate such blocks from the
  regions after changing an example DAG, never edit them by hand);
- ``<!-- run -->``: the block is run as a script, in a subprocess of this interpreter
  (``sys.executable``), from the repository root, with a temporary ``AIRFLOW_HOME`` and no Airflow
  setting of the test session, and must exit 0 within ``RUN_TIMEOUT`` seconds;
- ``<!-- not-run: <reason> -->``: the block is not run, for the reason given.

So no python block goes unchecked: a block without a marker fails, and so does a marker without its
block. Besides, every relative link (and ``#anchor``) of those pages must resolve, every docs page
starts with one line that says what it is and links back to the README, and the README links to
every docs page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "dags_examples"
# README and docs together: one block per region of the example DAGs today.
MIN_SNIPPETS = 5
# Seconds a run block may take (a fresh interpreter importing Airflow takes a few on a busy machine).
RUN_TIMEOUT = 240
OUTPUT_TAIL = 4000

PYTHON_LANGUAGES = {"python", "py", "python3"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
# A marker is a line of its own; anything that looks like one must be one of these exactly.
LOOKS_LIKE_A_MARKER = re.compile(r"^\s*<!--\s*(snippet|run|not-run)\b")
SNIPPET = re.compile(r"^<!-- snippet: (?P<path>[^#\s]+\.py)#(?P<name>[\w-]+) -->$")
RUN = re.compile(r"^<!-- run -->$")
NOT_RUN = re.compile(r"^<!-- not-run: (?P<reason>\S.*?) -->$")
REGION_MARKER = re.compile(r"^\s*# \[(?P<kind>START|END) (?P<name>[\w-]+)\]\s*$")
HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
# [text](target) or ![alt](target), outside inline code; the target up to a space or the closing ).
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target><[^>]*>|[^)\s]*)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"(`+).*?\1")


# -- reading a page -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: where it starts (1-based line of its fence), its language, its code."""

    page: str
    line: int
    language: str
    code: str
    marker: str | None  # the line just before the fence, when it looks like a marker

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def __repr__(self) -> str:
        return f"Block({self.where})"


@dataclass(frozen=True)
class Page:
    name: str  # relative to the repository root
    path: Path
    lines: list[str]  # every line, in order
    blocks: list[Block]
    prose: list[tuple[int, str]]  # (line number, text) of the lines outside code blocks

    def __repr__(self) -> str:
        return f"Page({self.name})"


def page_paths() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


@cache
def read_page(path: Path) -> Page:
    name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            prose.append((index + 1, lines[index]))
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        end = index + 1
        closing = re.compile(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*")
        while end < len(lines) and not closing.fullmatch(lines[end]):
            end += 1
        assert end < len(lines), f"{name}:{index + 1}: a code block that never ends"
        # Inside a list item the fence is indented: its lines lose that indentation.
        body = [
            line[indent:] if line[:indent].strip() == "" else line.lstrip() for line in lines[index + 1 : end]
        ]
        before = lines[index - 1] if index else ""
        blocks.append(
            Block(
                page=name,
                line=index + 1,
                language=(opening["info"].split() or [""])[0].lower(),
                code="".join(line + "\n" for line in body),
                marker=before if LOOKS_LIKE_A_MARKER.match(before) else None,
            )
        )
        index = end + 1
    return Page(name, path, lines, blocks, prose)


def pages() -> list[Page]:
    return [read_page(path) for path in page_paths()]


def page_ids(found: list[Page]) -> list[str]:
    return [page.name for page in found]


def python_blocks(page: Page) -> list[Block]:
    return [block for block in page.blocks if block.language in PYTHON_LANGUAGES]


def snippet_blocks() -> list[tuple[Block, str, str]]:
    """``(block, path, name)`` of every snippet block of every page, in page order."""
    found = []
    for page in pages():
        for block in python_blocks(page):
            match = SNIPPET.match(block.marker or "")
            if match:
                found.append((block, match["path"], match["name"]))
    return found


def run_blocks() -> list[Block]:
    return [block for page in pages() for block in python_blocks(page) if RUN.match(block.marker or "")]


# -- regions of the example DAGs -------------------------------------------------------------------


def regions(path: Path) -> dict[str, str]:
    """Every ``# [START name]`` ... ``# [END name]`` region of ``path``, dedented, ending in a newline."""
    found: dict[str, str] = {}
    open_regions: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        marker = REGION_MARKER.match(line)
        if marker is None:
            for body in open_regions.values():
                body.append(line)
            continue
        name = marker["name"]
        if marker["kind"] == "START":
            assert name not in open_regions, f"{path.name}:{number}: START {name} inside itself"
            assert name not in found, f"{path.name}:{number}: {name} twice"
            open_regions[name] = []
        else:
            assert name in open_regions, f"{path.name}:{number}: END {name} without its START"
            found[name] = textwrap.dedent("\n".join(open_regions.pop(name)) + "\n")
    assert not open_regions, f"{path.name}: START without END: {sorted(open_regions)}"
    return found


# -- links and anchors -------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Page) -> set[str]:
    """The anchors of a page's headings, numbered as GitHub numbers repeated ones (-1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in page.prose:
        heading = HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading["text"])
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Page) -> list[tuple[int, str]]:
    """``(line, target)`` of every link in the page's prose (not in code)."""
    found = []
    for number, line in page.prose:
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match["target"].strip("<>")))
    return found


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE))


# -- the checks, each a list of problems ----------------------------------------------------------------


def marker_problems(page: Page) -> list[str]:
    """Markers this test does not know, and markers not followed by a python block."""
    marked_lines = {block.line - 1 for block in python_blocks(page) if block.marker is not None}
    problems = []
    for number, line in page.prose:
        if not LOOKS_LIKE_A_MARKER.match(line):
            continue
        if not (SNIPPET.match(line) or RUN.match(line) or NOT_RUN.match(line)):
            problems.append(f"{page.name}:{number}: not a marker this test knows: {line!r}")
        elif number not in marked_lines:
            problems.append(f"{page.name}:{number}: {line!r} is not followed by a python block")
    return problems


def unmarked_problems(page: Page) -> list[str]:
    """Python blocks without a marker on the line before them."""
    return [
        f"{block.where}: a python block without <!-- snippet: ... -->, <!-- run --> or "
        "<!-- not-run: reason --> on the line before it"
        for block in python_blocks(page)
        if block.marker is None
    ]


def link_problems(page: Page) -> list[str]:
    """Relative links to files that do not exist, or to headings their page does not have."""
    problems = []
    for number, target in links(page):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.path.parent / file_part).resolve() if file_part else page.path
        where = f"{page.name}:{number}: {target}"
        if not linked.exists():
            problems.append(f"{where}: {file_part} does not exist")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(read_page(linked)):
            problems.append(f"{where}: {linked.name} has no heading #{anchor}")
    return problems


def run_environment(home: Path) -> dict[str, str]:
    """This interpreter's environment without the test session's Airflow settings, for ``home``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW", "METRONOME_EXAMPLES_")) and name != "METRONOME_PROVIDER_TESTS_HOME"
    }
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONUNBUFFERED": "1"})
    return env


def run_problem(block: Block, tmp_path: Path, timeout: float = RUN_TIMEOUT) -> str | None:
    """Run a run block as a script; why it failed (its exit status and output), or None."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    script = tmp_path / f"{block.where.replace('/', '_').replace(':', '_line')}.py"
    script.write_text(block.code, encoding="utf-8")
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=ROOT,
            env=run_environment(home),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        output = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else err.stdout or ""
        return f"{block.where}: still running after {timeout:g} s\n{output[-OUTPUT_TAIL:]}"
    if result.returncode != 0:
        output = result.stdout + result.stderr
        return f"{block.where} exited {result.returncode}:\n{output[-OUTPUT_TAIL:]}"
    return None


# -- the blocks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", pages(), ids=page_ids(pages()))
def test_every_marker_is_well_formed_and_followed_by_a_python_block(page: Page) -> None:
    problems = marker_problems(page)

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", pages(), ids=page_ids(pages()))
def test_every_python_block_is_a_snippet_a_run_block_or_says_why_not(page: Page) -> None:
    problems = unmarked_problems(page)

    assert not problems, "\n".join(problems)


def test_the_readme_and_docs_have_at_least_the_minimum_of_snippets() -> None:
    assert len(snippet_blocks()) >= MIN_SNIPPETS, [block.where for block, _, _ in snippet_blocks()]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_every_start_has_an_end(path: Path) -> None:
    regions(path)


@pytest.mark.parametrize(
    ("block", "path", "name"),
    snippet_blocks(),
    ids=[f"{block.where}-{path}#{name}" for block, path, name in snippet_blocks()],
)
def test_the_snippet_is_the_example_code(block: Block, path: str, name: str) -> None:
    source = ROOT / path
    assert source.is_file(), f"{block.where}: {path} does not exist"

    found = regions(source)

    assert name in found, f"{block.where}: {path} has no region {name}"
    assert block.code == found[name], (
        f"{block.where} differs from {path}#{name}: regenerate it from the region"
    )


@pytest.mark.timeout(RUN_TIMEOUT + 60)
@pytest.mark.parametrize("block", run_blocks(), ids=[block.where for block in run_blocks()])
def test_the_run_block_exits_0(block: Block, tmp_path: Path) -> None:
    problem = run_problem(block, tmp_path)

    assert problem is None, problem


# -- the pages and their links ------------------------------------------------------------------------


@pytest.mark.parametrize("page", pages(), ids=page_ids(pages()))
def test_every_relative_link_and_anchor_resolves(page: Page) -> None:
    problems = link_problems(page)

    assert not problems, "\n".join(problems)


def docs_pages() -> list[Page]:
    return [page for page in pages() if page.path != README]


@pytest.mark.parametrize("page", docs_pages(), ids=page_ids(docs_pages()))
def test_a_docs_page_starts_with_one_line_saying_what_it_is_and_links_back_to_the_readme(page: Page) -> None:
    text = [line for _, line in page.prose]
    assert text, f"{page.name} is empty"
    assert text[0].startswith("# "), f"{page.name}: no title first"
    body = "\n".join(text[1:]).strip()
    first, _, _ = body.partition("\n\n")

    assert first, f"{page.name}: nothing after the title"
    assert "\n" not in first, f"{page.name}: the first paragraph is not one line: {first!r}"
    assert "](../README.md" in first, f"{page.name}: the first line does not link back to ../README.md"


def test_the_readme_links_every_docs_page() -> None:
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for _, target in links(read_page(README))
        if not is_external(target)
    }

    assert not [page.name for page in docs_pages() if page.path.resolve() not in linked]


def test_the_readme_keeps_the_newcomers_two_commands() -> None:
    """The quickstart is the newcomer's path (tests/examples, scripts/demo.py): these two commands."""
    readme = read_page(README)
    commands = [block.code for block in readme.blocks if block.language == "bash"]

    assert any("make demo" in code and "make test" in code for code in commands)


# -- the checks themselves ----------------------------------------------------------------------------

BROKEN_PAGE = """# A page

<!-- snippet: dags_examples/metronome_daily_costs.py#daily_dag -->
```bash
echo a snippet marker before a block that is not python
```

```python
print("a python block without a marker")
```

<!-- not-run -->
```python
print("a not-run marker without its reason")
```

<!-- run -->

```python
print("a run marker, then a blank line")
```

<!-- not-run: a reason -->
```python
print("marked: no problem")
```

[gone](missing.md), [no such heading](#nowhere), [this heading](#a-page), [out](https://example.com/x)
"""


def test_the_checks_report_what_is_wrong_with_a_page(tmp_path: Path) -> None:
    path = tmp_path / "broken.md"
    path.write_text(BROKEN_PAGE, encoding="utf-8")
    page = read_page(path)

    assert marker_problems(page) == [
        "broken.md:3: '<!-- snippet: dags_examples/metronome_daily_costs.py#daily_dag -->' is not "
        "followed by a python block",
        "broken.md:12: not a marker this test knows: '<!-- not-run -->'",
        "broken.md:17: '<!-- run -->' is not followed by a python block",
    ]
    # (The block after the malformed marker is reported once, with its marker.)
    assert [problem.split(":")[1] for problem in unmarked_problems(page)] == ["8", "19"]
    assert link_problems(page) == [
        "broken.md:28: missing.md: missing.md does not exist",
        "broken.md:28: #nowhere: broken.md has no heading #nowhere",
    ]


def test_a_failing_run_block_is_reported_with_its_status_and_output(tmp_path: Path) -> None:
    block = Block("page.md", 7, "python", 'import sys\nprint("why")\nsys.exit(3)\n', "<!-- run -->")

    problem = run_problem(block, tmp_path)

    assert problem is not None
    assert problem.startswith("page.md:7 exited 3:")
    assert "why" in problem


def test_a_run_block_sees_a_fresh_airflow_home_and_none_of_the_sessions_settings(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "assert os.environ['AIRFLOW_HOME'] == sys.argv[0].rsplit('/', 1)[0] + '/airflow-home', os.environ\n"
        "assert not [k for k in os.environ if k.startswith('AIRFLOW_CONN_')]\n"
        f"assert os.getcwd() == {str(ROOT)!r}\n"
    )
    block = Block("page.md", 1, "python", code, "<!-- run -->")

    assert run_problem(block, tmp_path) is None


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Quickstart (five minutes)", "quickstart-five-minutes"),
        ("The operator: `MetronomeCostsOperator`", "the-operator-metronomecostsoperator"),
        ("`timeout` and `soft_fail`", "timeout-and-soft_fail"),
        ('What "available" means', "what-available-means"),
        ("5b. The same pipelines under a budget of 8 requests/s (bare 429)",
         "5b-the-same-pipelines-under-a-budget-of-8-requestss-bare-429"),
    ],
)  # fmt: skip
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
