"""Security controls over the whole mocked resource graph (every resource the program declares).

The control list (each a function below returning the violations it finds):

  S3-1  every bucket has a public access block with all four flags on
  S3-2  every bucket has default server-side encryption
  S3-3  every bucket has a policy denying requests without TLS
  S3-4  every bucket is versioned
  EC2-1 instances require IMDSv2 (http_tokens "required")
  EC2-2 instance volumes are encrypted
  EC2-3 instances have no key pair and no public IP address
  NET-1 no security group ingress from 0.0.0.0/0 or ::/0 (neither rules nor inline)
  IAM-1 no action "*" or "service:*" (no wildcard in any action)
  IAM-2 Resource "*" only for the actions in infra.iam.WILDCARD_RESOURCE_ACTIONS
  IAM-3 iam:PassRole only on named roles and only with an iam:PassedToService condition
  IAM-4 managed policies only from infra.iam.ALLOWED_MANAGED_POLICIES; roles assumable by AWS services only
  SFN-1 state machines log (to a log group's ":*" destination) and trace with X-Ray
  LAM-1 no secret values in Lambda environments (names or values), and X-Ray tracing on
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest

from infra import iam
from tests.infra.conftest import ACCOUNT, REGION, VALID_CONFIG

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY|SECRET(?!_ARN$)", re.I)
SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|://[^/\s:@]+:[^/\s@]+@|-----BEGIN")
OPEN_RANGES = {"0.0.0.0/0", "::/0"}


def by_type(resources) -> dict[str, list]:
    grouped = defaultdict(list)
    for resource in resources:
        grouped[resource.typ].append(resource)
    return grouped


def bucket_controls(resources) -> list[str]:
    grouped = by_type(resources)
    violations = []
    buckets = {f"{r.name}-id" for r in grouped["aws:s3/bucket:Bucket"]}

    def covered(typ: str, accept) -> set[str]:
        return {r.inputs["bucket"] for r in grouped[typ] if accept(r.inputs)}

    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for control, typ, accept in (
        ("S3-1 public access block", "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
         lambda i: all(i.get(flag) is True for flag in flags)),
        ("S3-2 default encryption", "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
         lambda i: i["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms")),
        ("S3-3 TLS-only policy", "aws:s3/bucketPolicy:BucketPolicy",
         lambda i: any(s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
                       for s in json.loads(i["policy"])["Statement"])),
        ("S3-4 versioning", "aws:s3/bucketVersioning:BucketVersioning",
         lambda i: i["versioningConfiguration"]["status"] == "Enabled"),
    ):
        violations += [f"{control}: bucket {bucket}" for bucket in sorted(buckets - covered(typ, accept))]
    return violations


def instance_controls(resources) -> list[str]:
    violations = []
    for r in by_type(resources)["aws:ec2/instance:Instance"]:
        i = r.inputs
        if i.get("metadataOptions", {}).get("httpTokens") != "required":
            violations.append(f"EC2-1 IMDSv2: {r.name}")
        volumes = [i.get("rootBlockDevice", {})] + list(i.get("ebsBlockDevices", []))
        if not all(volume.get("encrypted") is True for volume in volumes):
            violations.append(f"EC2-2 encrypted volumes: {r.name}")
        if i.get("keyName") or i.get("associatePublicIpAddress") is not False:
            violations.append(f"EC2-3 key pair / public IP: {r.name}")
    return violations


def network_controls(resources) -> list[str]:
    grouped = by_type(resources)
    violations = [f"NET-1 open ingress rule: {r.name}"
                  for r in grouped["aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"]
                  if r.inputs.get("cidrIpv4") in OPEN_RANGES or r.inputs.get("cidrIpv6") in OPEN_RANGES]
    for r in grouped["aws:ec2/securityGroup:SecurityGroup"] + grouped["aws:ec2/securityGroupRule:SecurityGroupRule"]:
        rules = r.inputs.get("ingress", []) if r.typ.endswith("SecurityGroup") else (
            [r.inputs] if r.inputs.get("type") == "ingress" else [])
        if any(set(rule.get("cidrBlocks", [])) & OPEN_RANGES or set(rule.get("ipv6CidrBlocks", [])) & OPEN_RANGES
               for rule in rules):
            violations.append(f"NET-1 open inline ingress: {r.name}")
    return violations


def policy_statements(resources):
    for r in by_type(resources)["aws:iam/rolePolicy:RolePolicy"]:
        for statement in json.loads(r.inputs["policy"])["Statement"]:
            yield r.name, statement


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def iam_controls(resources) -> list[str]:
    violations = []
    for name, statement in policy_statements(resources):
        actions, targets = _listed(statement.get("Action", [])), _listed(statement.get("Resource", []))
        if statement.get("Effect") != "Allow" or "NotAction" in statement or "NotResource" in statement:
            violations.append(f"IAM-1 only plain Allow statements: {name} {statement.get('Sid')}")
        violations += [f"IAM-1 wildcard action {action}: {name}" for action in actions if "*" in action]
        if "*" in targets:
            violations += [f"IAM-2 Resource * for {action}: {name}" for action in actions
                           if action not in iam.WILDCARD_RESOURCE_ACTIONS]
        if "iam:PassRole" in actions:
            passed = statement.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService")
            if not passed or any("*" in target for target in targets):
                violations.append(f"IAM-3 PassRole unconditioned or to any role: {name}")
    grouped = by_type(resources)
    for r in grouped["aws:iam/rolePolicyAttachment:RolePolicyAttachment"]:
        if r.inputs["policyArn"].rsplit("/", 1)[-1] not in iam.ALLOWED_MANAGED_POLICIES:
            violations.append(f"IAM-4 managed policy {r.inputs['policyArn']}: {r.name}")
    for r in grouped["aws:iam/role:Role"]:
        if r.inputs.get("managedPolicyArns"):
            violations.append(f"IAM-4 managed policies inline on the role: {r.name}")
        for statement in json.loads(r.inputs["assumeRolePolicy"])["Statement"]:
            principal = statement.get("Principal", {})
            if set(principal) != {"Service"} or not str(principal["Service"]).endswith(".amazonaws.com"):
                violations.append(f"IAM-4 role assumable by {principal}: {r.name}")
    return violations


def state_machine_controls(resources) -> list[str]:
    violations = []
    for r in by_type(resources)["aws:sfn/stateMachine:StateMachine"]:
        logging = r.inputs.get("loggingConfiguration", {})
        if logging.get("level", "OFF") == "OFF" or not str(logging.get("logDestination", "")).endswith(":*"):
            violations.append(f"SFN-1 logging: {r.name}")
        if r.inputs.get("tracingConfiguration", {}).get("enabled") is not True:
            violations.append(f"SFN-1 tracing: {r.name}")
    return violations


def lambda_controls(resources) -> list[str]:
    violations = []
    for r in by_type(resources)["aws:lambda/function:Function"]:
        for key, value in r.inputs.get("environment", {}).get("variables", {}).items():
            if SECRET_NAME.search(key) or SECRET_VALUE.search(str(value)):
                violations.append(f"LAM-1 secret in environment {key}: {r.name}")
        if r.inputs.get("tracingConfig", {}).get("mode") != "Active":
            violations.append(f"LAM-1 tracing: {r.name}")
    return violations


CONTROLS = (bucket_controls, instance_controls, network_controls, iam_controls, state_machine_controls, lambda_controls)

STAGED = {
    **VALID_CONFIG,
    "kmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "ollamaArchiveUrl": "s3://staging-bucket/ollama/ollama-linux-amd64.tgz",
    "seedProfilesUri": "s3://staging-bucket/seeds/profiles.jsonl",
    "baseModelS3Uri": "s3://models-bucket/Mistral-7B-Instruct-v0.2/",
}


@pytest.mark.parametrize("config", [VALID_CONFIG, STAGED], ids=["defaults", "kms-and-staged-inputs"])
@pytest.mark.parametrize("control", CONTROLS, ids=lambda control: control.__name__)
def test_the_program_passes_the_control(deploy, config, control):
    deployment = deploy(config)
    assert deployment.mocks.resources
    assert control(deployment.mocks.resources) == []


def test_the_controls_catch_violations(deploy):
    """Each control, fed a graph with one planted violation, reports it (they are not vacuous)."""
    import copy

    resources = copy.deepcopy(deploy().mocks.resources)
    grouped = by_type(resources)
    grouped["aws:s3/bucketVersioning:BucketVersioning"][0].inputs["versioningConfiguration"]["status"] = "Suspended"
    grouped["aws:ec2/instance:Instance"][0].inputs["metadataOptions"]["httpTokens"] = "optional"
    grouped["aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"][0].inputs["cidrIpv4"] = "0.0.0.0/0"
    policy = grouped["aws:iam/rolePolicy:RolePolicy"][0]
    document = json.loads(policy.inputs["policy"])
    document["Statement"] += [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::x"]},
                              {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"},
                              {"Effect": "Allow", "Action": ["iam:PassRole"], "Resource": "*"}]
    policy.inputs["policy"] = json.dumps(document)
    grouped["aws:sfn/stateMachine:StateMachine"][0].inputs["tracingConfiguration"]["enabled"] = False
    grouped["aws:lambda/function:Function"][0].inputs["environment"]["variables"]["DATABASE_PASSWORD"] = "hunter2"
    found = [violation for control in CONTROLS for violation in control(resources)]
    for expected in ("S3-4", "EC2-1", "NET-1", "IAM-1 wildcard action s3:*", "IAM-2 Resource * for s3:GetObject",
                     "IAM-3", "SFN-1 tracing", "LAM-1 secret in environment DATABASE_PASSWORD"):
        assert any(violation.startswith(expected) for violation in found), expected


def test_the_wildcard_resource_list_says_why_for_each_action():
    for action, reason in iam.WILDCARD_RESOURCE_ACTIONS.items():
        assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action) and reason.strip(), action


@pytest.mark.parametrize("actions, resources, message", [
    (["s3:*"], ["arn:aws:s3:::b/*"], "must name one action"),
    (["*"], ["arn:aws:s3:::b/*"], "must name one action"),
    (["s3:GetObject"], ["*"], "Resource '*' is allowed only for"),
    (["ec2:DescribeInstances", "ec2:StartInstances"], ["*"], "not ['ec2:StartInstances']"),
    (["s3:GetObject"], [], "no resources"),
])
def test_statements_refuse_more_than_their_purpose(actions, resources, message):
    with pytest.raises(iam.PolicyError, match=re.escape(message)):
        iam.Statement("Test", actions, resources)


def test_only_listed_managed_policies_can_be_attached():
    assert iam.managed_policy_arn("aws", iam.SSM_CORE) == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    with pytest.raises(iam.PolicyError):
        iam.managed_policy_arn("aws", "AdministratorAccess")
