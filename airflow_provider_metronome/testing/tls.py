"""TLS for the simulator: a throw-away certificate authority and a server certificate it signs."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# How long the throw-away TLS certificates are valid: long enough for a simulator left running for days.
TLS_CERTIFICATE_LIFETIME = timedelta(days=30)
_CA_NAME = "Metronome simulator test CA"


class Certificates:
    """A throw-away certificate authority and a server certificate it signed, in a private temporary directory.

    A separate CA (rather than one self-signed server certificate) keeps strict verifiers happy, such as
    Python 3.13's default ``VERIFY_X509_STRICT``.
    """

    def __init__(self, host: str) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="metronome-simulator-tls-"))
        try:
            self.ca_path = self.directory / "ca.pem"
            chain_path, key_path = self.directory / "server.pem", self.directory / "server-key.pem"
            _write_certificates(self.ca_path, chain_path, key_path, host)
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(chain_path, key_path)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _write_certificates(ca_path: Path, chain_path: Path, key_path: Path, host: str) -> None:
    """Write a new CA's certificate, a server certificate for ``host`` and localhost, and the server's key."""
    # Imported here: only TLS needs it, and it is slow to import next to the rest of the simulator.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_certificate = _ca_certificate(ca_key)
    server_certificate = _server_certificate(server_key, ca_key, ca_certificate, host)
    pem = serialization.Encoding.PEM
    ca_path.write_bytes(ca_certificate.public_bytes(pem))
    chain_path.write_bytes(server_certificate.public_bytes(pem) + ca_certificate.public_bytes(pem))
    key_path.write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _certificate_builder(subject: Any, issuer: Any, public_key: Any) -> Any:
    """A certificate builder valid from an hour ago (for clients whose clock lags) for the lifetime."""
    from cryptography import x509

    now = datetime.now(timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + TLS_CERTIFICATE_LIFETIME)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, signs_certificates: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_certificate(ca_key: Any) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME)])
    return (
        _certificate_builder(name, name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def _server_certificate(server_key: Any, ca_key: Any, ca_certificate: Any, host: str) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    return (
        _certificate_builder(subject, ca_certificate.subject, server_key.public_key())
        .add_extension(x509.SubjectAlternativeName(_subject_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _subject_names(host: str) -> list[Any]:
    """localhost and the loopback addresses, plus the host the simulator listens on when it is specific."""
    from cryptography import x509

    names: list[Any] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    if host in {"", "0.0.0.0", "::", "localhost", "127.0.0.1", "::1"}:
        return names
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    return names
