"""MetronomeCostsOperator: a window of Metronome costs per run, to XCom, one object, or one object per day."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import closing
from functools import partial
from typing import Any

from airflow_provider_metronome._compat import (
    AirflowException,
    BaseOperator,
    BaseOperatorLink,
    Context,
    XCom,
)
from airflow_provider_metronome.customers import WindowListing
from airflow_provider_metronome.engine.availability import DayEvidence
from airflow_provider_metronome.engine.fetch import (
    FetchProgress,
    fetch_customers,
    name_customers,
)
from airflow_provider_metronome.hooks.metronome import MetronomeHook
from airflow_provider_metronome.operators.outlets import announce
from airflow_provider_metronome.output.sinks import RecordSink, SinkResult, open_sink
from airflow_provider_metronome.output.uris import (
    check_output_format,
    check_output_uri,
    check_split_uri,
    placeholders_in,
    render_output_uri,
)
from airflow_provider_metronome.validation import (
    check_choice,
    check_customer_error_policy,
    check_customer_ids,
    check_int,
    check_literal_customer_ids,
    check_max_workers,
    check_record_format,
    check_source,
    check_task_rate_cap,
    is_templated,
)
from airflow_provider_metronome.vocabulary import (
    DEFAULT_MAX_WORKERS,
    MISSING_DAYS_POLICIES,
    CustomerErrorPolicy,
    MissingDaysPolicy,
    RecordFormat,
    Source,
)
from airflow_provider_metronome.window import (
    DayWindow,
    TimestampLike,
    check_window_length,
    describe_days,
    resolve_window,
)

DEFAULT_MAX_XCOM_BYTES = 1_048_576
ONE_DAY = dt.timedelta(days=1)
METRONOME_APP_CUSTOMER_URL = "https://app.metronome.com/customers/{customer_id}"
CUSTOMER_LINK_XCOM_KEY = "metronome_customer_url"
# Skipped customers' messages go to XCom: keep each one short.
MAX_SKIP_MESSAGE = 300
# The manifest (XCom, asset events) names at most this many customers with nothing billed per day.
MAX_NAMED_IN_MANIFEST = 100


class MetronomeCustomerLink(BaseOperatorLink):
    """Link to the customer's page in the Metronome app, when the task covers exactly one customer."""

    name = "Metronome customer"

    @property
    def xcom_key(self) -> str:
        return CUSTOMER_LINK_XCOM_KEY

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        # What execute() pushed: Airflow 2 asks in the webserver, Airflow 3 in the worker after the run.
        url = XCom.get_value(ti_key=ti_key, key=CUSTOMER_LINK_XCOM_KEY)
        return url if isinstance(url, str) else ""


