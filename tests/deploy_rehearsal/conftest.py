"""The deploy rehearsal's world: the Pulumi program's own declarations (under the provider-format
mocks of tests/infra), moto in server mode on loopback (the Lambdas run in processes of their own
and reach it over HTTP, as they reach AWS), the real PostgreSQL, the Ollama contract-test server."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from tests.deploy_rehearsal.lambda_runtime import DeployedFunction, unpack_functions
from tests.infra.conftest import VALID_CONFIG, RecordingMocks, run_program

REGION = "eu-west-1"  # the mocked stack's region


@pytest.fixture(scope="module")
def deployed_functions(tmp_path_factory) -> dict[str, DeployedFunction]:
    import pulumi

    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="researcher-scorer", stack="test", preview=False)
    with pytest.MonkeyPatch.context() as monkeypatch:
        # minRows 100: the rehearsal's weekly run reads a 400-profile sample (a stack for a small table);
        # databaseSslMode prefer: the test server has no TLS (verified TLS: test_database_tls.py).
        deployment = run_program(mocks, {**VALID_CONFIG, "minRows": "100", "databaseSslMode": "prefer"}, monkeypatch)
    return unpack_functions(deployment, tmp_path_factory.mktemp("lambda-packages"))


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}


@pytest.fixture
def aws_world(moto_server, monkeypatch):
    """This process's boto3 (the test's own setup and checks) on the same moto server. boto3's
    default session caches the credentials it resolved: a fresh one here, and none left behind
    for later tests (they would reach for real endpoints with these)."""
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_server}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    yield moto_server
    boto3.DEFAULT_SESSION = None


def lambda_environment(moto_server: str, **overrides: str) -> dict[str, str]:
    """What Lambda adds to a function's variables (region, the role's credentials) plus the endpoint
    of this world's AWS and the overrides naming this world's resources."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_server, **overrides}


def create_bucket(name: str) -> None:
    s3 = boto3.client("s3")
    if name not in {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
