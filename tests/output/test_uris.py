"""Output URI rules."""

from __future__ import annotations

import sys

import pytest

from airflow_provider_metronome.output.uris import check_output_uri, open_output

CUSTOMER = "4e1c9b58-0a4c-4b8e-9d0e-5f0e2d7c1a3b"


@pytest.mark.parametrize(
    "uri",
    [
        "file:///data/costs/{date}.jsonl",
        "file://local_files@/data/costs/{date}.jsonl",
        "s3://bucket/costs/{date}.jsonl.gz",
        "gs://my_conn@bucket/{date}.jsonl.gz",
        "abfs://container/{date}.jsonl",
    ],
)
def test_check_output_uri_accepts_the_stores_users_write_to(uri: str) -> None:
    check_output_uri(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("foo://bucket/{date}.jsonl", r"unknown scheme foo://"),
        ("file://relative-dir/x.jsonl", r"relative file:// path .*'file:///relative-dir/x\.jsonl'"),
        ("data/{date}.jsonl", r"has no scheme"),
        # fsspec knows az://, but Airflow's azure provider registers abfs:// only.
        (
            "az://container/{date}.jsonl",
            r"az://, which Airflow's ObjectStoragePath does not serve; .* abfs://",
        ),
    ],
)
def test_check_output_uri_refuses_what_cannot_be_written(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_output_uri(uri)


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("s3://aws_default@bucket/k.jsonl", "s3fs", "s3"),
        ("s3://aws_default@bucket/k.jsonl", "airflow.providers.amazon", "s3"),
        ("gs://bucket/k.jsonl", "gcsfs", "gcs"),
        ("abfs://bucket/k.jsonl", "adlfs", "azure"),
        ("abfs://bucket/k.jsonl", "airflow.providers.microsoft.azure", "azure"),
    ],
)
def test_open_output_names_the_package_a_missing_store_needs(
    url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a machine without it: importing the module fails.
    monkeypatch.setitem(sys.modules, module, None)

    with pytest.raises(
        ValueError, match=rf"://bucket/k\.jsonl needs .* pip install 'airflow-provider-metronome\[{extra}\]'"
    ):
        open_output(url)