class MetronomeCostsOperator(BaseOperator):
    """Fetch one logical day (or another whole-UTC-day window) of Metronome costs for many customers.

    The window is ``starting_on``/``ending_before`` when given; otherwise the run's data interval when
    it is not empty; otherwise the whole UTC day before the logical date (Airflow 3 ``@daily``
    schedules and manual runs). It must be whole UTC days.

    A window may span up to :data:`MAX_WINDOW_DAYS` (100) days; each customer's whole window is
    fetched in as few requests as the endpoint allows (``/costs``: 100 days a request; breakdowns:
    35). Longer windows are refused before any request: split them into monthly runs.

    Without ``output_uri`` the records are the task's return value (XCom), up to ``max_xcom_bytes``.
    With it, they are written as JSON Lines (gzip when the name ends in ``.gz``), or as Parquet when
    it ends in ``.parquet`` (``line_items`` only; needs the ``[parquet]`` extra), atomically, and the
    return value is a manifest: ``uri, source, record_format, window, customers`` (those with at
    least one record written), ``records, bytes, changed, missing_days, skipped``. Records are
    ordered by customer id, then window start, so the same answers always give the same bytes. A
    re-run whose bytes equal the stored object's leaves it untouched (``changed`` is False);
    otherwise it replaces it.

    With ``split_by_day=True`` the window is still fetched once per customer, but written as one
    object per UTC day (``output_uri`` must hold ``{date}``), each byte-identical to what a one-day
    run of that day writes, so history loads, daily runs and restatements share one layout. Days
    are written after every customer was fetched and checked, each atomically; days whose bytes did
    not change are left untouched. The manifest has ``objects`` (per day: ``date, uri, customers,
    records, bytes, changed``) and ``changed_days`` instead of ``uri``/``changed``.

    Before anything is written, each customer's answer must tile the window: a window outside it, or
    the same window (costs) or invoice (breakdowns) twice for a day, fails the task with a
    ``MetronomeResponseError`` naming the customer, the endpoint and the day. A day without any
    object for a customer means Metronome has not produced it yet: see ``on_missing_days``.

    Killed (SIGTERM, or ``execution_timeout``), the task stops fetching and discards its upload: the
    previous object stays as it was.

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
    :param task_requests_per_second: Optional cap on this task's requests, all workers together, below
        the account's budget (the connection's ``requests_per_second``).
    :param requests_per_second: Deprecated name of ``task_requests_per_second``.
    :param on_customer_error: ``"fail"``: any customer error fails the task and nothing is written.
        ``"skip"``: customers answering a non-retryable 4xx (other than 401/403) are skipped, logged and
        listed in the manifest; errors that outlast the retries still fail the task.
    :param on_missing_days: ``"fail"`` (default): when some customer has no object for a day of the
        window, the task fails before writing anything, naming the customer and the days, and is
        retried like any failure; put a ``MetronomeCostsSensor`` before it to wait for the day
        instead. ``"accept"``: write what Metronome has; the manifest's ``missing_days`` lists, per
        day, the customers without it.
    :param split_by_day: Write one object per UTC day of the window through ``output_uri``'s
        ``{date}`` (see above) instead of one object for the whole window.
    :param output_conn_id: Airflow connection of the object store (or put it in the URL as ``conn_id@``).
    :param partition_outlets: How the task's ``Asset`` outlets announce the objects written, on
        Airflow 3.3+. True: one partitioned asset event per day whose object changed, keyed by the day
        (``2024-01-09``), each carrying the manifest, and no event when no day changed; DAGs on
        ``PartitionedAssetTimetable`` run once per changed day, while DAGs scheduled on the asset itself
        hear only unpartitioned events. False: one event for the run. None (default): True in a
        partitioned run (one with a partition key, or a DAG on ``PartitionedAtRuntime``), else False.
        Before Airflow 3.3, one event for the run.
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
        task_requests_per_second: float | None = None,
        requests_per_second: float | None = None,
        on_customer_error: CustomerErrorPolicy = "fail",
        on_missing_days: MissingDaysPolicy = "fail",
        split_by_day: bool = False,
        output_conn_id: str | None = None,
        partition_outlets: bool | None = None,
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
        self.task_requests_per_second = check_task_rate_cap(task_requests_per_second, requests_per_second)
        self.on_customer_error = on_customer_error
        self.on_missing_days = on_missing_days
        self.split_by_day = split_by_day
        self.output_conn_id = output_conn_id
        self.partition_outlets = partition_outlets
        self.max_xcom_bytes = max_xcom_bytes
        self._validate_arguments()

    # -- validation ------------------------------------------------------------------------------

    def _validate_arguments(self) -> None:
        """Check what is known when the DAG is parsed; templated values are checked in execute()."""
        check_source(self.source)
        check_record_format(self.record_format)
        check_max_workers(self.max_workers)
        check_customer_error_policy(self.on_customer_error)
        check_choice(
            "on_missing_days",
            self.on_missing_days,
            MISSING_DAYS_POLICIES,
            " ('fail': a day some customer lacks fails the task before writing; 'accept': write it and "
            "list it in the manifest's missing_days)",
        )
        check_int("max_xcom_bytes", self.max_xcom_bytes, minimum=1)
        if not (self.partition_outlets is None or isinstance(self.partition_outlets, bool)):
            raise ValueError(
                f"partition_outlets={self.partition_outlets!r} must be True (one asset event per changed "
                "day), False (one event per run) or None (as the run is partitioned or not)."
            )
        if self.output_uri is None and not self.do_xcom_push:
            raise ValueError(
                "Without output_uri the records are the task's return value, which do_xcom_push=False "
                "would throw away: set output_uri or leave do_xcom_push on."
            )
        if isinstance(self.output_uri, str) and not is_templated(self.output_uri):
            check_output_uri(self.output_uri)
            check_output_format(self.output_uri, self.record_format)
        self._check_split()
        check_literal_customer_ids(self.customer_ids)
        window = DayWindow.check_literal(self.starting_on, self.ending_before)
        if window is not None:
            check_window_length(window)

    def _check_split(self) -> None:
        """``split_by_day`` needs a bool, and an ``output_uri`` with ``{date}`` (checked now when literal)."""
        if not isinstance(self.split_by_day, bool):
            raise ValueError(f"split_by_day={self.split_by_day!r} must be True or False.")
        if not self.split_by_day:
            return
        if self.output_uri is None:
            raise ValueError(
                "split_by_day=True writes one object per day, which needs output_uri with {date}, for "
                "example 's3://my-bucket/metronome/costs/date={date}/costs.jsonl.gz'."
            )
        if isinstance(self.output_uri, str) and not is_templated(self.output_uri):
            check_split_uri(self.output_uri)

    # -- execution -------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        self._killed = False
        window = resolve_window(context, self.starting_on, self.ending_before)
        check_window_length(window)
        customer_ids = check_customer_ids(self.customer_ids)
        self._check_split()
        sink = open_sink(
            self.record_format,
            self._object_urls(context, window, customer_ids),
            source=self.source,
            conn_id=self.output_conn_id,
            split_by_day=self.split_by_day,
            xcom_limit=(self.max_xcom_bytes, partial(self._xcom_too_big, window)),
            log=self.log,
            stop_if_killed=self._stop_if_killed,
        )
        self._push_customer_link(context, customer_ids)
        hook = MetronomeHook(self.metronome_conn_id, task_requests_per_second=self.task_requests_per_second)
        try:
            # Every customer of the window: fetched as the listing's pages arrive.
            customers = (
                customer_ids if customer_ids is not None else hook.window_listing(window.start, window.end)
            )
            self.log.info(
                "Fetching %s (%s) of %s for %s with %d worker(s) into %s",
                self.source,
                self.record_format,
                window.describe(),
                f"{len(customers)} customer(s)"
                if isinstance(customers, list)
                else "the customers of the window, as they are listed",
                self.max_workers,
                sink.describe(),
            )
            result = self._run(hook, window, customers, sink)
        finally:
            hook.close()
        if result.manifest is not None:
            self._announce(context, result.manifest)
        return result.return_value

    def _run(
        self, hook: MetronomeHook, window: DayWindow, customers: list[str] | WindowListing, sink: RecordSink
    ) -> SinkResult:
        """The one loop: each customer's records, in customer order, into the sink."""
        if self.max_workers > hook.settings.pool_size:
            self.log.warning(
                "max_workers=%d exceeds the connection's pool_size=%d: raise pool_size in the connection "
                "extras so that every worker keeps its connection alive.",
                self.max_workers,
                hook.settings.pool_size,
            )
        listing = None if isinstance(customers, list) else customers
        results = fetch_customers(
            hook,
            customers,
            window,
            self.source,
            sink.prepare,
            max_workers=self.max_workers,
            skip_customer_errors=self.on_customer_error == "skip",
            progress=FetchProgress(self.log, hook, 0, self.progress_interval),
            count=_count_records,
        )
        skipped: list[dict[str, Any]] = []
        evidence = DayEvidence(window)
        with sink, closing(results):
            for result in results:
                if listing is not None and evidence.lifetimes is not listing.customers.lifetimes:
                    # The first result comes once the listing is read to its end.
                    evidence.lifetimes = listing.customers.lifetimes
                self._stop_if_killed()
                if result.skipped is not None:
                    skipped.append(
                        _skip_entry(result.customer_id, result.skipped.status_code, result.skipped.message)
                    )
                    continue
                evidence.add(result.customer_id, result.missing_days, result.present_days)
                if result.value is not None:
                    sink.add(result.customer_id, result.value)
            # A kill after the last customer must still keep the upload from completing.
            self._stop_if_killed()
            not_yet, not_billed = evidence.settle()
            self._check_missing_days(not_yet, window)
        if not_billed:
            self.log.info(
                "Customers with nothing billed (no records, not missing): %s", _describe_days_of(not_billed)
            )
        summary = {"source": self.source, "record_format": self.record_format, "window": window.as_dict()}
        facts: dict[str, Any] = {
            "missing_days": {str(day): ids for day, ids in not_yet.items()},
            "not_billed": {
                str(day): {"customers": len(ids), "customer_ids": ids[:MAX_NAMED_IN_MANIFEST]}
                for day, ids in not_billed.items()
            },
        }
        if listing is not None:
            self.log.info("%s", listing.customers.describe())
            facts["customer_set"] = listing.customers.groups
        facts["skipped"] = skipped
        return sink.finish(summary, facts)

    def _check_missing_days(self, not_yet: dict[dt.date, list[str]], window: DayWindow) -> None:
        """Fail on days Metronome has not produced yet (nothing written), or note them when accepted."""
        if not not_yet:
            return
        if self.on_missing_days == "fail":
            raise AirflowException(_missing_days_message(not_yet, window, self.source))
        self.log.warning("Wrote incomplete days (on_missing_days='accept'): %s", _describe_days_of(not_yet))

    def on_kill(self) -> None:
        """Stop fetching and discard the upload, so that nothing of this run is written.

        Airflow calls it from the task's SIGTERM handler (and on ``execution_timeout``); the fetch
        loop stops at the next customer, once the requests in flight have ended.
        """
        self._killed = True

    def _stop_if_killed(self, written: Sequence[dt.date] = ()) -> None:
        """Raise when the task was killed, saying what was already written (the last word in its log)."""
        if not getattr(self, "_killed", False):
            return
        if written:
            raise AirflowException(
                f"The task was killed while writing; {describe_days(list(written))} had already been written "
                "(each day whole), the other days are as they were."
            )
        raise AirflowException("The task was killed while fetching; nothing was written.")

    def _object_urls(
        self, context: Context, window: DayWindow, customer_ids: list[str] | None
    ) -> dict[dt.date, str] | None:
        """The rendered ``output_uri`` of each object, keyed by its first day; None for XCom.

        One object for the window, or with ``split_by_day`` one per day of the window.
        """
        if self.output_uri is None:
            return None
        template = self.output_uri
        map_index = getattr(context.get("ti"), "map_index", None)
        if map_index is not None and map_index >= 0:
            self._check_mapped_uri(context, template)
        single = customer_ids[0] if customer_ids is not None and len(customer_ids) == 1 else None
        windows = (
            [DayWindow.of(day, day + ONE_DAY) for day in window.iter_days()]
            if self.split_by_day
            else [window]
        )
        urls = {
            each.first_day: render_output_uri(
                template, each, map_index=max(map_index or 0, 0), source=self.source, customer_id=single
            )
            for each in windows
        }
        if len(set(urls.values())) < len(urls):
            raise ValueError(
                f"output_uri={template!r} gives the same object to several days of {window.describe()}, "
                "so they would overwrite each other: with split_by_day=True use {date} with the whole "
                "date, such as 'date={date}' or '{date:%Y/%m/%d}'."
            )
        return urls

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

    def _push_customer_link(self, context: Context, customer_ids: list[str] | None) -> None:
        """Leave the extra link's URL where the link reads it ("" for no link, so reading it never fails)."""
        if context.get("ti") is None:
            return
        url = ""
        if customer_ids is not None and len(customer_ids) == 1:
            url = METRONOME_APP_CUSTOMER_URL.format(customer_id=customer_ids[0])
        context["ti"].xcom_push(key=CUSTOMER_LINK_XCOM_KEY, value=url)

    def _xcom_too_big(self, window: DayWindow, size: int) -> str:
        return (
            f"The records of {window.describe()} outgrew max_xcom_bytes={self.max_xcom_bytes} (over {size} "
            "bytes so far). XCom lives in Airflow's metadata database and is not meant for bulk data: set "
            f"output_uri (for example 's3://my-bucket/metronome/{self.source}/{{date}}.jsonl.gz') to write "
            "the records to object storage and get a small manifest back. Raise max_xcom_bytes only if "
            "your database and XCom backend accept larger values."
        )

    def _announce(self, context: Context, manifest: dict[str, Any]) -> None:
        """Put the manifest in the asset events of this task's ``Asset`` outlets (see ``partition_outlets``).

        A DAG scheduled on such an asset then finds the objects and their window in the triggering
        event's ``extra``.
        """
        days = announce(self, context, manifest, self.partition_outlets)
        if days is not None:
            described = describe_days(dt.date.fromisoformat(day) for day in days) if days else "none"
            self.log.info("Asset events, one per changed day: %s", described)


