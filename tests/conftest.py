"""Shared fixtures: a real PostgreSQL (never a mock) and moto for AWS.

``make test`` starts a throwaway Debian PostgreSQL server and exports DATABASE_URL; a bare
``pytest`` falls back to the embedded server the demo uses.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import boto3
import psycopg2
import pytest
from moto import mock_aws

from pipeline.dataset import source

TEST_REGION = "us-east-1"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from pipeline.local.embedded import embedded_postgres

    with embedded_postgres() as embedded_url:
        yield embedded_url


def _admin(url: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = _admin(server_url)
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    params = dict(psycopg2.extensions.parse_dsn(server_url), dbname=name)
    url = psycopg2.extensions.make_dsn(**params)
    try:
        yield url
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def db(database_url: str):
    """A connection to the fresh database, with the spec's tables created."""
    conn = psycopg2.connect(database_url)
    source.ensure_schema(conn)
    yield conn
    conn.close()


def fake_aws_credentials(monkeypatch, region: str = TEST_REGION) -> None:
    """Credentials that cannot reach a real account, and the region the tests run in."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def aws(monkeypatch) -> Iterator[None]:
    """moto for every AWS API, with fake credentials so nothing can reach a real account."""
    fake_aws_credentials(monkeypatch)
    with mock_aws():
        yield


@pytest.fixture
def bucket(aws) -> str:
    name = f"artifacts-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", region_name=TEST_REGION).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def tls_server():
    """A PostgreSQL server with TLS on and a certificate for ``localhost`` from a test CA."""
    from tests.tls_postgres import tls_postgres

    with tls_postgres() as server:
        if server is None:
            pytest.skip("Debian's postgresql is not installed (make test installs it)")
        yield server
