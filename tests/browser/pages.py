"""What the browser tests share: their pages, typing a secret, looking for one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Playwright's own waits (clicks, expect): generous, reached only when something is broken.
BROWSER_TIMEOUT_MS = 30_000


def fill_secret(field: Any, secret: str) -> None:
    """Type ``secret`` into ``field``; playwright's own error would quote it, so it is replaced by ***."""
    from playwright.sync_api import Error

    try:
        field.fill(secret)
    except Error as err:
        raise AssertionError(str(err).replace(secret, "***")) from None


def shows(text: str, secret: str) -> bool:
    """Whether ``secret`` is in ``text`` (a bare bool, so that a failed assert cannot print either)."""
    return secret in text


class Pages:
    """The pages of one test: photographed into tmp_path if it fails, then the ones it opened closed.

    The API token is only ever typed into password fields, which a screenshot shows as dots.
    """

    def __init__(self, browser: Any, shots: Path) -> None:
        self._browser = browser
        self._shots = shots
        self._watched: list[Any] = []
        self._contexts: list[Any] = []

    def watch(self, page: Any) -> Any:
        """Photograph ``page`` (a module's page, say) if the test fails."""
        self._watched.append(page)
        return page

    def new(self) -> Any:
        """A fresh page of its own (own cookies), closed after the test."""
        context = self._browser.new_context(viewport={"width": 1400, "height": 1400})
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        self._contexts.append(context)
        return self.watch(context.new_page())

    def finish(self, failed: bool) -> None:
        try:
            if failed:
                for number, page in enumerate(self._watched):
                    shot = self._shots / f"failure-{number}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    print(f"screenshot of the page: {shot}")
        finally:
            for context in self._contexts:
                context.close()
