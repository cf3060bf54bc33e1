"""The whole Pulumi program (__main__.py) under mocks, as `pulumi up` would run it: every component,
the key properties of its resources, every output, and config errors."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra import asl, user_data
from pipeline.contracts import metric_definitions
from pipeline.training import job_spec
from tests.infra.conftest import ACCOUNT, AMI_ID, REGION, ROUTE_LOCAL, ROUTE_NAT, ROUTE_S3_GATEWAY, VALID_CONFIG, security_group_id

FUNCTION = "aws:lambda/function:Function"
STAGES = (
    "generate-dataset",
    "validate-data",
    "convert-to-gguf",
    "deploy-model",
    "validate-model",
    "promote-model",
    "rollback-model",
    "record-run",
)


def component_types(deployment) -> set[str]:
    return {resource.typ for resource in deployment.mocks.resources if resource.typ.startswith("researcher-scorer:")}


def test_every_component_is_declared_once(deploy):
    deployment = deploy()
    assert component_types(deployment) == {
        "researcher-scorer:storage:ArtifactStorage",
        "researcher-scorer:images:ContainerImages",
        "researcher-scorer:dataset:DatasetFunctions",
        "researcher-scorer:training:TrainingJobSpec",
        "researcher-scorer:conversion:GgufConversion",
        "researcher-scorer:inference_host:OllamaHost",
        "researcher-scorer:serving:ModelLifecycleFunctions",
        "researcher-scorer:scoring:ScoringFunction",
        "researcher-scorer:vpc_access:VpcApiAccess",
        "researcher-scorer:orchestration:PipelineOrchestration",
        "researcher-scorer:schedule:WeeklySchedule",
    }
    assert sorted(r.name for r in deployment.all(FUNCTION)) == sorted([*STAGES, "score-profiles"])


def test_outputs_name_what_operators_need(deploy):
    exports = deploy().exports
    assert set(exports) == {
        "artifact_bucket",
        "base_model_uri",
        "state_machine_arn",
        "state_machine_console_url",
        "ollama_instance_id",
        "ollama_private_endpoint",
        "schedule_name",
        "ecr_repositories",
        "training_image_uri",
        "conversion_image_uri",
        "failure_topic_arn",
        "score_profiles_function_arn",
        "training_job",
        "training_role_arn",
    }
    machine_arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:researcher-scorer-test"
    assert exports["state_machine_arn"] == machine_arn
    assert exports["state_machine_console_url"] == (
        f"https://{REGION}.console.aws.amazon.com/states/home?region={REGION}#/statemachines/view/{machine_arn}"
    )
    assert exports["ollama_instance_id"] == "i-0123456789abcdef0"
    assert exports["score_profiles_function_arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:score-profiles-abc123"
    assert exports["ollama_private_endpoint"] == "http://10.0.1.23:11434"
    assert exports["base_model_uri"] == f"s3://{exports['artifact_bucket']}/base-models/Mistral-7B-Instruct-v0.2/"
    assert set(exports["ecr_repositories"]) == {"training", "conversion"}
    assert exports["training_image_uri"].startswith(exports["ecr_repositories"]["training"] + "@sha256:")
    assert exports["failure_topic_arn"].startswith(f"arn:aws:sns:{REGION}:{ACCOUNT}:")


def test_the_training_job_output_is_the_state_machines_specification(deploy):
    """`pipeline train --sagemaker` builds its jobs from this output: it must be what StartTraining uses."""
    deployment = deploy()
    exports = deployment.exports
    settings = job_spec.JobSettings.from_output(json.loads(json.dumps(exports["training_job"])))  # as `pulumi stack output --json` gives it
    assert settings.role_arn == exports["training_role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/training-sagemaker-role-abc123"
    assert settings.image_uri == exports["training_image_uri"] and settings.bucket == exports["artifact_bucket"]
    assert settings.base_model_uri == exports["base_model_uri"] and settings.spot is True
    machine = json.loads(deployment.one("aws:sfn/stateMachine:StateMachine", "pipeline-state-machine")["definition"])
    assert machine["States"]["StartTraining"]["Parameters"] == job_spec.state_machine_parameters(settings)


def test_state_machine_definition_is_filled_with_this_stack(deploy):
    deployment = deploy()
    machine = deployment.one("aws:sfn/stateMachine:StateMachine", "pipeline-state-machine")
    definition = machine["definition"]
    assert not asl.placeholders(definition), "every ${Placeholder} filled"
    parsed = json.loads(definition)
    # Every pipeline stage's function (ScoreProfiles is the orchestrator's, never the state machine's).
    functions = {
        r.name: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{r.name}-abc123" for r in deployment.all(FUNCTION) if r.name in STAGES
    }
    invoked = {
        state["Parameters"]["FunctionName"]
        for state in parsed["States"].values()
        if state.get("Resource") == "arn:aws:states:::lambda:invoke"
    }
    assert invoked == set(functions.values())
    training = parsed["States"]["StartTraining"]["Parameters"]
    assert training["ResourceConfig"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50}
    assert training["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert training["EnableManagedSpotTraining"] is True and training["EnableNetworkIsolation"] is True
    assert training["OutputDataConfig"]["CompressionType"] == "NONE"
    assert training["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions()
    assert training["AlgorithmSpecification"]["TrainingImage"] == deployment.exports["training_image_uri"]
    assert [c["ChannelName"] for c in training["InputDataConfig"]] == ["training", "base_model"]
    sagemaker_role = deployment.one("aws:iam/role:Role", "training-sagemaker-role")
    assert training["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/training-sagemaker-role-abc123"
    assert "sagemaker.amazonaws.com" in sagemaker_role["assumeRolePolicy"]
    assert machine["loggingConfiguration"]["logDestination"] == (
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/vendedlogs/states/researcher-scorer-test:*"
    )
    log_group = deployment.one("aws:cloudwatch/logGroup:LogGroup", "pipeline-logs")
    assert log_group["name"] == "/aws/vendedlogs/states/researcher-scorer-test"
    assert machine["tracingConfiguration"] == {"enabled": True}


def test_lambdas_have_their_sizes_environment_and_network(deploy):
    deployment = deploy()
    functions = {r.name: r.inputs for r in deployment.all(FUNCTION)}
    convert = functions["convert-to-gguf"]
    assert (convert["packageType"], convert["memorySize"], convert["timeout"]) == ("Image", 10240, 900)
    assert convert["imageUri"] == deployment.exports["conversion_image_uri"]
    generate = functions["generate-dataset"]
    assert generate["runtime"] == "python3.12" and generate["handler"] == "lambdas.generate_dataset.handler.handler"
    assert generate["environment"]["variables"]["DATABASE_SECRET_ARN"] == VALID_CONFIG["databaseSecretArn"]
    # TLS verified by default; the row floor an execution cannot lower reaches both dataset stages.
    assert generate["environment"]["variables"]["DATABASE_SSLMODE"] == "verify-full"
    assert generate["environment"]["variables"]["MIN_ROWS"] == functions["validate-data"]["environment"]["variables"]["MIN_ROWS"] == "1000"
    assert generate["vpcConfig"]["subnetIds"] == json.loads(VALID_CONFIG["privateSubnetIds"])
    assert "vpcConfig" not in functions["validate-data"], "ValidateData only needs S3"
    for stage in ("deploy-model", "validate-model", "promote-model", "rollback-model"):
        assert functions[stage]["vpcConfig"]["securityGroupIds"] == [security_group_id("ollama-client-sg")]
        assert functions[stage]["environment"]["variables"]["OLLAMA_URL"] == "http://10.0.1.23:11434"
        assert functions[stage]["environment"]["variables"]["MODEL_NAME"] == "mistral-researcher"
    # The migration starts with the teacher scoring every profile (customModelShare's default).
    assert functions["score-profiles"]["environment"]["variables"]["CUSTOM_MODEL_SHARE"] == "0"
    gates = json.loads(functions["validate-model"]["environment"]["variables"]["QUALITY_GATES"])
    assert gates == {
        "seed_mean_min": 0.75,
        "seed_min_min": 0.5,
        "correlation_min": 0.85,
        "valid_json_rate_min": 0.98,
        "latency_p50_max_s": 5.0,
        "latency_p95_max_s": 5.0,
        "request_failure_rate_max": 0.02,
        "champion_pearson_drop_max": 0.05,
        "champion_mae_rise_max": 0.02,
    }
    for name, inputs in functions.items():
        assert inputs["tracingConfig"] == {"mode": "Active"}, name
        assert inputs["loggingConfig"]["logGroup"] == f"/researcher-scorer/test/lambda/{name.replace('-', '_')}", name
    layers = {r.name: r.inputs for r in deployment.all("aws:lambda/layerVersion:LayerVersion")}
    assert set(layers) == {"dataset-deps-layer", "serving-deps-layer"}
    assert all(
        layer["compatibleRuntimes"] == ["python3.12"] and layer["s3Key"].startswith("lambda-layers/test/") for layer in layers.values()
    )


def test_ollama_host(deploy):
    deployment = deploy()
    host = deployment.one("aws:ec2/instance:Instance", "ollama-host")
    assert host["instanceType"] == "g4dn.xlarge" and host["ami"] == AMI_ID
    assert host["subnetId"] == json.loads(VALID_CONFIG["privateSubnetIds"])[0]
    assert host["rootBlockDevice"] == {"volumeType": "gp3", "volumeSize": 40, "encrypted": True, "deleteOnTermination": True}
    assert "127.0.0.1" not in host["userData"] and 'OLLAMA_VERSION="0.12.6"' in host["userData"]
    assert deployment.options["ollama-host"].ignore_changes == ["ami"]
    ingress = [
        r.inputs
        for r in deployment.all("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.name.startswith("ollama-ollama-from-")
    ]
    assert sorted((rule.get("referencedSecurityGroupId") or rule.get("cidrIpv4")) for rule in ingress) == sorted(
        [security_group_id("ollama-client-sg"), "sg-0fedcba9876543210", "10.20.0.0/16"]
    )
    assert all((rule["fromPort"], rule["toPort"]) == (11434, 11434) for rule in ingress)


def test_the_host_goes_into_a_subnet_whose_zone_offers_its_instance_type(deploy, mocks):
    mocks.offered_zones = [f"{REGION}b", f"{REGION}c"]  # not in the first subnet's zone
    host = deploy().one("aws:ec2/instance:Instance", "ollama-host")
    assert host["subnetId"] == "subnet-0fedcba9876543210"


def test_no_subnet_in_a_zone_offering_the_instance_type_is_refused_at_preview(deploy, mocks):
    mocks.offered_zones = [f"{REGION}c"]
    with pytest.raises(Exception, match=rf"g4dn.xlarge is not offered in the zone of any privateSubnetIds: .*offered in {REGION}c"):
        deploy()
    assert not mocks.resources  # refused before anything is declared (even `pulumi up --skip-preview`)


def test_the_conversion_lambda_takes_the_memory_the_stack_sets(deploy):
    convert = deploy({**VALID_CONFIG, "conversionMemoryMb": "6144"}).one(FUNCTION, "convert-to-gguf")
    assert convert["memorySize"] == 6144 and convert["timeout"] == 900


NO_NAT = {"rtb-0main000000000000": [ROUTE_LOCAL, ROUTE_S3_GATEWAY]}  # private subnets with the S3 gateway endpoint only


def test_private_subnets_without_a_nat_or_endpoints_are_refused_at_preview(deploy, mocks):
    """The Lambdas would hang on Secrets Manager and EC2 (dropped connects): said before anything exists."""
    mocks.route_tables = dict(NO_NAT)
    with pytest.raises(
        Exception, match="no default route to a NAT .* no interface endpoint for ec2, secretsmanager .* createVpcEndpoints true"
    ):
        deploy()
    assert not mocks.resources  # refused before anything is declared


def test_private_subnets_that_reach_no_s3_are_refused(deploy, mocks):
    mocks.route_tables = {"rtb-0main000000000000": [ROUTE_LOCAL]}
    with pytest.raises(Exception, match="reach no S3: add an S3 gateway endpoint"):
        deploy({**VALID_CONFIG, "createVpcEndpoints": "true"})


def test_a_subnets_own_route_table_is_the_one_checked(deploy, mocks):
    mocks.route_tables = {**NO_NAT, "rtb-0fedcba9876543210": [ROUTE_LOCAL, ROUTE_NAT]}
    mocks.subnet_tables = {subnet: "rtb-0fedcba9876543210" for subnet in json.loads(VALID_CONFIG["privateSubnetIds"])}
    assert deploy().exports["state_machine_arn"]  # both subnets explicitly on a table with a NAT


def test_endpoints_the_vpc_has_already_are_enough(deploy, mocks):
    mocks.route_tables = dict(NO_NAT)
    mocks.vpc_endpoints = {f"com.amazonaws.{REGION}.ec2", f"com.amazonaws.{REGION}.secretsmanager"}
    deployment = deploy()
    assert not deployment.all("aws:ec2/vpcEndpoint:VpcEndpoint")


def test_create_vpc_endpoints_gives_the_lambdas_their_apis_without_a_nat(deploy, mocks):
    mocks.route_tables = dict(NO_NAT)
    deployment = deploy({**VALID_CONFIG, "createVpcEndpoints": "true"})
    endpoints = {r.inputs["serviceName"]: r.inputs for r in deployment.all("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert set(endpoints) == {f"com.amazonaws.{REGION}.ec2", f"com.amazonaws.{REGION}.secretsmanager"}
    first_subnet = json.loads(VALID_CONFIG["privateSubnetIds"])[0]
    for endpoint in endpoints.values():
        assert endpoint["vpcEndpointType"] == "Interface" and endpoint["privateDnsEnabled"] is True
        assert endpoint["subnetIds"] == [first_subnet] and endpoint["securityGroupIds"] == [security_group_id("vpc-api-endpoints-sg")]
    ingress = [
        r.inputs for r in deployment.all("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") if r.name.startswith("vpc-api-")
    ]
    assert sorted(rule["referencedSecurityGroupId"] for rule in ingress) == sorted(
        [security_group_id("ollama-client-sg"), security_group_id("dataset-lambda-sg")]
    )
    assert all((rule["fromPort"], rule["toPort"]) == (443, 443) for rule in ingress)


def test_a_secret_under_its_own_key_is_decrypted_through_secrets_manager_only(deploy):
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0000aaaa-11bb-22cc-33dd-444444eeeeee"
    granted = statements(deploy({**VALID_CONFIG, "databaseSecretKmsKeyArn": key}), "generate-dataset-policy")
    assert granted["DatabaseSecretKey"] == {
        "Sid": "DatabaseSecretKey",
        "Effect": "Allow",
        "Action": ["kms:Decrypt"],
        "Resource": [key],
        "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}},
    }


def test_a_secret_under_the_default_key_needs_no_kms_grant(deploy):
    assert "DatabaseSecretKey" not in statements(deploy(), "generate-dataset-policy")


def test_schedule_starts_this_state_machine_weekly(deploy):
    deployment = deploy({**VALID_CONFIG, "scheduleExpression": "cron(30 4 ? * SUN *)", "scheduleTimezone": "Europe/Berlin"})
    schedule = deployment.one("aws:scheduler/schedule:Schedule", "schedule-weekly")
    assert schedule["scheduleExpression"] == "cron(30 4 ? * SUN *)"
    assert schedule["scheduleExpressionTimezone"] == "Europe/Berlin" and schedule["state"] == "ENABLED"
    assert schedule["target"]["arn"] == deployment.exports["state_machine_arn"]
    assert json.loads(schedule["target"]["input"]) == {"trigger": "schedule"}
    policy = json.loads(deployment.one("aws:iam/rolePolicy:RolePolicy", "schedule-scheduler-policy")["policy"])
    assert policy["Statement"] == [
        {
            "Sid": "StartPipeline",
            "Effect": "Allow",
            "Action": ["states:StartExecution"],
            "Resource": [deployment.exports["state_machine_arn"]],
        }
    ]


def test_a_disabled_schedule_and_a_host_kept_running(deploy):
    deployment = deploy({**VALID_CONFIG, "scheduleEnabled": "false", "keepHostRunning": "true"})
    assert deployment.one("aws:scheduler/schedule:Schedule", "schedule-weekly")["state"] == "DISABLED"
    definition = json.loads(deployment.one("aws:sfn/stateMachine:StateMachine", "pipeline-state-machine")["definition"])
    assert definition["States"]["Prepare"]["Parameters"]["keep_host_running"] is True


def test_prebuilt_images_are_used_as_given_and_nothing_is_built(deploy):
    training = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/team/train@sha256:{'b' * 64}"
    conversion = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/team/convert@sha256:{'a' * 64}"
    deployment = deploy({**VALID_CONFIG, "trainingImageUri": training, "conversionImageUri": conversion})
    assert not deployment.all("docker-build:index:Image") and not deployment.all("aws:ecr/repository:Repository")
    assert deployment.exports["ecr_repositories"] == {}
    assert deployment.one(FUNCTION, "convert-to-gguf")["imageUri"] == conversion
    policy = json.loads(deployment.one("aws:iam/rolePolicy:RolePolicy", "training-sagemaker-policy")["policy"])
    pull = next(s for s in policy["Statement"] if s["Sid"] == "PullTrainingImage")
    assert pull["Resource"] == [f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team/train"]


def test_dataset_lambda_outside_the_vpc_when_the_database_is_public(deploy):
    config = {k: v for k, v in VALID_CONFIG.items() if k != "databaseSecurityGroupId"}
    deployment = deploy({**config, "datasetInVpc": "false"})
    assert "vpcConfig" not in deployment.one(FUNCTION, "generate-dataset")
    assert not [r for r in deployment.all("aws:ec2/securityGroup:SecurityGroup") if r.name.startswith("dataset")]


def test_database_group_gets_an_ingress_rule_from_the_dataset_lambda_only(deploy):
    deployment = deploy()
    rule = deployment.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "dataset-database-ingress")
    assert rule["securityGroupId"] == VALID_CONFIG["databaseSecurityGroupId"]
    assert rule["referencedSecurityGroupId"] == security_group_id("dataset-lambda-sg")
    assert (rule["fromPort"], rule["toPort"]) == (5432, 5432)


def test_a_bad_configuration_stops_the_program_before_any_resource(deploy, mocks):
    with pytest.raises(pulumi.RunError) as error:
        deploy(
            {
                **VALID_CONFIG,
                "trainingInstanceType": "ml.m5.xlarge",
                "scheduleExpression": "every monday",
                "gateCorrelationMin": "1.5",
                "databaseSecretArn": "",
            }
        )
    message = str(error.value)
    for key in ("trainingInstanceType", "scheduleExpression", "gateCorrelationMin", "databaseSecretArn"):
        assert f"researcher-scorer:{key}" in message
    assert not mocks.resources


def test_kms_key_encrypts_what_it_can(deploy):
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    deployment = deploy({**VALID_CONFIG, "kmsKeyArn": key})
    encryption = deployment.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "artifacts-encryption"
    )
    assert encryption["rules"][0]["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"] == key
    assert deployment.one("aws:ec2/instance:Instance", "ollama-host")["rootBlockDevice"]["kmsKeyId"] == key
    assert all(r.inputs["kmsKeyId"] == key for r in deployment.all("aws:cloudwatch/logGroup:LogGroup"))
    assert deployment.one("aws:sns/topic:Topic", "pipeline-failures")["kmsMasterKeyId"] == key
    # Whoever starts the host attaches its CMK-encrypted volume: EC2 needs a grant on the key for it.
    for waker in ("deploy-model-policy", "score-profiles-policy"):
        grant = statements(deployment, waker)["HostVolumeKey"]
        assert grant["Action"] == ["kms:CreateGrant"] and grant["Resource"] == [key], waker
        assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    assert "HostVolumeKey" not in statements(deployment, "pipeline-states-policy")  # it never starts the host
    training = statements(deployment, "training-sagemaker-policy")
    assert training["ArtifactKey"]["Resource"] == [key]
    repositories = deployment.all("aws:ecr/repository:Repository")
    assert repositories and all(r.inputs["encryptionConfigurations"] == [{"encryptionType": "KMS", "kmsKey": key}] for r in repositories)


def statements(deployment, policy_name: str) -> dict[str, dict]:
    document = json.loads(deployment.one("aws:iam/rolePolicy:RolePolicy", policy_name)["policy"])
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_state_machine_role_reaches_only_this_pipeline(deploy):
    deployment = deploy()
    granted = statements(deployment, "pipeline-states-policy")
    functions = sorted(f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{stage}-abc123" for stage in STAGES)
    assert sorted(granted["InvokeStages"]["Resource"]) == sorted(functions + [f"{arn}:*" for arn in functions])
    assert granted["TrainingJobs"]["Resource"] == [f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/mistral-researcher-*"]
    assert granted["PassSageMakerRole"] == {
        "Sid": "PassSageMakerRole",
        "Effect": "Allow",
        "Action": ["iam:PassRole"],
        "Resource": [f"arn:aws:iam::{ACCOUNT}:role/training-sagemaker-role-abc123"],
        "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
    }
    # DeployModel wakes the host; the execution only stops one it found stopped.
    assert granted["StopHost"] == {
        "Sid": "StopHost",
        "Effect": "Allow",
        "Action": ["ec2:StopInstances"],
        "Resource": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"],
    }
    assert not any("ec2:StartInstances" in statement["Action"] for statement in granted.values())
    assert granted["OneExecutionAtATime"]["Resource"] == [deployment.exports["state_machine_arn"]]
    assert granted["NotifyFailure"]["Resource"] == [deployment.exports["failure_topic_arn"]]


def test_sagemaker_role_reads_the_inputs_and_writes_only_training_output(deploy):
    deployment = deploy()
    bucket = f"arn:aws:s3:::{deployment.exports['artifact_bucket']}"
    granted = statements(deployment, "training-sagemaker-policy")
    assert granted["ArtifactsRead"]["Resource"] == [f"{bucket}/runs/*/dataset/*", f"{bucket}/checkpoints/*"]
    assert granted["ArtifactsWrite"]["Resource"] == [f"{bucket}/runs/*/training/*", f"{bucket}/checkpoints/*"]
    assert granted["BaseModelRead"]["Resource"] == [f"{bucket}/base-models/Mistral-7B-Instruct-v0.2/*"]
    assert granted["TrainingMetrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}}
    dataset = statements(deployment, "generate-dataset-policy")
    assert dataset["DatabaseSecret"]["Resource"] == [VALID_CONFIG["databaseSecretArn"]]
    assert dataset["DatasetWrite"]["Resource"] == [f"{bucket}/runs/*/dataset/*", f"{bucket}/runs/*/shadow/*"]  # + the shadow set
    assert dataset["DatasetRead"]["Resource"] == [f"{bucket}/models/*", f"{bucket}/runs/*/dataset/*"]  # production's manifest
    validate = statements(deployment, "validate-model-policy")
    written = [f"{bucket}/runs/*/report/*", f"{bucket}/runs/*/shadow/*", f"{bucket}/runs/index.jsonl"]
    assert validate["ArtifactsWrite"]["Resource"] == written
    record = statements(deployment, "record-run-policy")
    assert record["ArtifactsWrite"]["Resource"] == [f"{bucket}/runs/index.jsonl"]  # the history, nothing else
    assert "ArtifactsWrite" not in statements(deployment, "rollback-model-policy")
    # ScoreProfiles reads which run is in production, and nothing else in the bucket.
    scoring = statements(deployment, "score-profiles-policy")
    s3 = [statement for statement in scoring.values() if any(action.startswith("s3:") for action in statement["Action"])]
    assert [(statement["Action"], statement["Resource"]) for statement in s3] == [
        (["s3:ListBucket"], [bucket]),  # a missing pointer is then a 404, not a 403
        (["s3:GetObject"], [f"{bucket}/models/*"]),
    ]
    # It may start the host (on demand), only that instance, and never stop it (the host stops itself).
    assert scoring["StartHost"]["Resource"] == [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"]
    assert not any("ec2:StopInstances" in statement["Action"] for statement in scoring.values())
    # DeployModel wakes it the same way, right before its first request.
    deploy_model = statements(deployment, "deploy-model-policy")
    assert deploy_model["StartHost"] == scoring["StartHost"] and deploy_model["DescribeHost"]["Action"] == ["ec2:DescribeInstances"]
    assert not any("ec2:StopInstances" in statement["Action"] for statement in deploy_model.values())


BLOCKER = """
import importlib.abc, runpy, sys
BLOCKED = {"numpy", "torch", "transformers", "peft", "psycopg2", "httpx", "smart_open", "gguf", "llama_cpp",
           "sentencepiece", "tqdm", "aws_lambda_powertools", "boto3", "botocore", "matplotlib"}

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the Pulumi program imported {name}, which requirements.txt does not install")

