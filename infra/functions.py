"""One Lambda function as the components declare it: its own role (only its statements, its own
log group, X-Ray, VPC interfaces when in a VPC), its own log group with retention, X-Ray tracing,
JSON logs. Used by the dataset, serving and conversion components."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra import iam, packaging

LAYERS_PREFIX = "lambda-layers/"  # in the artifact bucket


@dataclass(frozen=True)
class Network:
    subnet_ids: Sequence[str]
    security_group_ids: Sequence[pulumi.Input[str]]


@dataclass(frozen=True)
class FunctionSpec:
    stage: str  # lambdas/<stage>/handler.py, the state name's snake case
    description: str
    memory_mb: int
    timeout_s: int
    statements: pulumi.Input[Sequence[iam.Statement]]  # what the stage itself touches
    environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    image_uri: pulumi.Input[str] | None = None  # a container image instead of the zip + layer
    ephemeral_storage_mb: int = 512


@dataclass(frozen=True)
class Deployed:
    function: aws.lambda_.Function
    role: aws.iam.Role
    log_group: aws.cloudwatch.LogGroup


def log_group_name(stage: str) -> str:
    return f"/{pulumi.get_project()}/{pulumi.get_stack()}/lambda/{stage}"


def declare(
    spec: FunctionSpec,
    *,
    parent: pulumi.Resource,
    context: iam.StackContext,
    code: pulumi.Archive | None = None,
    layers: Sequence[pulumi.Input[str]] = (),
    network: Network | None = None,
) -> Deployed:
    name = spec.stage.replace("_", "-")
    child = pulumi.ResourceOptions(parent=parent)
    log_group = aws.cloudwatch.LogGroup(
        f"{name}-logs",
        name=log_group_name(spec.stage),
        retention_in_days=context.log_retention_days,
        kms_key_id=context.kms_key_arn,
        opts=child,
    )

    def statements(values) -> list[iam.Statement]:
        account_, own = values
        result = [*own, iam.log_writing("OwnLogGroup", account_.arn("logs", f"log-group:{log_group_name(spec.stage)}")), iam.xray_writing()]
        if network is not None:
            result += iam.vpc_networking(account_)
        return result

    role, policy = iam.service_role(
        name,
        "lambda.amazonaws.com",
        pulumi.Output.all(context.account, spec.statements).apply(statements),
        parent,
        f"{spec.description} (Lambda {spec.stage})",
    )
    common: dict[str, Any] = dict(
        description=spec.description,
        role=role.arn,
        architectures=[packaging.LAMBDA_ARCHITECTURE],
        memory_size=spec.memory_mb,
        timeout=spec.timeout_s,
        ephemeral_storage=aws.lambda_.FunctionEphemeralStorageArgs(size=spec.ephemeral_storage_mb),
        environment=aws.lambda_.FunctionEnvironmentArgs(variables=dict(spec.environment)) if spec.environment else None,
        tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
        logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="JSON", log_group=log_group.name),
        vpc_config=aws.lambda_.FunctionVpcConfigArgs(
            subnet_ids=list(network.subnet_ids), security_group_ids=list(network.security_group_ids)
        )
        if network is not None
        else None,
        kms_key_arn=context.kms_key_arn,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[r for r in (policy, log_group) if r is not None]),
    )
    if spec.image_uri is not None:
        function = aws.lambda_.Function(name, package_type="Image", image_uri=spec.image_uri, **common)
    else:
        function = aws.lambda_.Function(
            name,
            package_type="Zip",
            runtime=packaging.LAMBDA_RUNTIME,
            code=code,
            handler=f"lambdas.{spec.stage}.handler.handler",
            layers=list(layers),
            **common,
        )
    return Deployed(function, role, log_group)


def dependency_layer(name: str, requirements: str, bucket_name: pulumi.Input[str], parent: pulumi.Resource) -> aws.lambda_.LayerVersion:
    """The layer's zip goes through the artifact bucket: a direct upload is capped at 50 MB zipped,
    and the serving layer (numpy, matplotlib) is ~44 MB."""
    directory = packaging.dependency_layer(packaging.ROOT / "requirements" / requirements)
    upload = aws.s3.BucketObjectv2(
        f"{name}-layer-zip",
        bucket=bucket_name,
        key=f"{LAYERS_PREFIX}{pulumi.get_stack()}/{directory.name}.zip",
        source=packaging.archive(directory),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return aws.lambda_.LayerVersion(
        f"{name}-layer",
        layer_name=f"{pulumi.get_project()}-{pulumi.get_stack()}-{name}",
        s3_bucket=upload.bucket,
        s3_key=upload.key,
        source_code_hash=upload.etag,
        compatible_runtimes=[packaging.LAMBDA_RUNTIME],
        compatible_architectures=[packaging.LAMBDA_ARCHITECTURE],
        description=f"requirements/{requirements} for {packaging.LAMBDA_RUNTIME} {packaging.LAMBDA_ARCHITECTURE}",
        opts=pulumi.ResourceOptions(parent=parent),
    )


def security_group(name: str, vpc_id: str, description: str, parent: pulumi.Resource) -> aws.ec2.SecurityGroup:
    """A group with no rules of its own (ingress and egress are separate, named rule resources) and
    HTTPS egress for the AWS APIs (S3, Secrets Manager) through the VPC's NAT or endpoints."""
    group = aws.ec2.SecurityGroup(
        f"{name}-sg", vpc_id=vpc_id, description=description, revoke_rules_on_delete=True, opts=pulumi.ResourceOptions(parent=parent)
    )
    aws.vpc.SecurityGroupEgressRule(
        f"{name}-https-egress",
        security_group_id=group.id,
        ip_protocol="tcp",
        from_port=443,
        to_port=443,
        cidr_ipv4="0.0.0.0/0",
        description="AWS APIs over HTTPS",
        opts=pulumi.ResourceOptions(parent=group),
    )
    return group
