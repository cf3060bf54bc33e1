"""TLS to the database, against a real PostgreSQL speaking TLS with a test CA's certificate for
``localhost``: verified by default (the RDS CA bundle), relaxed only by the stack's setting, and no
error ever carries the password."""

import json

import pytest
from cryptography import x509

from pipeline.dataset import source
from pipeline.errors import DatabaseUnavailable

PASSWORD = "s3cret-never-in-a-message"


def secret(port: int, host: str = "localhost", **extra) -> str:
    return json.dumps({"host": host, "port": port, "username": "postgres", "password": PASSWORD, "dbname": "postgres", **extra})


def connection_uses_tls(conn) -> bool:
    with conn.cursor() as cursor:
        cursor.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        return cursor.fetchone()[0]


def test_by_default_the_server_must_hold_a_certificate_from_the_rds_cas(tls_server):
    params = source.ConnectionParams.from_secret(secret(tls_server.port, sslmode="disable"))  # a secret cannot relax it
    assert params.keywords["sslmode"] == "verify-full" and params.keywords["sslrootcert"] == str(source.RDS_CA_BUNDLE)
    with pytest.raises(DatabaseUnavailable, match="certificate verify failed") as failure:
        source.connect(params)
    assert PASSWORD not in str(failure.value)


def test_verify_full_connects_to_a_server_whose_ca_it_trusts(tls_server):
    conn = source.connect(source.ConnectionParams.from_secret(secret(tls_server.port), ca_bundle=tls_server.ca_file))
    try:
        assert connection_uses_tls(conn)
    finally:
        conn.close()


def test_verify_full_refuses_a_trusted_certificate_for_another_name(tls_server):
    params = source.ConnectionParams.from_secret(secret(tls_server.port, host="127.0.0.1"), ca_bundle=tls_server.ca_file)
    with pytest.raises(DatabaseUnavailable, match="does not match host name") as failure:
        source.connect(params)
    assert PASSWORD not in str(failure.value)


def test_the_stack_setting_relaxes_verification_but_keeps_encryption(tls_server):
    conn = source.connect(source.ConnectionParams.from_secret(secret(tls_server.port, host="127.0.0.1"), sslmode="require"))
    try:
        assert connection_uses_tls(conn)
    finally:
        conn.close()


def test_an_unknown_ssl_mode_is_a_named_error():
    with pytest.raises(source.InvalidArgument, match="sslmode must be one of verify-full"):
        source.ConnectionParams.from_secret(secret(5432), sslmode="allow-anything")


def test_the_shipped_bundle_holds_the_rds_root_cas():
    certificates = x509.load_pem_x509_certificates(source.RDS_CA_BUNDLE.read_bytes())
    names = {certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value for certificate in certificates}
    # The G1 roots RDS signs servers with today, in the regions a deploy most likely uses, and the
    # Amazon roots RDS Proxy presents.
    for region in ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"):
        for kind in ("RSA2048", "RSA4096", "ECC384"):
            assert f"Amazon RDS {region} Root CA {kind} G1" in names
    assert {f"Amazon Root CA {n}" for n in range(1, 5)} <= names
    assert all(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca for certificate in certificates)
