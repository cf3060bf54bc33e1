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


def bucket_controls(resources, states) -> list[str]:
    grouped = by_type(resources)
    violations = []
    buckets = {states[(r.typ, r.name)]["bucket"] for r in grouped["aws:s3/bucket:Bucket"]}  # a bucket's id is its name

    def covered(typ: str, accept) -> set[str]:
        return {r.inputs["bucket"] for r in grouped[typ] if accept(r.inputs)}

    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for control, typ, accept in (
        (
            "S3-1 public access block",
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            lambda i: all(i.get(flag) is True for flag in flags),
        ),
        (
            "S3-2 default encryption",
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            lambda i: i["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms"),
        ),
        (
            "S3-3 TLS-only policy",
            "aws:s3/bucketPolicy:BucketPolicy",
            lambda i: any(
                s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
                for s in json.loads(i["policy"])["Statement"]
            ),
        ),
        ("S3-4 versioning", "aws:s3/bucketVersioning:BucketVersioning", lambda i: i["versioningConfiguration"]["status"] == "Enabled"),
    ):
        violations += [f"{control}: bucket {bucket}" for bucket in sorted(buckets - covered(typ, accept))]
    return violations


def instance_controls(resources, states) -> list[str]:
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


def network_controls(resources, states) -> list[str]:
    grouped = by_type(resources)
    violations = [
        f"NET-1 open ingress rule: {r.name}"
        for r in grouped["aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"]
        if r.inputs.get("cidrIpv4") in OPEN_RANGES or r.inputs.get("cidrIpv6") in OPEN_RANGES
    ]
    for r in grouped["aws:ec2/securityGroup:SecurityGroup"] + grouped["aws:ec2/securityGroupRule:SecurityGroupRule"]:
        rules = (
            r.inputs.get("ingress", []) if r.typ.endswith("SecurityGroup") else ([r.inputs] if r.inputs.get("type") == "ingress" else [])
        )
        if any(set(rule.get("cidrBlocks", [])) & OPEN_RANGES or set(rule.get("ipv6CidrBlocks", [])) & OPEN_RANGES for rule in rules):
            violations.append(f"NET-1 open inline ingress: {r.name}")
    return violations


def policy_statements(resources):
    for r in by_type(resources)["aws:iam/rolePolicy:RolePolicy"]:
        for statement in json.loads(r.inputs["policy"])["Statement"]:
            yield r.name, statement


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def iam_controls(resources, states) -> list[str]:
    violations = []
    for name, statement in policy_statements(resources):
        actions, targets = _listed(statement.get("Action", [])), _listed(statement.get("Resource", []))
        if statement.get("Effect") != "Allow" or "NotAction" in statement or "NotResource" in statement:
            violations.append(f"IAM-1 only plain Allow statements: {name} {statement.get('Sid')}")
        violations += [f"IAM-1 wildcard action {action}: {name}" for action in actions if "*" in action]
        if "*" in targets:
            violations += [f"IAM-2 Resource * for {action}: {name}" for action in actions if action not in iam.WILDCARD_RESOURCE_ACTIONS]
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


def state_machine_controls(resources, states) -> list[str]:
    violations = []
    for r in by_type(resources)["aws:sfn/stateMachine:StateMachine"]:
        logging = r.inputs.get("loggingConfiguration", {})
        if logging.get("level", "OFF") == "OFF" or not str(logging.get("logDestination", "")).endswith(":*"):
            violations.append(f"SFN-1 logging: {r.name}")
        if r.inputs.get("tracingConfiguration", {}).get("enabled") is not True:
            violations.append(f"SFN-1 tracing: {r.name}")
    return violations


def lambda_controls(resources, states) -> list[str]:
    violations = []
    for r in by_type(resources)["aws:lambda/function:Function"]:
        for key, value in r.inputs.get("environment", {}).get("variables", {}).items():
            if SECRET_NAME.search(key) or SECRET_VALUE.search(str(value)):
                violations.append(f"LAM-1 secret in environment {key}: {r.name}")
        if r.inputs.get("tracingConfig", {}).get("mode") != "Active":
            violations.append(f"LAM-1 tracing: {r.name}")
    return violations


