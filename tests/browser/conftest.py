"""Debian's Chromium, driven by playwright, and the things every browser test needs.

The browser is the system's (``apt-get install -y chromium``), started by playwright through
``executable_path``; playwright never downloads one. Without Chromium (or without playwright) the
tests of this folder are skipped, with the reason, unless METRONOME_BROWSER_TESTS=required (as
.ci/run sets it, after installing Chromium): then they fail.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_metronome.testing import MetronomeSimulator
from tests.browser.pages import BROWSER_TIMEOUT_MS, Pages

# Where to look for the browser; CHROMIUM names another binary.
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")


def _missing(what: str) -> None:
    if os.environ.get("METRONOME_BROWSER_TESTS") == "required":
        pytest.fail(f"{what}, and METRONOME_BROWSER_TESTS=required")
    pytest.skip(what)


def _chromium() -> str | None:
    named = os.environ.get("CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return next((path for name in CHROMIUM_CANDIDATES if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _chromium()
    if path is None:
        _missing("Chromium is not installed (apt-get install -y chromium): the browser tests need it")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """One headless Chromium for the module.

    Not for the session: playwright's sync API keeps an asyncio loop running in this thread until
    it stops, and the tests after this folder's call asyncio.run().
    """
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("playwright is not installed (the test extra): the browser tests need it")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        # expect() waits 5 s by default: too little for a page of Airflow's UI on a busy CI machine.
        expect.set_options(timeout=BROWSER_TIMEOUT_MS)
        chromium = playwright.chromium.launch(
            executable_path=chromium_path, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test, so that a failed test's page can be photographed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def pages(browser: Any, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pages]:
    watched = Pages(browser, tmp_path)
    yield watched
    report = getattr(request.node, "report_call", None)
    watched.finish(failed=report is not None and report.failed)


@pytest.fixture(scope="module")
def token() -> str:
    """A fresh API token for the module's simulator: any sighting of it in a log is a leak."""
    return f"tok-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def metronome(token: str) -> Iterator[MetronomeSimulator]:
    """The Metronome API the module's Airflow talks to: the simulator, in this process."""
    with MetronomeSimulator(token=token) as simulator:
        yield simulator