def _expanded_arguments(context: Context, task_id: str) -> set[str] | None:
    """Names of the arguments this mapped task was expanded over; None when they cannot be known."""
    dag = context.get("dag")
    mapped = getattr(dag, "task_dict", {}).get(task_id)
    arguments = getattr(getattr(mapped, "expand_input", None), "value", None)
    return set(arguments) if isinstance(arguments, dict) else None


def _missing_days_message(not_yet: dict[dt.date, list[str]], window: DayWindow, source: str) -> str:
    days = list(not_yet)
    ids = not_yet[days[0]]
    return (
        f"Metronome has no {source} yet for customer {name_customers(ids)} on {describe_days(days)} "
        f"(of {window.describe()}): customers billed until then lack those days and no customer has them, "
        "so Metronome has not produced them yet, and nothing was written. Put a MetronomeCostsSensor for "
        "the same window before this task to wait until they are there, let the task retry later, or "
        "pass on_missing_days='accept' to write the incomplete days (the manifest's missing_days then "
        "lists them)."
    )


def _describe_days_of(customers_by_day: dict[dt.date, list[str]]) -> str:
    return "; ".join(
        f"{day}: {len(ids)} customer(s) ({name_customers(ids)})"
        for day, ids in sorted(customers_by_day.items())
    )


def _count_records(prepared: Sequence[tuple[dt.date, Sequence[Any]]]) -> int:
    """Records of a customer, for the progress line: lines or records, grouped by day."""
    return sum(len(records) for _, records in prepared)


def _skip_entry(customer_id: str, status_code: int | None, message: str) -> dict[str, Any]:
    return {"customer_id": customer_id, "status_code": status_code, "message": message[:MAX_SKIP_MESSAGE]}


__all__ = [
    "CUSTOMER_LINK_XCOM_KEY",
    "DEFAULT_MAX_XCOM_BYTES",
    "MetronomeCostsOperator",
    "MetronomeCustomerLink",
]