sys.meta_path.insert(0, Blocker())
sys.path[:0] = [@ROOT@, @TESTS@]
import pulumi
from conftest import RecordingMocks, VALID_CONFIG, set_config
mocks = RecordingMocks()
pulumi.runtime.set_mocks(mocks, project="researcher-scorer", stack="test", preview=False)
set_config(VALID_CONFIG)
pulumi.runtime.test(lambda: runpy.run_path(@PROGRAM@, run_name="__main__"))()
print(len(mocks.resources), "resources")
"""


def test_program_runs_with_only_its_own_requirements(tmp_path):
    """`pulumi up` runs in requirements.txt's environment: no ML, HTTP or database library is imported."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "blocked.py"
    script.write_text(
        BLOCKER.replace("@ROOT@", repr(str(root)))
        .replace("@TESTS@", repr(str(root / "tests" / "infra")))
        .replace("@PROGRAM@", repr(str(root / "__main__.py")))
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[0]) > 50


def test_images_are_built_for_lambda_and_sagemaker_and_pushed_to_their_repositories(deploy):
    deployment = deploy()
    built = {r.name: r.inputs for r in deployment.all("docker-build:index:Image")}
    assert set(built) == {"images-training-image", "images-conversion-image"}
    registry = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    for key, dockerfile in (("training", "training_image/Dockerfile"), ("conversion", "lambdas/convert_to_gguf/Dockerfile")):
        image = built[f"images-{key}-image"]
        assert image["push"] is True and image["platforms"] == ["linux/amd64"]
        assert image["dockerfile"]["location"].endswith(dockerfile)
        assert image["registries"] == [{"address": registry, "username": "AWS", "password": "mock-token"}]
        assert image["tags"][0].startswith(f"{deployment.exports['ecr_repositories'][key]}:src-")


