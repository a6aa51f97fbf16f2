"""Plain ``requests`` helpers to drive the Metronome simulator over real sockets, shared by its tests."""

from __future__ import annotations

import threading
from typing import Any

import requests

from airflow_provider_metronome.testing import DEFAULT_TOKEN, MetronomeSimulator
from airflow_provider_metronome.testing.simulator import CONNECTION_THREAD_PREFIX

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
# Typed Any so that ``**FEBRUARY`` type-checks against any keyword argument.
FEBRUARY: dict[str, Any] = {"starting_on": "2024-02-01T00:00:00Z", "ending_before": "2024-03-01T00:00:00Z"}


def get(
    sim: MetronomeSimulator, path: str, headers: dict[str, str] | None = None, **params: Any
) -> requests.Response:
    """GET ``path`` with the simulator's token (unless ``headers`` says otherwise)."""
    return requests.get(
        sim.url + path, params=params, headers=AUTH if headers is None else headers, timeout=10
    )


def costs_path(customer_id: str) -> str:
    return f"/v1/customers/{customer_id}/costs"


def breakdowns_path(customer_id: str) -> str:
    return f"/v1/customers/{customer_id}/invoices/breakdowns"


def all_pages(sim: MetronomeSimulator, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    """The ``data`` of every page of a listing, following cursors to the end."""
    pages = []
    while True:
        body = get(sim, path, **params).json()
        pages.append(body["data"])
        if body["next_page"] is None:
            return pages
        params = {**params, "next_page": body["next_page"]}


def connection_threads(port: int) -> list[threading.Thread]:
    """Threads still serving a connection of the simulator on ``port``."""
    prefix = f"{CONNECTION_THREAD_PREFIX}{port}-"
    return [thread for thread in threading.enumerate() if thread.name.startswith(prefix)]
