"""The serving Lambdas' own contract: settings from the environment, named errors, and the rule
that only a run whose report passed can be promoted (the state machine's paths are in
tests/statemachine)."""

from __future__ import annotations

import pytest

from lambdas import settings as lambda_settings
from lambdas.deploy_model import handler as deploy
from lambdas.promote_model import handler as promote
from lambdas.rollback_model import handler as rollback
from lambdas.validate_model.handler import Settings as ValidateModelSettings
from pipeline import storage
from pipeline.errors import InvalidArgument
from pipeline.serving.lifecycle import PromotionError
from pipeline.serving.modelfile import model_tag
from tests.pipeline.serving.ollama_contract_server import OllamaContractServer


class Context:
    function_name = "serving"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:serving"
    aws_request_id = "request-1"


@pytest.fixture
def served(monkeypatch, bucket):
    with OllamaContractServer() as server:
        monkeypatch.setenv("OLLAMA_URL", server.url)
        monkeypatch.setenv("ARTIFACT_BUCKET", bucket)
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "test")
        yield server, bucket


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ARTIFACT_BUCKET": "b"}, "OLLAMA_URL"),
        ({"OLLAMA_URL": "http://h", "ARTIFACT_BUCKET": "b", "QUALITY_GATES": "{bad"}, "QUALITY_GATES"),
        ({"OLLAMA_URL": "http://h", "ARTIFACT_BUCKET": "b", "QUALITY_GATES": "[0.9]"}, "object"),
        ({"OLLAMA_URL": "http://h", "ARTIFACT_BUCKET": "b", "QUALITY_GATES": '{"pearson": 0.9}'}, "unknown gate"),
        ({"OLLAMA_URL": "http://h", "ARTIFACT_BUCKET": "b", "VALIDATION_CONCURRENCY": "0"}, "VALIDATION_CONCURRENCY: must be at least 1"),
        ({"OLLAMA_URL": "http://h", "ARTIFACT_BUCKET": "b", "VALIDATION_CONCURRENCY": "four"}, "VALIDATION_CONCURRENCY"),
    ],
)
def test_bad_settings_are_named(env, message):
    with pytest.raises(InvalidArgument, match=message):
        lambda_settings.from_environment(ValidateModelSettings, env)


def test_settings_from_env():
    settings = lambda_settings.from_environment(
        ValidateModelSettings, {"OLLAMA_URL": "http://10.0.1.5:11434", "ARTIFACT_BUCKET": "b", "QUALITY_GATES": '{"correlation_min": 0.8}'}
    )
    assert settings.artifact_root == "s3://b" and settings.gates.correlation_min == 0.8
    assert settings.concurrency == 4 and settings.serving.production == "mistral-researcher:latest"


def test_deploy_then_rollback_through_the_handlers(served):
    server, bucket = served
    storage.write_bytes(f"s3://{bucket}/runs/run-1/model.gguf", b"GGUF-bytes")
    result = deploy.handler({"run_id": "run-1"}, Context())
    assert result["candidate"] == model_tag("run-1") and model_tag("run-1") in server.state.models
    assert rollback.handler({"run_id": "run-1"}, Context())["candidate_deleted"] is True
    assert server.state.models == {}


@pytest.fixture
def stopped_host(served, monkeypatch):
    import boto3

    from pipeline.serving import host

    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge")["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance])
    monkeypatch.setenv("HOST_INSTANCE_ID", instance)
    monkeypatch.setattr(host, "POLL_SECONDS", 0.01)
    return ec2, instance


def test_deploy_wakes_a_stopped_host_right_before_its_first_request(served, stopped_host):
    server, bucket = served
    ec2, instance = stopped_host
    storage.write_bytes(f"s3://{bucket}/runs/run-1/model.gguf", b"GGUF-bytes")
    result = deploy.handler({"run_id": "run-1"}, Context())
    assert result["candidate"] == model_tag("run-1")
    assert ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"


def test_deploy_on_a_host_still_starting_is_a_named_retriable_error(served, stopped_host, monkeypatch):
    from pipeline.serving import host
    from pipeline.serving.ollama import OllamaUnavailable

    server, bucket = served
    storage.write_bytes(f"s3://{bucket}/runs/run-1/model.gguf", b"GGUF-bytes")
    monkeypatch.setenv("OLLAMA_URL", "http://127.0.0.1:9")  # booting: Ollama does not answer yet
    monkeypatch.setenv("HOST_WAKE_WAIT_SECONDS", "1")
    with pytest.raises(host.HostStarting, match="is starting") as raised:
        deploy.handler({"run_id": "run-1"}, Context())
    assert isinstance(raised.value, OllamaUnavailable) and raised.value.name == "HostStarting"
    assert server.state.models == {}


def test_a_run_whose_report_did_not_pass_is_never_promoted(served):
    server, bucket = served
    storage.write_bytes(f"s3://{bucket}/runs/run-2/model.gguf", b"GGUF-bytes")
    deploy.handler({"run_id": "run-2"}, Context())
    storage.write_json(f"s3://{bucket}/runs/run-2/report/report.json", {"passed": False, "failed_gates": ["pearson"]})
    with pytest.raises(PromotionError, match="pearson"):
        promote.handler({"run_id": "run-2"}, Context())
    assert "mistral-researcher:latest" not in server.state.models
    assert not storage.exists(f"s3://{bucket}/models/current.json")


def test_a_gguf_replaced_after_its_validation_is_never_promoted(served):
    import hashlib

    from pipeline.serving.lifecycle import UnvalidatedModel

    server, bucket = served
    storage.write_bytes(f"s3://{bucket}/runs/run-2/model.gguf", b"GGUF-validated")
    storage.write_json(f"s3://{bucket}/runs/run-2/dataset/manifest.json", {"counts": {"total": 100}})
    validated = hashlib.sha256(b"GGUF-validated").hexdigest()
    storage.write_json(f"s3://{bucket}/runs/run-2/report/report.json", {"passed": True, "metrics": {}, "gguf_sha256": validated})
    deploy.handler({"run_id": "run-2"}, Context())
    storage.write_bytes(f"s3://{bucket}/runs/run-2/model.gguf", b"GGUF-swapped!!")  # same size, other bytes
    with pytest.raises(UnvalidatedModel, match="but run run-2 validated"):
        promote.handler({"run_id": "run-2"}, Context())
    assert "mistral-researcher:latest" not in server.state.models
    assert not storage.exists(f"s3://{bucket}/models/current.json")


def test_a_bad_run_id_is_named_before_any_request(served):
    server, _ = served
    with pytest.raises(InvalidArgument, match="run id"):
        deploy.handler({"run_id": "../etc"}, Context())
    assert not server.state.calls