DIGEST_PINNED_IMAGE = re.compile(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/[a-z0-9._/-]+@sha256:[0-9a-f]{64}")


def image_controls(resources, states) -> list[str]:
    """IMG-1: Lambda's CreateFunction and SageMaker's CreateTrainingJob get `repo@sha256:<digest>`:
    one image, the one that was built and tested (never `repo:tag@sha256:…`, which Lambda refuses)."""
    grouped = by_type(resources)
    uris = [(r.name, r.inputs["imageUri"]) for r in grouped["aws:lambda/function:Function"] if r.inputs.get("imageUri")]
    for r in grouped["aws:sfn/stateMachine:StateMachine"]:
        for name, state in json.loads(r.inputs["definition"])["States"].items():
            image = state.get("Parameters", {}).get("AlgorithmSpecification", {}).get("TrainingImage")
            if image is not None:
                uris.append((f"{r.name}.{name}", image))
    violations = [f"IMG-1 image not pinned by digest alone: {name} {uri}" for name, uri in uris if not DIGEST_PINNED_IMAGE.fullmatch(uri)]
    return violations + (["IMG-1 no image URIs found"] if not uris else [])


def _grants(resources, key_arn: str) -> dict[str, set[str]]:
    """Role policy name -> the kms actions it allows on ``key_arn``."""
    granted: dict[str, set[str]] = defaultdict(set)
    for name, statement in policy_statements(resources):
        if key_arn in _listed(statement.get("Resource", [])):
            granted[name] |= {action for action in _listed(statement["Action"]) if action.startswith("kms:")}
    return granted


def kms_controls(resources, states) -> list[str]:
    """KMS-1: every role that writes to or reads from something encrypted with the stack's key may
    use that key for it (SNS: GenerateDataKey and Decrypt to publish; S3: GenerateDataKey to write,
    Decrypt to read). A missing grant is a denied call at run time, swallowed by a Catch."""
    grouped = by_type(resources)
    encrypted_topics = {
        states[(r.typ, r.name)]["arn"]: r.inputs["kmsMasterKeyId"] for r in grouped["aws:sns/topic:Topic"] if r.inputs.get("kmsMasterKeyId")
    }
    bucket_names = {states[(r.typ, r.name)]["bucket"]: r for r in grouped["aws:s3/bucket:Bucket"]}
    encrypted_buckets = {}
    for r in grouped["aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"]:
        default = r.inputs["rules"][0]["applyServerSideEncryptionByDefault"]
        if default.get("kmsMasterKeyId") and r.inputs["bucket"] in bucket_names:
            encrypted_buckets[f"arn:aws:s3:::{r.inputs['bucket']}"] = default["kmsMasterKeyId"]
    violations = []
    for name, statement in policy_statements(resources):
        actions, targets = set(_listed(statement.get("Action", []))), _listed(statement.get("Resource", []))
        needs: dict[str, set[str]] = defaultdict(set)
        if "sns:Publish" in actions:
            for target in targets:
                if target in encrypted_topics:
                    needs[encrypted_topics[target]] |= {"kms:GenerateDataKey", "kms:Decrypt"}
        for target in targets:
            bucket = target.split("/", 1)[0]
            if bucket in encrypted_buckets and "/" in target:
                if actions & {"s3:PutObject"}:
                    needs[encrypted_buckets[bucket]].add("kms:GenerateDataKey")
                if actions & {"s3:GetObject"}:
                    needs[encrypted_buckets[bucket]].add("kms:Decrypt")
        for key, wanted in needs.items():
            missing = wanted - _grants(resources, key)[name]
            if missing:
                violations.append(f"KMS-1 {name} ({statement.get('Sid')}) lacks {sorted(missing)} on {key}")
    return violations


CONTROLS = (
    bucket_controls,
    instance_controls,
    network_controls,
    iam_controls,
    state_machine_controls,
    lambda_controls,
    image_controls,
    kms_controls,
)

STAGED = {
    **VALID_CONFIG,
    "kmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "ollamaArchiveUrl": "s3://staging-bucket/ollama/ollama-linux-amd64.tgz",
    "seedProfilesUri": "s3://staging-bucket/seeds/profiles.jsonl",
    "baseModelS3Uri": "s3://models-bucket/Mistral-7B-Instruct-v0.2/",
}


PREBUILT_IMAGES = {
    **STAGED,
    "trainingImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/team/train@sha256:{'b' * 64}",
    "conversionImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/team/convert@sha256:{'c' * 64}",
}
# Each option that changes policies: the dataset Lambda outside the VPC (no database security group
# then), an always-on host.
DATASET_OUTSIDE_VPC = {key: value for key, value in {**VALID_CONFIG, "datasetInVpc": "false"}.items() if key != "databaseSecurityGroupId"}
HOST_ALWAYS_ON = {**STAGED, "keepHostRunning": "true"}
CONFIGURATIONS = {
    "defaults": VALID_CONFIG,
    "kms-and-staged-inputs": STAGED,
    "prebuilt-images": PREBUILT_IMAGES,
    "dataset-outside-vpc": DATASET_OUTSIDE_VPC,
    "host-always-on": HOST_ALWAYS_ON,
}


@pytest.mark.parametrize("config", list(CONFIGURATIONS.values()), ids=list(CONFIGURATIONS))
@pytest.mark.parametrize("control", CONTROLS, ids=lambda control: control.__name__)
def test_the_program_passes_the_control(deploy, config, control):
    deployment = deploy(config)
    assert deployment.mocks.resources
    assert control(deployment.mocks.resources, deployment.mocks.states) == []


def test_the_controls_catch_violations(deploy):
    """Each control, fed a graph with one planted violation, reports it (they are not vacuous)."""
    import copy

    kms_deployment = deploy(STAGED)
    kms_resources, states = copy.deepcopy(kms_deployment.mocks.resources), dict(kms_deployment.mocks.states)
    kms_deployment.mocks.resources.clear()  # one recorder per test: the next run starts empty
    resources = copy.deepcopy(deploy().mocks.resources)
    states.update(kms_deployment.mocks.states)
    grouped = by_type(resources)
    grouped["aws:s3/bucketVersioning:BucketVersioning"][0].inputs["versioningConfiguration"]["status"] = "Suspended"
    grouped["aws:ec2/instance:Instance"][0].inputs["metadataOptions"]["httpTokens"] = "optional"
    grouped["aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"][0].inputs["cidrIpv4"] = "0.0.0.0/0"
    policy = grouped["aws:iam/rolePolicy:RolePolicy"][0]
    document = json.loads(policy.inputs["policy"])
    document["Statement"] += [
        {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::x"]},
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["iam:PassRole"], "Resource": "*"},
    ]
    policy.inputs["policy"] = json.dumps(document)
    grouped["aws:sfn/stateMachine:StateMachine"][0].inputs["tracingConfiguration"]["enabled"] = False
    grouped["aws:lambda/function:Function"][0].inputs["environment"]["variables"]["DATABASE_PASSWORD"] = "hunter2"
    [convert] = [r for r in grouped["aws:lambda/function:Function"] if r.inputs.get("imageUri")]
    convert.inputs["imageUri"] = convert.inputs["imageUri"].replace("@sha256:", ":src-1@sha256:")  # docker-build's `ref`
    # The state machine's role without its grant on the key that encrypts the failures topic (defect #13.7).
    for r in by_type(kms_resources)["aws:iam/rolePolicy:RolePolicy"]:
        document = json.loads(r.inputs["policy"])
        document["Statement"] = [st for st in document["Statement"] if st.get("Sid") != "TopicKey"]
        r.inputs["policy"] = json.dumps(document)
    found = [violation for control in CONTROLS for violation in control(resources, states)]
    found += kms_controls(kms_resources, states)
    for expected in (
        "S3-4",
        "EC2-1",
        "NET-1",
        "IAM-1 wildcard action s3:*",
        "IAM-2 Resource * for s3:GetObject",
        "IAM-3",
        "SFN-1 tracing",
        "LAM-1 secret in environment DATABASE_PASSWORD",
        "IMG-1 image not pinned by digest alone: convert-to-gguf",
        "KMS-1 pipeline-states-policy (NotifyFailure)",
    ):
        assert any(violation.startswith(expected) for violation in found), expected


def test_the_wildcard_resource_list_says_why_for_each_action():
    for action, reason in iam.WILDCARD_RESOURCE_ACTIONS.items():
        assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action) and reason.strip(), action


@pytest.mark.parametrize(
    "actions, resources, message",
    [
        (["s3:*"], ["arn:aws:s3:::b/*"], "must name one action"),
        (["*"], ["arn:aws:s3:::b/*"], "must name one action"),
        (["s3:GetObject"], ["*"], "Resource '*' is allowed only for"),
        (["ec2:DescribeInstances", "ec2:StartInstances"], ["*"], "not ['ec2:StartInstances']"),
        (["s3:GetObject"], [], "no resources"),
    ],
)
def test_statements_refuse_more_than_their_purpose(actions, resources, message):
    with pytest.raises(iam.PolicyError, match=re.escape(message)):
        iam.Statement("Test", actions, resources)


def test_only_listed_managed_policies_can_be_attached():
    assert iam.managed_policy_arn("aws", iam.SSM_CORE) == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    with pytest.raises(iam.PolicyError):
        iam.managed_policy_arn("aws", "AdministratorAccess")
