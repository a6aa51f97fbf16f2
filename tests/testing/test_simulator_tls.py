"""The simulator over HTTPS, with a certificate made when it starts."""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path

import pytest
import requests

from airflow_provider_metronome.testing import MetronomeSimulator
from tests.support.simulator import standalone_simulator
from tests.testing.simulator_client import AUTH, get


def test_serves_https_that_clients_trust_through_its_certificate() -> None:
    simulator = MetronomeSimulator(tls=True)
    with pytest.raises(RuntimeError, match="not running with TLS"):
        _ = simulator.certificate_path

    with simulator as sim:
        assert sim.url == f"https://127.0.0.1:{sim.port}"
        certificate = Path(sim.certificate_path)
        with requests.Session() as session:
            # Per request: requests lets REQUESTS_CA_BUNDLE in the environment override Session.verify.
            answers = [
                session.get(sim.url + "/v1/customers", headers=AUTH, verify=sim.certificate_path, timeout=10)
                for _ in range(2)
            ]
        localhost = requests.get(
            f"https://localhost:{sim.port}/v1/customers",
            headers=AUTH,
            verify=sim.certificate_path,
            timeout=10,
        )

    assert [answer.status_code for answer in answers] == [200, 200]
    assert len(answers[0].json()["data"]) == 25
    assert len({record.connection_id for record in sim.requests[:2]}) == 1  # keep-alive over TLS
    assert localhost.status_code == 200
    assert not certificate.exists()  # removed with its directory on stop
    assert not certificate.parent.exists()


def test_clients_that_do_not_trust_it_are_refused_and_it_keeps_serving() -> None:
    with MetronomeSimulator(tls=True) as sim:
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(sim.url + "/v1/customers", headers=AUTH, timeout=10)  # the system's CAs
        with pytest.raises(requests.ConnectionError):
            requests.get(sim.url.replace("https://", "http://") + "/v1/customers", headers=AUTH, timeout=10)

        answer = requests.get(
            sim.url + "/v1/customers", headers=AUTH, verify=sim.certificate_path, timeout=10
        )

    assert answer.status_code == 200


def test_the_certificate_passes_strict_verification() -> None:
    with MetronomeSimulator(tls=True) as sim:
        context = ssl.create_default_context(cafile=sim.certificate_path)
        # What Python 3.13 turns on by default: rejects certificates that merely happen to work.
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        request = urllib.request.Request(sim.url + "/v1/customers?limit=1", headers=AUTH)
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            body = json.load(response)

    assert len(body["data"]) == 1


def test_plain_http_by_default(simulator: MetronomeSimulator) -> None:
    assert simulator.url.startswith("http://")
    assert get(simulator, "/v1/customers").status_code == 200
    with pytest.raises(RuntimeError, match="not running with TLS"):
        _ = simulator.certificate_path


def test_tls_from_the_command_line(tmp_path: Path) -> None:
    with standalone_simulator(tmp_path, "--tls", extra_lines=1) as standalone:
        assert standalone.url.startswith("https://127.0.0.1:")
        prefix = "TLS certificate authority: "
        assert standalone.lines[1].startswith(prefix)
        certificate = standalone.lines[1].removeprefix(prefix)
        answer = requests.get(standalone.url + "/v1/customers", headers=AUTH, verify=certificate, timeout=10)
        assert answer.status_code == 200

    assert not Path(certificate).exists()
