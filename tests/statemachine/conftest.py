"""A moto world the real ASL executes in: Step Functions' interpreter, S3, Secrets Manager,
SageMaker, EC2, SNS in moto; Lambda tasks routed in-process to our handlers; a real PostgreSQL;
the Ollama CONTRACT TEST server standing in for the EC2 host's Ollama."""

from __future__ import annotations

import importlib
import io
import json
import shutil
import time
import types
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra import asl
from pipeline import contracts, prompt, storage
from pipeline.errors import PipelineError
from pipeline.local import sample
from pipeline.model_files import TOKENIZER_FILES
from pipeline.serving import host as host_module
from pipeline.serving import ollama as ollama_module
from pipeline.training import job_spec
from tests.lambdas.test_dataset_handlers import make_secret
from tests.pipeline.serving.ollama_contract_server import OllamaContractServer

REGION = "us-east-1"
JOB_PREFIX = "researcher-scorer"
FUNCTIONS = {  # Lambda name -> handler module
    "generate-dataset": "lambdas.generate_dataset.handler",
    "validate-data": "lambdas.validate_data.handler",
    "convert-to-gguf": "lambdas.convert_to_gguf.handler",
    "deploy-model": "lambdas.deploy_model.handler",
    "validate-model": "lambdas.validate_model.handler",
    "promote-model": "lambdas.promote_model.handler",
    "rollback-model": "lambdas.rollback_model.handler",
    "record-run": "lambdas.record_run.handler",
}


class LambdaContext:
    memory_limit_in_mb = 1024
    aws_request_id = "request"

    def __init__(self, name: str):
        self.function_name = name
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{name}"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


# Failures the tests inject: a Lambda whose handler raises, or an AWS API call that answers an error.
INJECTED = {"lambda": None, "api": None}


class InjectedFailure(Exception):
    """A handler failing as any unexpected error would."""


def route_lambda_in_process(self, event=None):
    """Replaces moto's Docker-based LambdaFunction._invoke_lambda: run our handler here and answer
    as Lambda does (a result, or an error payload whose errorType Step Functions matches on)."""
    handler = importlib.import_module(FUNCTIONS[self.function_name]).handler
    payload = json.loads(event) if isinstance(event, str) else (event or {})
    if INJECTED["lambda"] == self.function_name:
        return json.dumps({"errorType": "InjectedFailure", "errorMessage": f"{self.function_name} failed (injected)"}), True, ""
    try:
        return json.dumps(handler(payload, LambdaContext(self.function_name))), False, ""
    except PipelineError as exc:
        return json.dumps({"errorType": exc.name, "errorMessage": str(exc)}), True, ""
    except Exception as exc:  # an unexpected crash still reaches the state machine by its type
        return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}), True, ""


def aws_sdk_casing_as_aws_does(monkeypatch) -> None:
    """Real Step Functions maps an aws-sdk task's PascalCase parameters onto the API's member names
    and answers in PascalCase (``aws-sdk:sfn:listExecutions`` takes ``StateMachineArn`` and returns
    ``Executions``). moto 5.2.5 leaves them as written, which only works for APIs whose members are
    PascalCase already (SageMaker, EC2); this patch applies the documented mapping with moto's own
    helpers, so the ASL is tested as AWS runs it."""
    import botocore.session
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_aws_sdk as sdk
    from moto.stepfunctions.parser.utils import camel_to_snake_case

    session = botocore.session.get_session()

    def operation(self):
        model = session.get_service_model(self._get_boto_service_name())
        action = self._get_boto_service_action()
        name = next(op for op in model.operation_names if camel_to_snake_case(op) == action)
        return model.operation_model(name)

    def normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
        self._to_boto_request(parameters, operation(self).input_shape)

    def normalise_response(self, response, boto_service_name=None, service_action_name=None):
        self._from_boto_response(response, operation(self).output_shape)

    monkeypatch.setattr(sdk.StateTaskServiceAwsSdk, "_normalise_parameters", normalise_parameters, raising=False)
    monkeypatch.setattr(sdk.StateTaskServiceAwsSdk, "_normalise_response", normalise_response, raising=False)


def inject_api_failures(monkeypatch) -> None:
    """AWS calls made while INJECTED["api"] = (service, operation, from_call) answer an error from
    that call on, as a real throttled or failing API would (a ClientError to the caller);
    (service, operation, from_call, code, calls) answers error ``code`` to that many calls only."""
    import botocore.client
    from botocore.exceptions import ClientError

    original = botocore.client.BaseClient._make_api_call
    calls: dict[tuple[str, str], int] = {}

    def make_api_call(self, operation_name, api_params):
        target = INJECTED["api"]
        key = (self.meta.service_model.service_name, operation_name)
        if target and key == target[:2]:
            calls[key] = calls.get(key, 0) + 1
            code, times = (target[3], target[4]) if len(target) > 3 else ("InjectedFailure", None)
            if calls[key] >= target[2] and (times is None or calls[key] < target[2] + times):
                raise ClientError(
                    {
                        "Error": {"Code": code, "Message": f"{operation_name} failed (injected)"},
                        "ResponseMetadata": {"HTTPStatusCode": 400, "RequestId": "injected"},
                    },
                    operation_name,
                )
        return original(self, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)


