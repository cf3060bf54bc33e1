"""A PostgreSQL server that speaks TLS with a certificate from a test CA, for the database TLS tests.

The certificate names only ``localhost``: connecting to 127.0.0.1 with verify-full must fail on the
name, connecting to localhost must succeed with the test CA and fail with any other (the RDS bundle).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca_file: Path  # the test CA's certificate: the roots a client must trust


def _bindir() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").is_file():
            return candidate
    return None


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("researcher-scorer test CA"))
        .issuer_name(_name("researcher-scorer test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def tls_postgres() -> Iterator[TlsServer | None]:
    """Start the server (None when Debian's PostgreSQL is not installed: ``make test`` installs it)."""
    bindir = _bindir()
    if bindir is None:
        yield None
        return
    # Directly under /tmp: the server user must reach it (pytest's own temporary tree is private to root).
    with tempfile.TemporaryDirectory(prefix="tls-postgres.") as name:
        yield from _serve(bindir, Path(name))


def _serve(bindir: Path, directory: Path) -> Iterator[TlsServer]:
    directory.chmod(0o755)
    ca_file, cert_file, key_file = _write_certificates(directory)
    data = directory / "data"
    as_server_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse root: run them as the postgres user
        as_server_user = ["runuser", "-u", "postgres", "--"]
        for path in (directory, cert_file, key_file):
            shutil.chown(path, "postgres")
    port = _free_port()
    subprocess.run(
        [*as_server_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"], check=True, capture_output=True
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={directory} -c fsync=off "
        f"-c ssl=on -c ssl_cert_file={cert_file} -c ssl_key_file={key_file}"
    )
    log = directory / "server.log"
    subprocess.run(
        [*as_server_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield TlsServer(port, ca_file)
    finally:
        subprocess.run([*as_server_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
