"""IAM, least privilege: statements built here refuse `*` actions, and `*` resources except for the
actions listed in WILDCARD_RESOURCE_ACTIONS (AWS defines no resource type for them).

Plain data plus two small Pulumi helpers (a role with its inline policy). The security test walks
the mocked resource graph with the same list, so a statement added anywhere else is caught too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

# Actions that take only Resource "*" (Service Authorization Reference: no resource types), and why
# each is needed. Everything else names its resources.
WILDCARD_RESOURCE_ACTIONS: Mapping[str, str] = {
    "ec2:DescribeInstances": "state machine, DeployModel and ScoreProfiles: is the Ollama host running (DescribeHost, wake)",
    "ec2:DescribeNetworkInterfaces": "Lambdas in the VPC: Lambda manages their network interfaces",
    "ec2:DescribeSubnets": "Lambdas in the VPC: Lambda checks their subnets",
    "ecr:GetAuthorizationToken": "SageMaker: pull the training image",
    "cloudwatch:PutMetricData": "SageMaker: the training job's metrics (namespace-conditioned)",
    "xray:PutTraceSegments": "state machine and Lambdas: X-Ray tracing",
    "xray:PutTelemetryRecords": "state machine and Lambdas: X-Ray tracing",
    "xray:GetSamplingRules": "state machine: X-Ray tracing",
    "xray:GetSamplingTargets": "state machine: X-Ray tracing",
    "logs:CreateLogDelivery": "state machine: vended log delivery to CloudWatch Logs",
    "logs:GetLogDelivery": "state machine: vended log delivery",
    "logs:UpdateLogDelivery": "state machine: vended log delivery",
    "logs:DeleteLogDelivery": "state machine: vended log delivery",
    "logs:ListLogDeliveries": "state machine: vended log delivery",
    "logs:PutResourcePolicy": "state machine: vended log delivery",
    "logs:DescribeResourcePolicies": "state machine: vended log delivery",
    "logs:DescribeLogGroups": "state machine: vended log delivery",
}


class PolicyError(ValueError):
    """A statement would grant more than its purpose needs."""


# AWS managed policies the program attaches (the security test allows only these), and why.
SSM_CORE = "AmazonSSMManagedInstanceCore"
ALLOWED_MANAGED_POLICIES: Mapping[str, str] = {
    SSM_CORE: "the Ollama host's SSM agent (Session Manager instead of SSH; AWS keeps its action list current)",
}


def managed_policy_arn(partition: str, name: str) -> str:
    if name not in ALLOWED_MANAGED_POLICIES:
        raise PolicyError(f"managed policy {name} is not in ALLOWED_MANAGED_POLICIES")
    return f"arn:{partition}:iam::aws:policy/{name}"


@dataclass(frozen=True)
class Statement:
    sid: str
    actions: Sequence[str]
    resources: Sequence[str]
    conditions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for action in self.actions:
            service, _, name = action.partition(":")
            if not service or not name or "*" in action:
                raise PolicyError(f"{self.sid}: action {action!r} must name one action, no wildcard")
        if "*" in self.resources:
            broad = sorted(set(self.actions) - set(WILDCARD_RESOURCE_ACTIONS))
            if broad or len(self.resources) != 1:
                raise PolicyError(f"{self.sid}: Resource '*' is allowed only for {sorted(WILDCARD_RESOURCE_ACTIONS)}, not {broad}")
        if not self.resources:
            raise PolicyError(f"{self.sid}: no resources")

    def as_dict(self) -> dict[str, Any]:
        statement: dict[str, Any] = {"Sid": self.sid, "Effect": "Allow", "Action": sorted(self.actions), "Resource": list(self.resources)}
        if self.conditions:
            statement["Condition"] = {k: dict(v) for k, v in self.conditions.items()}
        return statement


def policy_json(statements: Sequence[Statement]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [s.as_dict() for s in statements]}, sort_keys=True)


def assume_role_policy(service: str, conditions: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if conditions:
        statement["Condition"] = {k: dict(v) for k, v in conditions.items()}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]}, sort_keys=True)


def service_role(
    name: str,
    service: str,
    statements: pulumi.Input[Sequence[Statement]] | None,
    parent: pulumi.Resource,
    description: str,
    conditions: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[aws.iam.Role, aws.iam.RolePolicy | None]:
    """A role only ``service`` may assume, with one inline policy (each grant visible and scoped
    here; managed policies only from ALLOWED_MANAGED_POLICIES)."""
    role = aws.iam.Role(
        f"{name}-role",
        assume_role_policy=assume_role_policy(service, conditions),
        description=description,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    if statements is None:
        return role, None
    policy = aws.iam.RolePolicy(
        f"{name}-policy",
        role=role.id,
        policy=pulumi.Output.from_input(statements).apply(policy_json),
        opts=pulumi.ResourceOptions(parent=role),
    )
    return role, policy


@dataclass(frozen=True)
class Account:
    """Partition, region and account id, for building ARNs of resources by name."""

    partition: str
    region: str
    account_id: str

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        return f"arn:{self.partition}:{service}:{self.region if regional else ''}:{self.account_id}:{resource}"


@dataclass(frozen=True)
class StackContext:
    """What every component takes from the stack: the account's ARN parts, log retention, the KMS key."""

    account: pulumi.Output[Account]
    log_retention_days: int
    kms_key_arn: str | None


