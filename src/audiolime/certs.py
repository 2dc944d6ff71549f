"""Throwaway certificates for TLS on one machine (``audiolime up --tls``, tests, benchmarks): a CA
and certificates it signs, made with the ``cryptography`` package. Not for production: a real
deployment's certificates come from its own CA (cert-manager, a Kubernetes Secret).

Keys are ECDSA P-256; certificates name ``localhost``, ``127.0.0.1`` and ``::1`` and may serve
as server and client certificates (mTLS), or only one of the two (``usages``). Files are written
with mode 0600 (keys) / 0644.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
BOTH = ("server", "client")
_USAGES = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


@dataclass(frozen=True)
class Pair:
    """A certificate file and its key file."""

    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "audiolime (throwaway)"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Authority:
    """A self-signed CA in ``directory`` (``ca.pem``, ``ca.key``) that issues certificates."""

    def __init__(self, directory: Path, name: str = "audiolime throwaway CA", days: int = 7) -> None:
        self.directory = Path(directory)
        self.days = days
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._subject = _name(name)
        self._cert = (x509.CertificateBuilder().subject_name(self._subject).issuer_name(self._subject)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                      .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                   content_commitment=False, key_encipherment=False,
                                                   data_encipherment=False, key_agreement=False,
                                                   encipher_only=False, decipher_only=False), critical=True)
                      .sign(self._key, hashes.SHA256()))
        self.cert = self.directory / "ca.pem"
        _write(self.cert, self._cert.public_bytes(serialization.Encoding.PEM), private=False)
        _write(self.directory / "ca.key", _key_pem(self._key), private=True)

    def issue(self, name: str, hosts: tuple[str, ...] = LOCAL_NAMES, days: int | None = None,
              usages: tuple[str, ...] = BOTH) -> Pair:
        """``<name>.pem`` / ``<name>.key``: a certificate named ``name`` (common name) for ``hosts``
        (subject alternative names; none: no such extension), usable by servers and/or clients
        (``usages``: "server", "client"; TLS peers refuse it in the other role)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(self._subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=days or self.days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([_USAGES[u] for u in usages]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        pair = Pair(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
        _write(pair.key, _key_pem(key), private=True)
        return pair