@dataclass
class World:
    bucket: str
    sfn: Any
    state_machine_arn: str
    instance_id: str
    ollama: OllamaContractServer
    topic_arn: str = ""
    training_statuses: list[dict[str, Any]] = field(default_factory=list)
    adapter_dir: Path | None = None
    definition_values: dict[str, Any] = field(default_factory=dict)

    def redefine(self, **values: Any) -> None:
        """The state machine as a stack with other settings renders it (e.g. CustomModelShare)."""
        definition = asl.render({**self.definition_values, **values})
        self.sfn.update_state_machine(stateMachineArn=self.state_machine_arn, definition=definition)

    def stage_adapter(self, run_id: str) -> None:
        """What the training job would write: the adapter under the job's output."""
        prefix = f"runs/{run_id}/training/{contracts.training_job_name(run_id, JOB_PREFIX)}/output/model"
        for path in self.adapter_dir.iterdir():
            if path.is_file():
                boto3.client("s3").upload_file(str(path), self.bucket, f"{prefix}/{path.name}")

    def start(self, run_id: str, execution_input: dict | None = None) -> str:
        return self.sfn.start_execution(stateMachineArn=self.state_machine_arn, name=run_id, input=json.dumps(execution_input or {}))[
            "executionArn"
        ]

    def wait(self, execution_arn: str, timeout_s: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            description = self.sfn.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING":
                return description
            time.sleep(0.1)
        raise AssertionError(f"execution {execution_arn} still running after {timeout_s} s")

    def visited(self, execution_arn: str) -> list[str]:
        events = self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        return [event["stateEnteredEventDetails"]["name"] for event in events if "stateEnteredEventDetails" in event]

    def pointer(self) -> bytes | None:
        uri = f"s3://{self.bucket}/models/current.json"
        return storage.read_bytes(uri) if storage.exists(uri) else None

    def notifications(self) -> list[str]:
        """Messages published to the failures topic."""
        from moto.sns.models import sns_backends

        topic = sns_backends["123456789012"][REGION].topics[self.topic_arn]
        return [message for _, message, *_ in topic.sent_notifications]

    def subjects(self) -> list[str]:
        """Subjects of the messages published to the topic, in order."""
        from moto.sns.models import sns_backends

        topic = sns_backends["123456789012"][REGION].topics[self.topic_arn]
        return [subject for _, _, subject, *_ in topic.sent_notifications]

    def host_state(self) -> str:
        reservations = boto3.client("ec2").describe_instances(InstanceIds=[self.instance_id])["Reservations"]
        return reservations[0]["Instances"][0]["State"]["Name"]

    def teacher_scores(self, run_id: str) -> dict[str, float]:
        scores = {}
        for name in ("holdout.jsonl", "seeds.jsonl"):
            for line in storage.read_bytes(f"s3://{self.bucket}/runs/{run_id}/dataset/{name}").decode().splitlines():
                answer = prompt.parse_answer(json.loads(line)["output"])
                scores[answer.handle] = answer.score
        return scores


@pytest.fixture(scope="session")
def tiny_model_and_adapter(tmp_path_factory) -> tuple[Path, Path]:
    from tests.factories import tiny_model_with_adapter

    base, adapter, _ = tiny_model_with_adapter(tmp_path_factory.mktemp("sfn-models"), layers=2, seed=2)
    for name in TOKENIZER_FILES:  # the trainer copies the tokenizer next to the adapter
        if (base / name).is_file():
            shutil.copy2(base / name, adapter / name)
    return base, adapter


def _zip(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", text)
    return buffer.getvalue()


@pytest.fixture
def world(monkeypatch, db, database_url, tiny_model_and_adapter) -> Iterator[World]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_SERVICE_NAME": "test",
    }.items():
        monkeypatch.setenv(name, value)
    from moto.awslambda.models import LambdaFunction
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", route_lambda_in_process)
    aws_sdk_casing_as_aws_does(monkeypatch)
    monkeypatch.setattr(WaitFunction, "_wait_interval", lambda self, env, wait_seconds: time.sleep(0.01))
    monkeypatch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=lambda seconds: None, time=time.time))
    monkeypatch.setattr(ollama_module.RetryPolicy, "delays", lambda self: iter([0.0] * (self.attempts - 1)))
    # 700: about 41 Claude-scored holdout profiles, the correlation gate's 30 with room.
    sample.load_sample(db, profiles=700, seed=3)

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}), OllamaContractServer() as server:
        bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        base, adapter = tiny_model_and_adapter
        for path in base.iterdir():
            if path.is_file():
                boto3.client("s3").upload_file(str(path), bucket, f"base-model/{path.name}")
        iam = boto3.client("iam")
        role = iam.create_role(RoleName="role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        topic = boto3.client("sns").create_topic(Name="failures")["TopicArn"]
        ec2 = boto3.client("ec2")
        image = ec2.describe_images()["Images"][0]["ImageId"]
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge")["Instances"][0]["InstanceId"]
        ec2.stop_instances(InstanceIds=[instance])  # the host sleeps between weekly runs
        monkeypatch.setenv("ARTIFACT_BUCKET", bucket)
        monkeypatch.setenv("DATABASE_SECRET_ARN", make_secret(database_url))
        seeds_uri = f"s3://{bucket}/config/seed-profiles.txt"  # what the stack's seedProfilesUri names
        storage.write_bytes(seeds_uri, sample.seed_profile_list().encode())
        monkeypatch.setenv("SEED_PROFILES_URI", seeds_uri)
        monkeypatch.setenv("MIN_ROWS", "100")  # the stack's minRows for this 400-profile table
        monkeypatch.setenv("DATABASE_SSLMODE", "prefer")  # the test server has no TLS
        monkeypatch.setenv("OLLAMA_URL", server.url)
        monkeypatch.setenv("HOST_INSTANCE_ID", instance)  # DeployModel wakes the host
        monkeypatch.setenv("HOST_WAKE_WAIT_SECONDS", "1")
        monkeypatch.setattr(host_module, "POLL_SECONDS", 0.01)
        monkeypatch.setenv("QUALITY_GATES", json.dumps({"latency_p50_max_s": 5, "latency_p95_max_s": 5}))
        arns = {}
        for name in FUNCTIONS:
            arns[name] = boto3.client("lambda").create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=role,
                Handler="handler.handler",
                Code={"ZipFile": _zip("# routed in-process by the test\n")},
            )["FunctionArn"]
        definition = asl.render(definition_values(arns, bucket, role, instance, topic))
        sfn = boto3.client("stepfunctions")
        machine = sfn.create_state_machine(name="training", definition=definition, roleArn=role)["stateMachineArn"]
        world = World(bucket, sfn, machine, instance, server, topic_arn=topic, adapter_dir=adapter)
        world.definition_values = definition_values(arns, bucket, role, instance, topic)
        inject_api_failures(monkeypatch)
        INJECTED.update(api=None, **{"lambda": None})
        _script_training_statuses(monkeypatch, world)
        yield world


