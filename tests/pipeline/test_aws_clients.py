"""The AWS clients of the Lambdas in a VPC: a connect that gets no answer (a private subnet with no
NAT and no VPC endpoint drops the SYN) gives up after API_CONNECT_TIMEOUT_S, API_MAX_ATTEMPTS
times, and is named - instead of botocore's 60 s x 5 attempts."""

from __future__ import annotations

import pytest

from pipeline import aws_clients


@pytest.fixture
def dropped_connects(monkeypatch):
    """Every connection attempt times out, as one into a subnet without a route does; the timeout
    each attempt was given is recorded."""
    import urllib3.util.connection

    timeouts: list[float] = []

    def create_connection(address, timeout=None, *args, **kwargs):
        timeouts.append(timeout)
        raise TimeoutError(f"timed out connecting to {address}")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    monkeypatch.setattr("urllib3.connection.connection.create_connection", create_connection)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    return timeouts


def test_each_connect_is_bounded_and_retried_a_few_times(dropped_connects):
    client = aws_clients.client("secretsmanager")
    with pytest.raises(Exception) as raised:
        client.get_secret_value(SecretId="researcher-db")
    cause = aws_clients.unreachable_cause(raised.value)
    assert cause is not None, raised.value
    assert dropped_connects == [aws_clients.API_CONNECT_TIMEOUT_S] * aws_clients.API_MAX_ATTEMPTS
    message = str(aws_clients.unreachable("secretsmanager", cause))
    assert "cannot connect to secretsmanager" in message and "createVpcEndpoints" in message


def test_the_dataset_lambda_names_an_unreachable_secrets_manager(dropped_connects, monkeypatch):
    from lambdas.generate_dataset import handler

    handler._secrets.cache_clear()
    settings = handler.Settings(
        artifact_bucket="b", database_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:db", seed_profiles_uri="s3://b/s"
    )
    with pytest.raises(aws_clients.AwsApiUnreachable, match="secretsmanager"):
        handler._database_params(settings)
    handler._secrets.cache_clear()