def current_account() -> pulumi.Output[Account]:
    identity = aws.get_caller_identity_output()
    region = aws.get_region_output()
    partition = aws.get_partition_output()
    return pulumi.Output.all(partition.partition, region.region, identity.account_id).apply(lambda v: Account(*v))


def log_writing(sid: str, log_group_arn: str) -> Statement:
    """Write to one log group (its streams)."""
    return Statement(sid, ["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_group_arn}:*"])


def vpc_networking(account: Account) -> list[Statement]:
    """What a Lambda in a VPC needs for its network interfaces, scoped to this account and region."""
    return [
        Statement(
            "VpcNetworkInterfaces",
            ["ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"],
            [account.arn("ec2", "network-interface/*"), account.arn("ec2", "subnet/*"), account.arn("ec2", "security-group/*")],
        ),
        Statement("VpcDescribe", ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"], ["*"]),
    ]


def xray_writing() -> Statement:
    return Statement("XRayTracing", ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"])


def host_wake(account: Account, instance_id: str, kms_key_arn: str | None) -> list[Statement]:
    """What waking the Ollama host on demand takes (DeployModel, ScoreProfiles): start that one
    instance, read its state, and, where its volume is under the stack's CMK, let EC2 take a grant
    on the key to attach it (without it StartInstances succeeds and the instance goes back to
    stopped: Client.InternalError)."""
    statements = [
        Statement("StartHost", ["ec2:StartInstances"], [account.arn("ec2", f"instance/{instance_id}")]),
        Statement("DescribeHost", ["ec2:DescribeInstances"], ["*"]),
    ]
    if kms_key_arn:
        statements.append(Statement("HostVolumeKey", ["kms:CreateGrant"], [kms_key_arn], {"Bool": {"kms:GrantIsForAWSResource": "true"}}))
    return statements


def kms_use(sid: str, key_arn: str | None, actions: Sequence[str] = ("kms:Decrypt", "kms:GenerateDataKey")) -> list[Statement]:
    return [Statement(sid, list(actions), [key_arn])] if key_arn else []


def s3_access(sid: str, bucket_arn: str, *, read: Sequence[str] = (), write: Sequence[str] = ()) -> list[Statement]:
    """Objects under the given key patterns (e.g. ``runs/*/dataset/*``) of one bucket. ListBucket on
    the bucket too: without it S3 answers a missing key with 403 instead of 404, and the stages
    check for earlier runs' artifacts (it reveals key names, no content)."""
    statements = [Statement(f"{sid}List", ["s3:ListBucket"], [bucket_arn])]
    if read:
        statements.append(Statement(f"{sid}Read", ["s3:GetObject"], [f"{bucket_arn}/{pattern}" for pattern in read]))
    if write:
        statements.append(
            Statement(f"{sid}Write", ["s3:PutObject", "s3:AbortMultipartUpload"], [f"{bucket_arn}/{pattern}" for pattern in write])
        )
    return statements


def s3_uri_arns(uri: str, partition: str = "aws") -> tuple[str, str]:
    """s3://bucket/prefix/ -> (bucket ARN, "prefix/*"); s3://bucket/key -> (bucket ARN, "key").

    Not pipeline.storage.split_s3_uri: that module imports boto3 and smart_open, which the Pulumi
    program's environment does not have. Config has checked the URI's form already."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return f"arn:{partition}:s3:::{bucket}", key if key and not key.endswith("/") else f"{key}*"


def base_model_read(base_model_uri: str, artifact_bucket_arn: str, partition: str) -> list[Statement]:
    """Read the staged base model: a prefix of the artifact bucket (listed already) or of another bucket."""
    bucket_arn, pattern = s3_uri_arns(base_model_uri, partition)
    if bucket_arn == artifact_bucket_arn:
        return [Statement("BaseModelRead", ["s3:GetObject"], [f"{bucket_arn}/{pattern}"])]
    return s3_access("BaseModel", bucket_arn, read=[pattern])
