"""One all-customers day fetch, by one of several paths, in this (fresh) process.

``python -m tests.benchmarks.fetch_paths {operator,requests,requests-pool,requests-tenacity,sdk} --url URL --token T --out DIR
[--max-workers N]`` prints ``{"seconds", "customers", "windows", "client_requests", "max_workers",
"output"}`` (the operator also its ``"manifest"``) as one JSON line. Each path lists the active
customers (100 per page), fetches each one's costs for :data:`~tests.benchmarks.common.DAY` and
writes one JSON line per costs window to a file: the same work and the same records (the SDK
re-encodes them). ``seconds`` covers the fetch and the write, not the imports; the operator and the thread pool also report
``cpu_seconds``, the process's CPU time (every thread) over the same span.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.benchmarks.common import ENDING_BEFORE, PAGE_SIZE, STARTING_ON, emit


def _line(customer_id: str, window: dict[str, Any]) -> str:
    return (
        json.dumps({"customer_id": customer_id, **window}, separators=(",", ":"), ensure_ascii=False) + "\n"
    )


def run_requests_loop(url: str, token: str, out: Path) -> dict[str, Any]:
    """What a user writes in a PythonOperator: one ``requests.Session``, a pagination loop, sequential."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    sent = 0

    def paginate(path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        nonlocal sent
        query = {**params, "limit": PAGE_SIZE}
        while True:
            response = session.get(url + path, params=query, timeout=60)
            sent += 1
            response.raise_for_status()
            body = response.json()
            yield from body["data"]
            if not body.get("next_page"):
                return
            query["next_page"] = body["next_page"]

    started = time.perf_counter()
    customer_ids = [customer["id"] for customer in paginate("/v1/customers", {})]
    windows = 0
    with (out / "requests-loop.jsonl").open("w", encoding="utf-8") as file:
        for customer_id in customer_ids:
            costs = paginate(
                f"/v1/customers/{customer_id}/costs",
                {"starting_on": STARTING_ON, "ending_before": ENDING_BEFORE},
            )
            for window in costs:
                file.write(_line(customer_id, window))
                windows += 1
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "customers": len(customer_ids),
        "windows": windows,
        "client_requests": sent,
        "max_workers": 1,
        "output": str(out / "requests-loop.jsonl"),
    }


def run_requests_pool(url: str, token: str, out: Path, max_workers: int) -> dict[str, Any]:
    """A plain ``requests`` thread pool: list the customers, then fetch them ``max_workers`` at a time.

    One session per thread (a shared one keeps only 10 connections alive), results in listing order.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    local = threading.local()
    lock = threading.Lock()
    sent = 0

    def get(path: str, params: dict[str, Any]) -> dict[str, Any]:
        nonlocal sent
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.headers["Authorization"] = f"Bearer {token}"
        response = local.session.get(url + path, params={**params, "limit": PAGE_SIZE}, timeout=60)
        with lock:
            sent += 1
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def costs(customer_id: str) -> list[dict[str, Any]]:
        day = {"starting_on": STARTING_ON, "ending_before": ENDING_BEFORE}
        return list(get(f"/v1/customers/{customer_id}/costs", day)["data"])

    started, cpu_started = time.perf_counter(), time.process_time()
    customer_ids: list[str] = []
    cursor: str | None = None
    while True:
        page = get("/v1/customers", {} if cursor is None else {"next_page": cursor})
        customer_ids += [customer["id"] for customer in page["data"]]
        cursor = page.get("next_page")
        if not cursor:
            break
    windows = 0
    with (
        (out / "requests-pool.jsonl").open("w", encoding="utf-8") as file,
        ThreadPoolExecutor(max_workers) as pool,
    ):
        for customer_id, answer in zip(customer_ids, pool.map(costs, customer_ids), strict=True):
            for window in answer:
                file.write(_line(customer_id, window))
                windows += 1
    return {
        "seconds": time.perf_counter() - started,
        "customers": len(customer_ids),
        "windows": windows,
        "client_requests": sent,
        "max_workers": max_workers,
        "output": str(out / "requests-pool.jsonl"),
        "cpu_seconds": time.process_time() - cpu_started,
    }


def run_sdk(url: str, token: str, out: Path) -> dict[str, Any]:
    """Metronome's official ``metronome-sdk`` client, its auto-pagination, sequential."""
    import httpx
    from metronome import DefaultHttpxClient, Metronome

    sent = 0

    def count(request: httpx.Request) -> None:
        nonlocal sent
        sent += 1

    client = Metronome(
        bearer_token=token, base_url=url, http_client=DefaultHttpxClient(event_hooks={"request": [count]})
    )
    started = time.perf_counter()
    customer_ids = [customer.id for customer in client.v1.customers.list(limit=PAGE_SIZE)]
    windows = 0
    with (out / "sdk.jsonl").open("w", encoding="utf-8") as file:
        for customer_id in customer_ids:
            costs = client.v1.customers.list_costs(
                customer_id=customer_id, starting_on=STARTING_ON, ending_before=ENDING_BEFORE, limit=PAGE_SIZE
            )
            for window in costs:
                file.write(_line(customer_id, window.to_dict(mode="json")))
                windows += 1
    seconds = time.perf_counter() - started
    client.close()
    return {
        "seconds": seconds,
        "customers": len(customer_ids),
        "windows": windows,
        "client_requests": sent,
        "max_workers": 1,
        "output": str(out / "sdk.jsonl"),
    }