def definition_values(arns: dict[str, str], bucket: str, role: str, instance: str, topic: str) -> dict[str, Any]:
    """Every placeholder of the definition, as the Pulumi program fills them."""
    return {
        "GenerateDatasetFunctionArn": arns["generate-dataset"],
        "ValidateDataFunctionArn": arns["validate-data"],
        "ConvertToGgufFunctionArn": arns["convert-to-gguf"],
        "DeployModelFunctionArn": arns["deploy-model"],
        "ValidateModelFunctionArn": arns["validate-model"],
        "PromoteModelFunctionArn": arns["promote-model"],
        "RollbackModelFunctionArn": arns["rollback-model"],
        "RecordRunFunctionArn": arns["record-run"],
        "ArtifactBucket": bucket,
        "StartTrainingParameters": job_spec.state_machine_parameters(training_settings(bucket, role)),
        "TrainingJobPrefix": JOB_PREFIX,
        "BaseModelS3Uri": f"s3://{bucket}/base-model/",
        "TrainingPollSeconds": 60,
        "OllamaInstanceId": instance,
        "NotificationTopicArn": topic,
        "KeepHostRunning": False,
        "CustomModelShare": 0,
        "Quantization": "q8_0",
    }


def training_settings(bucket: str, role: str) -> job_spec.JobSettings:
    """The stack's training job settings, as infra/training.py makes them."""
    return job_spec.JobSettings(
        role_arn=role,
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1",
        bucket=bucket,
        base_model_uri=f"s3://{bucket}/base-model/",
        instance_type="ml.g4dn.xlarge",
        volume_size_gb=50,
        max_runtime_seconds=7200,
        max_wait_seconds=14400,
        job_prefix=JOB_PREFIX,
    )


def sample_definition_values() -> dict[str, Any]:
    arns = {name: f"arn:aws:lambda:{REGION}:123456789012:function:{name}" for name in FUNCTIONS}
    return definition_values(
        arns, "artifacts", "arn:aws:iam::123456789012:role/sfn", "i-0123456789abcdef0", f"arn:aws:sns:{REGION}:123456789012:failures"
    )


def _script_training_statuses(monkeypatch, world: World) -> None:
    """describeTrainingJob answers the statuses the test lists, in order (the last one repeats);
    by default the job completes at once, as moto's does."""
    from moto.sagemaker.models import SageMakerModelBackend

    original = SageMakerModelBackend.describe_training_job

    def describe(self, training_job_name):
        response = dict(original(self, training_job_name))
        if world.training_statuses:
            step = world.training_statuses.pop(0) if len(world.training_statuses) > 1 else world.training_statuses[0]
            response.update(step)
        return response

    monkeypatch.setattr(SageMakerModelBackend, "describe_training_job", describe)
