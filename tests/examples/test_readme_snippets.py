"""The README's example-DAG code blocks are the example DAGs' own code, so they cannot drift.

A README block preceded by ``<!-- snippet: dags_examples/<file>.py#<name> -->`` must equal, exactly,
the lines between ``# [START <name>]`` and ``# [END <name>]`` in that file, dedented.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLES = ROOT / "dags_examples"
MIN_SNIPPETS = 3

# The marker, then the fenced block on the very next line.
SNIPPET = re.compile(
    r"^<!-- snippet: (?P<path>[^#\s]+)#(?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
MARKER_LINE = re.compile(r"^<!-- snippet:.*$", re.MULTILINE)
REGION_MARKER = re.compile(r"^\s*# \[(?P<kind>START|END) (?P<name>[\w-]+)\]\s*$")


def readme_snippets() -> list[tuple[str, str, str]]:
    """``(path, name, code)`` of every snippet marker in the README, in order."""
    return [
        (match["path"], match["name"], match["code"])
        for match in SNIPPET.finditer(README.read_text(encoding="utf-8"))
    ]


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


def test_every_snippet_marker_is_followed_by_a_python_block() -> None:
    markers = MARKER_LINE.findall(README.read_text(encoding="utf-8"))

    assert len(markers) == len(readme_snippets()), markers


def test_the_readme_has_at_least_three_snippets() -> None:
    assert len(readme_snippets()) >= MIN_SNIPPETS


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.name)
def test_every_start_has_an_end(path: Path) -> None:
    regions(path)


@pytest.mark.parametrize(
    ("path", "name", "code"), readme_snippets(), ids=[f"{path}#{name}" for path, name, _ in readme_snippets()]
)
def test_the_readme_block_is_the_example_code(path: str, name: str, code: str) -> None:
    source = ROOT / path
    assert source.is_file(), f"{path} does not exist"

    found = regions(source)

    assert name in found, f"{path} has no region {name}"
    assert code == found[name]