def run_operator(
    out: Path,
    max_workers: int | None,
    customer_ids: list[str] | None = None,
    name: str = "operator",
    *,
    source: str = "costs",
    window: tuple[str, str] = (STARTING_ON, ENDING_BEFORE),
    task_requests_per_second: float | None = None,
) -> dict[str, Any]:
    """``MetronomeCostsOperator.execute()`` with its defaults, to a ``file://`` JSON Lines object.

    :param max_workers: None for the operator's default.
    :param customer_ids: None for the customers of the window (listed by the operator).
    :param window: ``starting_on`` and ``ending_before``.
    :param task_requests_per_second: the operator's own cap (None: none).
    A failed run is reported (``failed``), not raised: the rate-limit part publishes failures too.
    """
    from airflow_provider_metronome.operators.costs import MetronomeCostsOperator

    tuning: dict[str, Any] = {} if max_workers is None else {"max_workers": max_workers}
    if task_requests_per_second is not None:
        tuning["task_requests_per_second"] = task_requests_per_second
    operator = MetronomeCostsOperator(
        task_id="costs",
        customer_ids=customer_ids,
        output_uri=f"file://{out}/{name}.jsonl",
        starting_on=window[0],
        ending_before=window[1],
        source=source,  # type: ignore[arg-type]
        **tuning,
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        manifest = operator.execute({})  # type: ignore[arg-type]
    except Exception as err:
        return {"seconds": time.perf_counter() - started, "failed": f"{type(err).__name__}: {err}"[:300]}
    seconds = time.perf_counter() - started
    # The simulator counts the operator's requests.
    return {
        "seconds": seconds,
        "customers": manifest["customers"],
        "windows": manifest["records"],
        "client_requests": None,
        "max_workers": operator.max_workers,
        "output": str(out / f"{name}.jsonl"),
        "manifest": manifest,
        "cpu_seconds": time.process_time() - cpu_started,
    }


def run_requests_tenacity(url: str, token: str, out: Path) -> dict[str, Any]:
    """A sequential ``requests`` loop with ``tenacity`` retries of 429 and 5xx, as a user would write it."""
    import requests
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    sent = 0

    def retryable(error: BaseException) -> bool:
        response = getattr(error, "response", None)
        return response is not None and (response.status_code == 429 or response.status_code >= 500)

    @retry(
        retry=retry_if_exception(retryable),
        wait=wait_exponential(multiplier=0.5, max=8),
        stop=stop_after_attempt(6),
    )
    def get(path: str, query: dict[str, Any]) -> dict[str, Any]:
        nonlocal sent
        sent += 1
        response = session.get(url + path, params=query, timeout=60)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def paginate(path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        query = {**params, "limit": PAGE_SIZE}
        while True:
            body = get(path, query)
            yield from body["data"]
            if not body.get("next_page"):
                return
            query["next_page"] = body["next_page"]

    started = time.perf_counter()
    try:
        customer_ids = sorted(customer["id"] for customer in paginate("/v1/customers", {}))
        windows = 0
        with (out / "requests-tenacity.jsonl").open("w", encoding="utf-8") as file:
            for customer_id in customer_ids:
                day = {"starting_on": STARTING_ON, "ending_before": ENDING_BEFORE}
                for window in paginate(f"/v1/customers/{customer_id}/costs", day):
                    file.write(_line(customer_id, window))
                    windows += 1
    except Exception as err:
        return {"seconds": time.perf_counter() - started, "failed": f"{type(err).__name__}: {err}"[:300]}
    return {
        "seconds": time.perf_counter() - started,
        "customers": len(customer_ids),
        "windows": windows,
        "client_requests": sent,
        "max_workers": 1,
        "output": str(out / "requests-tenacity.jsonl"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", choices=("operator", "requests", "requests-pool", "requests-tenacity", "sdk"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--max-workers", type=int, help="operator and requests-pool; default: the operator's default, 16"
    )
    parser.add_argument("--customers-file", type=Path, help="operator only: a JSON list of customer ids")
    parser.add_argument("--name", default="operator", help="operator only: the output file's name")
    parser.add_argument("--source", default="costs", help="operator only: costs or invoice_breakdowns")
    parser.add_argument("--starting-on", default=STARTING_ON, help="operator only: the window's start")
    parser.add_argument("--ending-before", default=ENDING_BEFORE, help="operator only: the window's end")
    parser.add_argument(
        "--task-requests-per-second", type=float, help="operator only: the task's own cap on its requests"
    )
    args = parser.parse_args(argv)
    if args.path == "operator":
        ids = json.loads(args.customers_file.read_text()) if args.customers_file else None
        window = (args.starting_on, args.ending_before)
        cap = args.task_requests_per_second
        emit(
            run_operator(
                args.out,
                args.max_workers,
                ids,
                args.name,
                source=args.source,
                window=window,
                task_requests_per_second=cap,
            )
        )
    elif args.path == "requests-tenacity":
        emit(run_requests_tenacity(args.url, args.token, args.out))
    elif args.path == "requests":
        emit(run_requests_loop(args.url, args.token, args.out))
    elif args.path == "requests-pool":
        emit(run_requests_pool(args.url, args.token, args.out, args.max_workers or 16))
    else:
        emit(run_sdk(args.url, args.token, args.out))


if __name__ == "__main__":
    main()
