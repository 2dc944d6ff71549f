"""TLS for every gRPC connection of the project: server credentials that pick up rotated
certificate files without a restart, and channel credentials for clients (the explainer's
channels to its backends, :class:`audiolime.client.ExplainerClient`, health checks).

PEM files only; a certificate and its key are checked to belong together before they are used.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import grpc

from audiolime.errors import InvalidInput

log = logging.getLogger(__name__)


def read_pem(path: Path | str, what: str) -> bytes:
    """A PEM file's bytes; ``InvalidInput`` (one line) when it cannot be read or is not PEM."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise InvalidInput(f"{what} {path} is not a PEM file")
    return data


def check_pair(cert: bytes, key: bytes, where: str) -> None:
    """The certificate's public key is the private key's (so a half-rotated pair is never served)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        public = x509.load_pem_x509_certificate(cert).public_key()
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{where}: cannot load the certificate or key ({exc})") from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if public.public_bytes(*fmt) != private.public_key().public_bytes(*fmt):
        raise InvalidInput(f"{where}: the certificate does not match the private key")


class ServerCertificates:
    """``--tls-cert``/``--tls-key`` (and ``--tls-client-ca`` for mTLS) as gRPC server credentials.

    The files are re-read when their modification times change (checked on each new connection),
    so a rotated certificate (e.g. a Kubernetes Secret update) is served without a restart; a
    new pair that fails to load or does not match is logged and the previous one kept."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.paths = [Path(cert), Path(key)] + ([Path(client_ca)] if client_ca else [])
        self.client_ca = client_ca
        self._lock = threading.Lock()
        self._stamp = self._mtimes()
        self._initial = self._load()

    def _mtimes(self) -> tuple:
        out: list[tuple[int, int, int] | None] = []
        for p in self.paths:
            try:
                st = os.stat(p)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert, key = read_pem(self.paths[0], "--tls-cert"), read_pem(self.paths[1], "--tls-key")
        check_pair(cert, key, "--tls-cert/--tls-key")
        ca = read_pem(self.client_ca, "--tls-client-ca") if self.client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC for each new connection: a new configuration when the files changed."""
        stamp = self._mtimes()
        with self._lock:
            if stamp == self._stamp:
                return None
            self._stamp = stamp
        try:
            config = self._load()
        except InvalidInput as exc:
            log.error("TLS files changed but cannot be used; keeping the previous ones", extra={"error": str(exc)})
            return None
        log.info("TLS certificate reloaded", extra={"cert": str(self.paths[0])})
        return config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._initial, self._fetch,
                                                   require_client_authentication=self.client_ca is not None)


def channel_credentials(ca: Path | str | None = None, cert: Path | str | None = None,
                        key: Path | str | None = None) -> grpc.ChannelCredentials:
    """TLS to a server whose certificate ``ca`` signed (None: the system's roots), presenting
    ``cert``/``key`` when the server asks for a client certificate (mTLS)."""
    if (cert is None) != (key is None):
        raise InvalidInput("a client certificate needs both a certificate and a key")
    root = read_pem(ca, "CA certificate") if ca else None
    chain = read_pem(cert, "client certificate") if cert else None
    private = read_pem(key, "client key") if key else None
    if chain is not None and private is not None:
        check_pair(chain, private, "client certificate/key")
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=private, certificate_chain=chain)
