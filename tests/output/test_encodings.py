"""JSON Lines encoding of records."""

from __future__ import annotations

import json

import pytest

from airflow_provider_metronome.output.encodings import encode_record

CUSTOMER = "4e1c9b58-0a4c-4b8e-9d0e-5f0e2d7c1a3b"


def test_encode_record_is_compact_utf8_ordered_and_one_line() -> None:
    record = {"customer_id": CUSTOMER, "name": "Café \u2603", "cost": 1.5, "zero": 0, "none": None}

    line = encode_record(record)

    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert line == (
        b'{"customer_id":"' + CUSTOMER.encode() + b'","name":"Caf\xc3\xa9 \xe2\x98\x83",'
        b'"cost":1.5,"zero":0,"none":null}\n'
    )
    assert json.loads(line) == record
    assert encode_record(dict(record)) == line


def test_encode_record_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(ValueError, match="JSON"):
        encode_record({"cost": float("nan")})
