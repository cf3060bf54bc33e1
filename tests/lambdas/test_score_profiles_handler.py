"""The ScoreProfiles Lambda: the orchestrator's batch in, one result per profile out, the production
run named from the pointer; against the contract-test Ollama server and moto's S3."""

from __future__ import annotations

import json

import pytest

from lambdas.score_profiles import handler as score
from pipeline import storage
from pipeline.errors import InvalidArgument
from tests.pipeline.serving.ollama_contract_server import OllamaContractServer, echo_teacher_responder


class Context:
    function_name = "score-profiles"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:score-profiles"
    aws_request_id = "request-1"


PROFILES = [
    {"twitter_id": "1", "username": "neuro_jane", "bio": "PhD neuroscientist at MIT"},
    {"twitter_id": "2", "username": "", "bio": "no handle"},
    {"twitter_id": "3", "username": "crypto_bob", "bio": "gm"},
]


@pytest.fixture
def host(monkeypatch, bucket):
    with OllamaContractServer() as server:
        monkeypatch.setenv("OLLAMA_URL", server.url)
        monkeypatch.setenv("ARTIFACT_BUCKET", bucket)
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "test")
        monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "test")
        server.state.models["mistral-researcher:latest"] = {"files": {}, "template": "", "system": "", "parameters": {}}
        server.state.responder = echo_teacher_responder({"neuro_jane": 0.93, "crypto_bob": 0.04})
        yield server, bucket


def test_a_batch_gets_one_result_per_profile_from_the_production_run(host, capsys):
    server, bucket = host
    storage.write_bytes(f"s3://{bucket}/models/current.json", json.dumps({"run_id": "weekly-2026-11-29"}).encode())
    answer = score.handler({"profiles": PROFILES}, Context())
    assert answer["model"] == "mistral-researcher:latest" and answer["run_id"] == "weekly-2026-11-29"
    assert [(r["twitter_id"], r["score"], r["failure"]) for r in answer["results"]] == [
        ("1", 0.93, None),
        ("2", None, "invalid_profile"),
        ("3", 0.04, None),
    ]
    assert answer["summary"]["scored"] == 2 and answer["summary"]["failed"] == {"invalid_profile": 1}
    assert {request["model"] for request in server.state.generate_requests} == {"mistral-researcher:latest"}
    # The counts reach CloudWatch as embedded metrics in the function's log.
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert metrics and metrics[-1]["ProfilesScored"] == [2.0] and metrics[-1]["ProfilesFailed_invalid_profile"] == [1.0]


def test_without_a_production_model_every_profile_says_so(host):
    server, _ = host
    server.state.models.clear()
    answer = score.handler({"profiles": PROFILES[:1]}, Context())
    assert answer["run_id"] is None and answer["results"][0]["failure"] == "model_not_found"


@pytest.mark.parametrize(
    ("event", "message"),
    [({}, "non-empty list of profiles"), ({"profiles": []}, "non-empty list"), ({"profiles": [{}] * 101}, "at most 100")],
)
def test_a_malformed_batch_is_a_named_error(host, event, message):
    with pytest.raises(InvalidArgument, match=message):
        score.handler(event, Context())


@pytest.fixture
def stopped_host(aws):
    import boto3

    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge")["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance])
    return ec2, instance


def test_a_stopped_host_is_woken_and_the_batch_scored(host, stopped_host, monkeypatch):
    ec2, instance = stopped_host
    monkeypatch.setenv("HOST_INSTANCE_ID", instance)
    monkeypatch.setattr("pipeline.serving.host.POLL_SECONDS", 0.01)
    answer = score.handler({"profiles": PROFILES}, Context())
    assert ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    assert [r["failure"] for r in answer["results"]] == [None, "invalid_profile", None]


def test_a_host_not_ready_in_time_answers_host_starting_not_a_failure(host, stopped_host, monkeypatch):
    ec2, instance = stopped_host
    monkeypatch.setenv("HOST_INSTANCE_ID", instance)
    monkeypatch.setenv("HOST_WAKE_WAIT_SECONDS", "1")
    monkeypatch.setenv("OLLAMA_URL", "http://127.0.0.1:9")  # Ollama not up yet on the starting host
    answer = score.handler({"profiles": PROFILES}, Context())
    assert [r["failure"] for r in answer["results"]] == ["host_starting", "invalid_profile", "host_starting"]
    assert answer["summary"]["failed"] == {"host_starting": 2, "invalid_profile": 1} and answer["summary"]["scored"] == 0
    assert ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"] in ("pending", "running")


def test_a_host_that_cannot_be_described_is_host_unavailable_per_profile(host, monkeypatch):
    monkeypatch.setenv("HOST_INSTANCE_ID", "i-0123456789abcdef0")  # not in this account
    answer = score.handler({"profiles": PROFILES}, Context())
    assert [r["failure"] for r in answer["results"]] == ["host_unavailable", "invalid_profile", "host_unavailable"]
    assert "InvalidInstanceID.NotFound" in answer["results"][0]["detail"]