def test_failures_raise_the_alarm_and_reach_the_topic(deploy):
    deployment = deploy()
    alarm = deployment.one("aws:cloudwatch/metricAlarm:MetricAlarm", "pipeline-failed-executions")
    assert (alarm["namespace"], alarm["metricName"], alarm["statistic"]) == ("AWS/States", "ExecutionsFailed", "Sum")
    assert alarm["dimensions"] == {"StateMachineArn": deployment.exports["state_machine_arn"]}
    assert (alarm["threshold"], alarm["comparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert alarm["alarmActions"] == [deployment.exports["failure_topic_arn"]]
    subscription = deployment.one("aws:sns/topicSubscription:TopicSubscription", "pipeline-failures-email")
    assert (subscription["protocol"], subscription["endpoint"]) == ("email", VALID_CONFIG["alertEmail"])
    definition = json.loads(deployment.one("aws:sfn/stateMachine:StateMachine", "pipeline-state-machine")["definition"])
    assert definition["States"]["NotifyFailure"]["Parameters"]["TopicArn"] == deployment.exports["failure_topic_arn"]


def test_host_is_managed_through_ssm_only(deploy):
    deployment = deploy()
    attachment = deployment.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "ollama-host-ssm")
    assert attachment["policyArn"] == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    role = deployment.one("aws:iam/role:Role", "ollama-host-role")
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert not [r for r in deployment.all("aws:iam/rolePolicy:RolePolicy") if r.name == "ollama-host-policy"], (
        "no inline grants without a staged Ollama archive"
    )
    profile = deployment.one("aws:iam/instanceProfile:InstanceProfile", "ollama-host")
    host = deployment.one("aws:ec2/instance:Instance", "ollama-host")
    assert host["iamInstanceProfile"] == "ollama-host-abc123" and profile["role"] == "ollama-host-role-abc123"
    assert "keyName" not in host and host["associatePublicIpAddress"] is False


def test_changed_host_settings_never_replace_the_host(deploy):
    # pulumi-aws updates user data in place (a stop and start); replacing it would drop the models' disk.
    host = deploy().one("aws:ec2/instance:Instance", "ollama-host")
    assert host["userDataReplaceOnChange"] is False
    assert len(host["userData"].encode()) <= user_data.USER_DATA_MAX_BYTES


def test_only_lambdas_in_the_vpc_may_manage_network_interfaces(deploy):
    deployment = deploy()
    for stage in STAGES:
        granted = statements(deployment, f"{stage}-policy")
        in_vpc = "vpcConfig" in deployment.one(FUNCTION, stage)
        assert ("VpcNetworkInterfaces" in granted) == in_vpc, stage
        if in_vpc:
            assert granted["VpcNetworkInterfaces"]["Resource"] == [
                f"arn:aws:ec2:{REGION}:{ACCOUNT}:network-interface/*",
                f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/*",
                f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/*",
            ]
        assert granted["OwnLogGroup"]["Resource"] == [
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/researcher-scorer/test/lambda/{stage.replace('-', '_')}:*"
        ]
