"""Output URIs: the placeholders, the schemes we write to, and the path of a rendered URI.

A URI may hold ``str.format`` placeholders filled from the resolved window (the date of the data,
never of the run): ``{date}`` (first day), ``{start_date}``, ``{end_date}`` (last day, inclusive),
``{map_index}``, ``{source}`` and ``{customer_id}``. The dates are ``datetime.date`` objects, so a
format spec works too: ``{date:%Y/%m/%d}``.

:func:`check_output_uri` refuses unknown schemes and relative ``file://`` paths (when the DAG is
parsed, for a literal URI) and :func:`open_output` refuses a store whose file system is not
installed, naming the package, before the operator sends any request.
"""

from __future__ import annotations

import datetime as dt
import importlib
import string
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import fsspec

from airflow_provider_metronome._compat import ObjectStoragePath
from airflow_provider_metronome.vocabulary import RecordFormat
from airflow_provider_metronome.window import DayWindow

PLACEHOLDERS: tuple[str, ...] = ("date", "start_date", "end_date", "map_index", "source", "customer_id")
# Local paths (and only they) need their directory created and are renamed rather than copied.
LOCAL_PROTOCOLS = frozenset({"file", "local"})
S3_PROTOCOLS = frozenset({"s3", "s3a", "s3n"})
# Stores where an upload becomes visible only once complete: written in place, aborted on failure.
DIRECT_UPLOAD_PROTOCOLS = S3_PROTOCOLS | {"gs", "gcs", "abfs", "abfss"}
# What each store needs installed: the modules Airflow's ObjectStoragePath imports for it, and the
# pip requirement that brings them.
STORE_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    **dict.fromkeys(S3_PROTOCOLS, (("airflow.providers.amazon", "s3fs"), "'airflow-provider-metronome[s3]'")),
    # gcsfs alone: without the google provider, this provider registers gs:// itself (gcs_filesystem).
    **dict.fromkeys(("gs", "gcs"), (("gcsfs",), "'airflow-provider-metronome[gcs]'")),
    **dict.fromkeys(
        ("abfs", "abfss"),
        (("airflow.providers.microsoft.azure", "adlfs"), "'airflow-provider-metronome[azure]'"),
    ),
}
PARQUET_REQUIREMENT = "pip install 'airflow-provider-metronome[parquet]'"
# Schemes fsspec knows but Airflow's ObjectStoragePath does not serve, and the one to write instead:
# the microsoft-azure provider registers abfs:// and abfss:// only, never adlfs's az:// alias.
UNSERVED_SCHEMES: dict[str, str] = {"az": "abfs"}
_SAMPLE_VALUES: dict[str, Any] = {
    "date": dt.date(2024, 1, 1),
    "start_date": dt.date(2024, 1, 1),
    "end_date": dt.date(2024, 1, 1),
    "map_index": 0,
    "source": "costs",
    "customer_id": "00000000-0000-4000-8000-000000000000",
}


def placeholders_in(template: str) -> set[str]:
    """The placeholder names used in ``template``; raises ValueError on a malformed or unknown one."""
    names: set[str] = set()
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as err:
        raise ValueError(
            f"output_uri={template!r} has unbalanced braces ({err}); placeholders look like {{date}}."
        ) from None
    for field in fields:
        if field not in PLACEHOLDERS:
            raise ValueError(
                f"output_uri={template!r} uses the unknown placeholder {{{field}}}; the placeholders are "
                f"{', '.join('{' + name + '}' for name in PLACEHOLDERS)} (dates take a format spec such as "
                "{date:%Y/%m/%d})."
            )
        names.add(field)
    return names


def check_output_uri(template: str) -> None:
    """Check a (Jinja-rendered) ``output_uri`` before any request: scheme, object name, placeholders."""
    if not isinstance(template, str) or not template.strip():
        raise ValueError(
            f"output_uri={template!r} must be a non-empty URL such as 's3://bucket/costs/{{date}}.jsonl'."
        )
    placeholders_in(template)
    try:
        sample = template.format(**_SAMPLE_VALUES)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"output_uri={template!r} has a placeholder format spec that does not apply: {err}."
        ) from None
    parts = urlsplit(sample)
    if not parts.scheme or "://" not in sample:
        raise ValueError(
            f"output_uri={template!r} has no scheme; write a URL such as 'file:///data/costs/{{date}}.jsonl' "
            "or 's3://bucket/costs/{date}.jsonl.gz'."
        )
    _check_scheme(template, parts.scheme)
    # A connection named in the URL (file://conn_id@/data/...) is not a host.
    if parts.scheme in LOCAL_PROTOCOLS and parts.netloc.rpartition("@")[2] not in ("", "localhost"):
        raise ValueError(
            f"output_uri={template!r} is a relative file:// path (it would be written under whatever "
            "folder the worker runs in); write an absolute one with three slashes, such as "
            f"'file:///{parts.netloc}{parts.path}'."
        )
    if sample.endswith("/") or not parts.path.rstrip("/"):
        raise ValueError(
            f"output_uri={template!r} names a folder; it must name the object to write, for example "
            "'.../costs-{date}.jsonl'."
        )


def is_parquet(uri: str) -> bool:
    """Whether ``uri`` names a Parquet object (its path ends in ``.parquet``); else it is JSON Lines."""
    return urlsplit(uri).path.endswith(".parquet")


