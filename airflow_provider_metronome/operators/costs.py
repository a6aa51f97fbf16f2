"""MetronomeCostsOperator: one logical day of Metronome costs per run, to XCom or object storage."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_metronome._compat import (
    AIRFLOW_V3,
    AirflowFailException,
    Asset,
    BaseOperator,
    BaseOperatorLink,
    Context,
    XCom,
)
from airflow_provider_metronome.arguments import (
    DEFAULT_MAX_WORKERS,
    CustomerErrorPolicy,
    check_literal_customer_ids,
    check_literal_window,
    is_skippable_customer_error,
    is_templated,
    parse_customer_ids,
    validate_customer_error_policy,
    validate_max_workers,
    validate_source,
)
from airflow_provider_metronome.exceptions import MetronomeClientError
from airflow_provider_metronome.hooks.metronome import MetronomeHook, Source
from airflow_provider_metronome.output import (
    AtomicJsonLinesWriter,
    placeholders_in,
    public_uri,
    render_output_uri,
    storage_path,
    validate_output_uri,
)
from airflow_provider_metronome.records import (
    Record,
    RecordFormat,
    encode_record,
    in_window_order,
    to_records,
    validate_record_format,
)
from airflow_provider_metronome.window import DayWindow, TimestampLike, resolve_window

DEFAULT_MAX_XCOM_BYTES = 1_048_576
METRONOME_APP_CUSTOMER_URL = "https://app.metronome.com/customers/{customer_id}"
CUSTOMER_LINK_XCOM_KEY = "metronome_customer_url"
# Above this many customers the hook's one-line summary per customer would flood the task log.
PER_CUSTOMER_LOG_LIMIT = 10
# Skipped customers' messages go to XCom: keep each one short.
MAX_SKIP_MESSAGE = 300


class MetronomeCustomerLink(BaseOperatorLink):
    """Link to the customer's page in the Metronome app, when the task covers exactly one customer."""

    name = "Metronome customer"

    @property
    def xcom_key(self) -> str:
        return CUSTOMER_LINK_XCOM_KEY

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if AIRFLOW_V3:
            # Called in the worker once the task ran, on the rendered task; the UI shows what it returns.
            return customer_url(getattr(operator, "customer_ids", None))
        # Airflow 2 calls it in the webserver on the unrendered task: read what execute() pushed.
        url = XCom.get_value(ti_key=ti_key, key=CUSTOMER_LINK_XCOM_KEY)
        return url if isinstance(url, str) else ""


def customer_url(customer_ids: object) -> str:
    """The Metronome app page of the customer when ``customer_ids`` names exactly one, else ``""``."""
    try:
        ids = parse_customer_ids(customer_ids)
    except (TypeError, ValueError):
        return ""
    return METRONOME_APP_CUSTOMER_URL.format(customer_id=ids[0]) if ids and len(ids) == 1 else ""


@dataclass
class _CustomerResult:
    customer_id: str
    records: list[Record] = field(default_factory=list)
    skipped: MetronomeClientError | None = None


