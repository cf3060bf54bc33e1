"""boto3 clients for the AWS APIs the Lambdas call from inside a VPC, with bounded connects.

A Lambda in a private subnet reaches an AWS API only through a NAT or a VPC endpoint. Without
either, a connection attempt is never refused: its SYN is dropped, and botocore's defaults (60 s
connect timeout, up to 5 attempts in legacy retry mode) spend minutes per call - GenerateDataset
used to fail as a misleading InvalidArgument after 5 minutes, ScoreProfiles at its own timeout
with no per-profile answer. Here a connect gives up after API_CONNECT_TIMEOUT_S, tried
API_MAX_ATTEMPTS times, and the failure is named (AwsApiUnreachable) with the fix.
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

from pipeline.errors import PipelineError

API_CONNECT_TIMEOUT_S = 5  # an AWS API endpoint answers a connect in milliseconds when reachable
API_READ_TIMEOUT_S = 60  # botocore's default: S3 streams large objects over one response
API_MAX_ATTEMPTS = 3  # standard retry mode: the first try and two retries, with backoff
UNREACHABLE_ERRORS = (ConnectTimeoutError, EndpointConnectionError)


class AwsApiUnreachable(PipelineError):
    """An AWS API endpoint could not be connected to: from a private subnet, no NAT and no VPC
    endpoint for that service (docs/deploy.md, Network)."""


def client_config() -> Config:
    return Config(
        connect_timeout=API_CONNECT_TIMEOUT_S,
        read_timeout=API_READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": API_MAX_ATTEMPTS},  # "max_attempts" would count retries only
    )


def client(service: str) -> Any:
    import boto3  # only AWS paths need it

    return boto3.client(service, config=client_config())


def unreachable_cause(exc: BaseException) -> BaseException | None:
    """The connect failure at the root of ``exc`` (a wrapper such as Powertools' GetParameterError
    keeps it as its cause), or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, UNREACHABLE_ERRORS):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def unreachable(service: str, exc: BaseException) -> AwsApiUnreachable:
    return AwsApiUnreachable(
        f"cannot connect to {service} ({exc}) within {API_CONNECT_TIMEOUT_S} s, {API_MAX_ATTEMPTS} tries: "
        f"this subnet reaches no {service} endpoint (a NAT gateway, or the stack's createVpcEndpoints)"
    )