def check_output_format(uri: str, record_format: RecordFormat) -> None:
    """Refuse what Parquet cannot hold: ``raw`` records (nested, open-ended) or a gzipped name."""
    path = urlsplit(uri).path
    if path.endswith(".parquet.gz"):
        raise ValueError(
            f"output_uri={uri!r} gzips a Parquet name: Parquet compresses its own columns, so end it in "
            "'.parquet' (or '.jsonl.gz' for gzipped JSON Lines)."
        )
    if is_parquet(uri) and record_format == "raw":
        raise ValueError(
            f"output_uri={uri!r} is Parquet, which holds flat records of one schema: use "
            "record_format='line_items' with it, or keep record_format='raw' with JSON Lines "
            "(an output_uri ending in '.jsonl' or '.jsonl.gz')."
        )


def _check_scheme(template: str, scheme: str) -> None:
    """Refuse a scheme no file system serves; whether its package is installed is checked at run time."""
    if scheme in UNSERVED_SCHEMES:
        instead = UNSERVED_SCHEMES[scheme]
        raise ValueError(
            f"output_uri={template!r} uses {scheme}://, which Airflow's ObjectStoragePath does not serve; "
            f"write the same path as {instead}://container/... instead."
        )
    if scheme in LOCAL_PROTOCOLS or scheme in STORE_PACKAGES or scheme in fsspec.available_protocols():
        return
    raise ValueError(
        f"output_uri={template!r} uses the unknown scheme {scheme}://; write to file:///..., s3://..., "
        "gs://... or abfs://... (any store Airflow's ObjectStoragePath serves)."
    )


def open_output(url: str, conn_id: str | None = None) -> ObjectStoragePath:
    """The object at ``url``, once its store's file system is known to be there (no request is sent).

    :raises ValueError: naming the package to install, when the store's file system is missing.
    """
    path = storage_path(url, conn_id)
    scheme = path.protocol
    modules, requirement = STORE_PACKAGES.get(scheme, ((), ""))
    hint = (
        f"pip install {requirement}"
        if requirement
        else f"install the Airflow provider that serves {scheme}://"
    )
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(
                f"output_uri {public_uri(url)} needs the {scheme}:// file system, which is not installed "
                f"({err}): {hint}."
            ) from None
    try:
        _ = path.fs
    except ImportError as err:
        raise ValueError(f"output_uri {public_uri(url)} cannot be written here ({err}): {hint}.") from None
    except ValueError as err:
        # The packages are there (checked above) unless Airflow has no file system for the scheme;
        # anything else (adlfs refusing missing credentials, say) is the connection's fault.
        if "No filesystem registered" in str(err):
            raise ValueError(
                f"output_uri {public_uri(url)} cannot be written here ({err}): {hint}."
            ) from None
        raise ValueError(
            f"output_uri {public_uri(url)} cannot be opened ({err}); check its storage connection "
            "(output_conn_id, or conn_id@ in the URL)."
        ) from None
    return path


def check_split_uri(template: str) -> None:
    """``split_by_day`` writes one object per day: the (rendered) ``output_uri`` must hold ``{date}``."""
    if "date" not in placeholders_in(template):
        raise ValueError(
            f"output_uri={template!r} has no {{date}}, so split_by_day=True would write every day to "
            "the same object: add it, for example '.../costs/date={date}/costs.jsonl.gz'."
        )


def render_output_uri(
    template: str, window: DayWindow, *, map_index: int, source: str, customer_id: str | None
) -> str:
    """Fill ``template``'s placeholders from the resolved window and task (see the module docstring)."""
    check_output_uri(template)
    if "customer_id" in placeholders_in(template) and customer_id is None:
        raise ValueError(
            f"output_uri={template!r} uses {{customer_id}}, which needs exactly one customer per task; "
            "pass a single id in customer_ids (for example with .expand(customer_ids=[...])) or use {map_index}."
        )
    values: Mapping[str, Any] = {
        "date": window.first_day,
        "start_date": window.first_day,
        "end_date": window.end.subtract(days=1).date(),
        "map_index": map_index,
        "source": source,
        "customer_id": customer_id or "",
    }
    return template.format(**values)


def storage_path(url: str, conn_id: str | None = None) -> ObjectStoragePath:
    """The object at ``url``; ``conn_id`` names its storage connection when the URL does not."""
    # Passed only when set: a conn_id=None argument would override one given in the URL.
    return ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)


def storage_conn_id(url: str, conn_id: str | None = None) -> str | None:
    """The storage connection an object is read and written with: the URL's ``conn_id@``, else ``conn_id``."""
    user, at, _ = urlsplit(url).netloc.rpartition("@")
    return user if at and user else conn_id


def public_uri(url: str) -> str:
    """``url`` without the ``conn_id@`` part: the object's address for manifests, lineage and Assets."""
    parts = urlsplit(url)
    _, at, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=host).geturl() if at else url


__all__ = [
    "DIRECT_UPLOAD_PROTOCOLS",
    "LOCAL_PROTOCOLS",
    "PARQUET_REQUIREMENT",
    "PLACEHOLDERS",
    "STORE_PACKAGES",
    "UNSERVED_SCHEMES",
    "check_output_format",
    "check_output_uri",
    "check_split_uri",
    "is_parquet",
    "open_output",
    "placeholders_in",
    "public_uri",
    "render_output_uri",
    "storage_conn_id",
    "storage_path",
]