class _Progress:
    """Logs customers done / total, records and rate, at most once per ``interval`` seconds."""

    def __init__(self, log: Any, total: int, interval: float) -> None:
        self.log = log
        self.total = total
        self.interval = interval
        self.done = 0
        self.records = 0
        self.started = self._last = time.monotonic()

    def advance(self, records: int) -> None:
        self.done += 1
        self.records += records
        now = time.monotonic()
        if self.done < self.total and now - self._last >= self.interval:
            self._last = now
            self._report("Progress")

    def finish(self) -> None:
        self._report("Done")

    def _report(self, label: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.log.info(
            "%s: %d/%d customers, %d records, %.1f customers/s",
            label,
            self.done,
            self.total,
            self.records,
            self.done / elapsed,
        )


class MetronomeCostsOperator(BaseOperator):
    """Fetch one logical day (or another whole-UTC-day window) of Metronome costs for many customers.

    The window is ``starting_on``/``ending_before`` when given; otherwise the run's data interval when
    it is not empty; otherwise the whole UTC day before the logical date (Airflow 3 ``@daily``
    schedules and manual runs). It must be whole UTC days.

    Without ``output_uri`` the records are the task's return value (XCom), up to ``max_xcom_bytes``.
    With it, they are written as JSON Lines (gzip when the name ends in ``.gz``) atomically, and the
    return value is a manifest: ``uri, source, record_format, window, customers, records, bytes,
    skipped``. Records are ordered by customer id, then window start, so the same answers always give
    the same bytes, and re-running a day replaces its object.

    :param customer_ids: One Metronome customer id, a list of ids, or None for every active customer
        (listed through the API). Templated; a rendered string may be one id, ids separated by commas,
        or a rendered list such as ``['id1', 'id2']``.
    :param output_uri: Where to write, as an ObjectStoragePath URL (``file://``, ``s3://``, ``gs://``...),
        with placeholders ``{date}``, ``{start_date}``, ``{end_date}``, ``{map_index}``, ``{source}`` and
        ``{customer_id}`` filled from the resolved window. Templated (Jinja is rendered first). None
        returns the records through XCom.
    :param metronome_conn_id: The Metronome connection.
    :param starting_on: Explicit window start (inclusive, midnight UTC). Templated.
    :param ending_before: Explicit window end (exclusive, midnight UTC). Templated.
    :param source: ``"costs"`` (``/costs``, Metronome Plans) or ``"invoice_breakdowns"`` (daily invoice
        breakdowns, the Contracts-era endpoint Metronome recommends for new clients).
    :param record_format: ``"raw"`` (one record per API object, plus ``customer_id``) or
        ``"line_items"`` (one flat record per line item).
    :param max_workers: Customers fetched concurrently over the hook's pooled session.
    :param requests_per_second: Optional client-side cap on requests, all workers together.
    :param on_customer_error: ``"fail"``: any customer error fails the task and nothing is written.
        ``"skip"``: customers answering a non-retryable 4xx (other than 401/403) are skipped, logged and
        listed in the manifest; errors that outlast the retries still fail the task.
    :param output_conn_id: Airflow connection of the object store (or put it in the URL as ``conn_id@``).
    :param max_xcom_bytes: Largest XCom return value, in bytes of JSON; above it the task fails and
        asks for ``output_uri``.
    """

    template_fields: Sequence[str] = ("customer_ids", "output_uri", "starting_on", "ending_before")
    operator_extra_links = (MetronomeCustomerLink(),)
    ui_color = "#e8f1fe"
    # Seconds between progress lines in the task log.
    progress_interval: float = 10.0

    def __init__(
        self,
        *,
        customer_ids: str | Sequence[str] | None = None,
        output_uri: str | None = None,
        metronome_conn_id: str = MetronomeHook.default_conn_name,
        starting_on: TimestampLike | None = None,
        ending_before: TimestampLike | None = None,
        source: Source = "costs",
        record_format: RecordFormat = "raw",
        max_workers: int = DEFAULT_MAX_WORKERS,
        requests_per_second: float | None = None,
        on_customer_error: CustomerErrorPolicy = "fail",
        output_conn_id: str | None = None,
        max_xcom_bytes: int = DEFAULT_MAX_XCOM_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.customer_ids = customer_ids
        self.output_uri = output_uri
        self.metronome_conn_id = metronome_conn_id
        self.starting_on = starting_on
        self.ending_before = ending_before
        self.source = source
        self.record_format = record_format
        self.max_workers = max_workers
        self.requests_per_second = requests_per_second
        self.on_customer_error = on_customer_error
        self.output_conn_id = output_conn_id
        self.max_xcom_bytes = max_xcom_bytes
        self._validate_arguments()

    # -- validation ------------------------------------------------------------------------------

    def _validate_arguments(self) -> None:
        """Check what is known when the DAG is parsed; templated values are checked in execute()."""
        validate_source(self.source)
        validate_record_format(self.record_format)
        validate_max_workers(self.max_workers)
        rps = self.requests_per_second
        if rps is not None and (isinstance(rps, bool) or not isinstance(rps, (int, float)) or not rps > 0):
            raise ValueError(
                f"requests_per_second={rps!r} must be a positive number of requests per second, or None "
                "for no cap."
            )
        validate_customer_error_policy(self.on_customer_error)
        if (
            isinstance(self.max_xcom_bytes, bool)
            or not isinstance(self.max_xcom_bytes, int)
            or self.max_xcom_bytes < 1
        ):
            raise ValueError(f"max_xcom_bytes={self.max_xcom_bytes!r} must be a positive number of bytes.")
        if self.output_uri is None and not self.do_xcom_push:
            raise ValueError(
                "Without output_uri the records are the task's return value, which do_xcom_push=False "
                "would throw away: set output_uri or leave do_xcom_push on."
            )
        if isinstance(self.output_uri, str) and not is_templated(self.output_uri):
            validate_output_uri(self.output_uri)
        check_literal_customer_ids(self.customer_ids)
        check_literal_window(self.starting_on, self.ending_before)

    # -- execution -------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        window = resolve_window(context, self.starting_on, self.ending_before)
        customer_ids = parse_customer_ids(self.customer_ids)
        writer = self._writer(context, window, customer_ids)
        hook = MetronomeHook(self.metronome_conn_id, requests_per_second=self.requests_per_second)
        try:
            if not AIRFLOW_V3:
                self._push_customer_link(context)
            if customer_ids is None:
                customer_ids = self._list_active_customers(hook)
            self.log.info(
                "Fetching %s (%s) of %s for %d customer(s) with %d worker(s) into %s",
                self.source,
                self.record_format,
                window.describe(),
                len(customer_ids),
                self.max_workers,
                writer.lineage_uri if writer else "XCom",
            )
            if writer is None:
                return self._to_xcom(hook, window, customer_ids)
            manifest = self._to_object(hook, window, customer_ids, writer)
        finally:
            hook.close()
        self._annotate_outlets(context, manifest)
        return manifest

    def _writer(
        self, context: Context, window: DayWindow, customer_ids: list[str] | None
    ) -> AtomicJsonLinesWriter | None:
        """The writer of the rendered ``output_uri``, checked before any request; None for XCom."""
        if self.output_uri is None:
            return None
        template = self.output_uri
        map_index = getattr(context.get("ti"), "map_index", None)
        if map_index is not None and map_index >= 0:
            self._check_mapped_uri(context, template)
        single = customer_ids[0] if customer_ids is not None and len(customer_ids) == 1 else None
        url = render_output_uri(
            template, window, map_index=max(map_index or 0, 0), source=self.source, customer_id=single
        )
        path = storage_path(url, self.output_conn_id)
        writer = AtomicJsonLinesWriter(path, lineage_uri=public_uri(url))
        writer.check_target()
        return writer

    def _check_mapped_uri(self, context: Context, template: str) -> None:
        """Refuse an ``output_uri`` that would be the same for every mapped task of this run.

        Mapped over customers, tasks need ``{map_index}`` or ``{customer_id}``; mapped over windows, a
        date placeholder suffices; mapped over ``output_uri`` itself (or via ``expand_kwargs``, whose
        keys are unknown) nothing is required.
        """
        expanded = _expanded_arguments(context, self.task_id)
        if expanded is None or "output_uri" in expanded:
            return
        used = placeholders_in(template)
        if used & {"map_index", "customer_id"}:
            return
        if expanded & {"starting_on", "ending_before"} and used & {"date", "start_date", "end_date"}:
            return
        raise ValueError(
            f"output_uri={template!r} is the same for every mapped task of this run, so they would overwrite "
            "each other's object: add {map_index} (or {customer_id} when each task has one customer)."
        )

    def _list_active_customers(self, hook: MetronomeHook) -> list[str]:
        ids = sorted({customer.id for customer in hook.iter_customers()})
        self.log.info("Found %d active customer(s)", len(ids))
        return ids

    def _push_customer_link(self, context: Context) -> None:
        """Leave the extra link's URL where Airflow 2's webserver will look for it."""
        url = customer_url(self.customer_ids)
        if url and context.get("ti") is not None:
            context["ti"].xcom_push(key=CUSTOMER_LINK_XCOM_KEY, value=url)

    def _to_xcom(self, hook: MetronomeHook, window: DayWindow, customer_ids: list[str]) -> list[Record]:
        records: list[Record] = []
        # XCom stores json.dumps(records): each record plus ", " (the brackets stand in for the last one).
        size = 0
        with closing(self._results(hook, window, customer_ids)) as results:
            for result in results:
                for record in result.records:
                    size += len(json.dumps(record)) + 2
                    if size > self.max_xcom_bytes:
                        raise AirflowFailException(self._xcom_too_big(window, size))
                    records.append(record)
        return records

    def _xcom_too_big(self, window: DayWindow, size: int) -> str:
        return (
            f"The records of {window.describe()} outgrew max_xcom_bytes={self.max_xcom_bytes} (over {size} "
            "bytes so far). XCom lives in Airflow's metadata database and is not meant for bulk data: set "
            f"output_uri (for example 's3://my-bucket/metronome/{self.source}/{{date}}.jsonl.gz') to write "
            "the records to object storage and get a small manifest back. Raise max_xcom_bytes only if "
            "your database and XCom backend accept larger values."
        )

    def _to_object(
        self,
        hook: MetronomeHook,
        window: DayWindow,
        customer_ids: list[str],
        writer: AtomicJsonLinesWriter,
    ) -> dict[str, Any]:
        skipped: list[dict[str, Any]] = []
        written = 0
        uri = writer.lineage_uri
        with writer, closing(self._results(hook, window, customer_ids)) as results:
            for result in results:
                if result.skipped is not None:
                    skipped.append(_skip_entry(result.customer_id, result.skipped))
                    continue
                written += 1
                for record in result.records:
                    writer.write(encode_record(record))
        self.log.info("Wrote %d records (%d bytes) to %s", writer.records, writer.bytes_written, uri)
        return {
            "uri": uri,
            "source": self.source,
            "record_format": self.record_format,
            "window": window.as_dict(),
            "customers": written,
            "records": writer.records,
            "bytes": writer.bytes_written,
            "skipped": skipped,
        }

    def _results(
        self, hook: MetronomeHook, window: DayWindow, customer_ids: list[str]
    ) -> Generator[_CustomerResult, None, None]:
        """Each customer's result in ``customer_ids`` order, fetched concurrently.

        At most ``2 * max_workers`` customers are in flight or waiting to be consumed, so memory stays
        flat however many customers there are, and the order stays deterministic.
        """
        if len(customer_ids) > PER_CUSTOMER_LOG_LIMIT:
            hook.iteration_log_level = logging.DEBUG
        if self.max_workers > hook.settings.pool_size:
            self.log.warning(
                "max_workers=%d exceeds the connection's pool_size=%d: raise pool_size in the connection "
                "extras so that every worker keeps its connection alive.",
                self.max_workers,
                hook.settings.pool_size,
            )
        progress = _Progress(self.log, len(customer_ids), self.progress_interval)
        pending: deque[Future[_CustomerResult]] = deque()
        queue = iter(customer_ids)
        pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix=f"{self.task_id}-metronome")
        try:
            for customer_id in queue:
                pending.append(pool.submit(self._fetch_customer, hook, window, customer_id))
                if len(pending) >= 2 * self.max_workers:
                    break
            while pending:
                result = pending.popleft().result()
                next_id = next(queue, None)
                if next_id is not None:
                    pending.append(pool.submit(self._fetch_customer, hook, window, next_id))
                progress.advance(len(result.records))
                yield result
        finally:
            # On failure, drop the queued customers and let the few running requests end.
            pool.shutdown(wait=True, cancel_futures=True)
        progress.finish()

    def _fetch_customer(self, hook: MetronomeHook, window: DayWindow, customer_id: str) -> _CustomerResult:
        try:
            objects = in_window_order(hook.iter_source(self.source, customer_id, window.start, window.end))
        except MetronomeClientError as err:
            if self.on_customer_error != "skip" or not is_skippable_customer_error(err):
                raise
            self.log.warning("Skipping customer %s: %s", customer_id, err)
            return _CustomerResult(customer_id, skipped=err)
        return _CustomerResult(customer_id, to_records(self.record_format, customer_id, objects))

    def _annotate_outlets(self, context: Context, manifest: dict[str, Any]) -> None:
        """Put the manifest (without the skipped list) in the asset events of this task's ``Asset`` outlets.

        A DAG scheduled on such an asset then finds the object and its window in the triggering event's
        ``extra``.
        """
        events = context.get("outlet_events")
        if events is None:  # an empty accessor is falsy until first used
            return
        extra = {key: value for key, value in manifest.items() if key != "skipped"}
        for outlet in self.outlets or ():
            if isinstance(outlet, Asset):
                events[outlet].extra.update(extra)


def _expanded_arguments(context: Context, task_id: str) -> set[str] | None:
    """Names of the arguments this mapped task was expanded over; None when they cannot be known."""
    dag = context.get("dag")
    mapped = getattr(dag, "task_dict", {}).get(task_id)
    arguments = getattr(getattr(mapped, "expand_input", None), "value", None)
    return set(arguments) if isinstance(arguments, dict) else None


def _skip_entry(customer_id: str, error: MetronomeClientError) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "status_code": error.status_code,
        "message": error.message[:MAX_SKIP_MESSAGE],
    }


__all__ = [
    "CUSTOMER_LINK_XCOM_KEY",
    "DEFAULT_MAX_XCOM_BYTES",
    "MetronomeCostsOperator",
    "MetronomeCustomerLink",
    "customer_url",
]
