"""The ScoreProfiles Lambda: the orchestrator's batch in, one result per profile out, the production
run named from the pointer; against the contract-test Ollama server and moto's S3."""

from __future__ import annotations

import hashlib
import json
import re

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
    remaining_ms = 300_000  # Lambda's context: the function's time left

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


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
        monkeypatch.setenv("CUSTOM_MODEL_SHARE", "100")  # the migration's end: the custom model scores every profile
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


def test_a_batch_out_of_time_answers_timeout_per_profile_instead_of_failing(host):
    server, _ = host
    context = Context()
    context.remaining_ms = int(score.RESPONSE_RESERVE_S * 1000) - 1  # nothing left to spend on requests
    answer = score.handler({"profiles": PROFILES}, context)
    assert [(r["failure"], r["route"]) for r in answer["results"]] == [
        ("timeout", "teacher"),
        ("invalid_profile", "teacher"),
        ("timeout", "teacher"),
    ]
    assert server.state.generate_requests == [] and answer["summary"]["failed"] == {"timeout": 2, "invalid_profile": 1}


def test_a_production_tag_that_is_not_the_promoted_model_is_never_scored(host, capsys):
    server, bucket = host
    promoted = server.state.digest(server.state.models["mistral-researcher:latest"])
    pointer = {"run_id": "weekly-2026-11-29", "ollama_digest": promoted}
    storage.write_bytes(f"s3://{bucket}/models/current.json", json.dumps(pointer).encode())
    assert [r["failure"] for r in score.handler({"profiles": PROFILES}, Context())["results"]] == [None, "invalid_profile", None]
    server.state.models["mistral-researcher:latest"] = {"files": {}, "template": "{{ .Prompt }}", "system": "", "parameters": {}}
    server.state.generate_requests.clear()
    capsys.readouterr()
    answer = score.handler({"profiles": PROFILES}, Context())
    assert [(r["failure"], r["route"]) for r in answer["results"]] == [
        ("model_mismatch", "teacher"),
        ("invalid_profile", "teacher"),
        ("model_mismatch", "teacher"),
    ]
    assert server.state.generate_requests == [] and answer["summary"]["scored"] == 0
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert metrics[-1]["ProfilesFailed_model_mismatch"] == [2.0]


def test_the_audit_slice_is_flagged_for_the_teacher_and_counted(host, monkeypatch, capsys):
    from pipeline.scoring import routing

    monkeypatch.setenv("TEACHER_AUDIT_SHARE", "50")
    profiles = [{"twitter_id": str(4000 + i), "username": f"user_{i}"} for i in range(40)]
    answer = score.handler({"profiles": profiles}, Context())
    flagged = [r["twitter_id"] for r in answer["results"] if r["audit"]]
    assert flagged == [p["twitter_id"] for p in profiles if routing.in_audit_slice(p["twitter_id"], 50)]
    assert 10 < len(flagged) < 30 and answer["summary"]["audited"] == len(flagged)
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert metrics[-1]["ProfilesAudited"] == [float(len(flagged))]
    monkeypatch.setenv("CUSTOM_MODEL_SHARE", "0")  # nothing routed: nothing to audit, the teacher scores all
    assert not any(r["audit"] for r in score.handler({"profiles": profiles}, Context())["results"])


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
    assert {r["route"] for r in answer["results"]} == {"teacher"}  # every one falls back to Claude: none lost


def expected_position(twitter_id: str) -> float:
    """The routing contract, as the orchestrator may compute it: sha256("customModelShare:" + id),
    first 8 bytes big-endian, as a percentage."""
    digest = hashlib.sha256(b"customModelShare:" + twitter_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def batch(count: int) -> list[dict]:
    return [{"twitter_id": str(1000 + i), "username": f"user_{i}", "bio": "PhD student"} for i in range(count)]


def test_the_share_routes_a_stable_hash_based_set_of_profiles_to_the_custom_model(host, monkeypatch, capsys):
    server, _ = host
    monkeypatch.setenv("CUSTOM_MODEL_SHARE", "30")
    profiles = batch(40)
    answer = score.handler({"profiles": profiles}, Context())

    custom = {p["twitter_id"] for p in profiles if expected_position(p["twitter_id"]) < 30}
    assert 0 < len(custom) < len(profiles)
    for result in answer["results"]:
        if result["twitter_id"] in custom:
            assert result["route"] == "custom" and result["score"] is not None and result["failure"] is None
        else:
            assert result["route"] == "teacher" and result["score"] is None and result["failure"] is None
            assert "outside the custom model's share (30 %)" in result["detail"]
    asked = {re.search(r"^handle: (.*)$", r["prompt"], re.M).group(1) for r in server.state.generate_requests}
    assert asked == {p["username"] for p in profiles if p["twitter_id"] in custom}  # the others never reach the host
    summary = answer["summary"]
    assert (summary["share"], summary["scored"], summary["outside_share"]) == (30.0, len(custom), 40 - len(custom))
    assert summary["to_teacher"] == 40 - len(custom)
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line][-1]
    assert emitted["CustomModelShare"] == [30.0] and emitted["ProfilesScored"] == [float(len(custom))]
    assert emitted["ProfilesToTeacher"] == [float(40 - len(custom))] and emitted["ProfilesOutsideShare"] == [float(40 - len(custom))]

    again = score.handler({"profiles": list(reversed(profiles))}, Context())  # another batch, another order: same routes
    assert {r["twitter_id"]: r["route"] for r in again["results"]} == {r["twitter_id"]: r["route"] for r in answer["results"]}


def test_an_invalid_answer_falls_back_to_the_teacher_for_that_profile_only(host, monkeypatch, capsys):
    server, _ = host
    server.state.responder = lambda model, body: (
        "not json"
        if "handle: crypto_bob" in body["prompt"]
        else json.dumps({"handle": "neuro_jane", "score": "0.91", "reason": "PhD neuroscientist"})
    )
    answer = score.handler({"profiles": PROFILES}, Context())
    assert [(r["route"], r["failure"]) for r in answer["results"]] == [
        ("custom", None),
        ("teacher", "invalid_profile"),
        ("teacher", "invalid_answer"),
    ]
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line][-1]
    assert emitted["ProfilesFailed_invalid_answer"] == [1.0] and emitted["ProfilesToTeacher"] == [2.0]


def test_a_share_of_zero_never_wakes_the_host(host, stopped_host, monkeypatch):
    server, _ = host
    ec2, instance = stopped_host
    monkeypatch.setenv("HOST_INSTANCE_ID", instance)
    monkeypatch.setenv("CUSTOM_MODEL_SHARE", "0")
    answer = score.handler({"profiles": PROFILES}, Context())
    assert [(r["route"], r["failure"]) for r in answer["results"]] == [("teacher", None), ("teacher", "invalid_profile"), ("teacher", None)]
    assert ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"] == "stopped"
    assert server.state.generate_requests == []


@pytest.mark.parametrize("share", ["-1", "101", "ten", "nan"])
def test_a_share_outside_0_to_100_is_a_named_error(host, monkeypatch, share):
    monkeypatch.setenv("CUSTOM_MODEL_SHARE", share)
    with pytest.raises(InvalidArgument, match="CUSTOM_MODEL_SHARE"):
        score.handler({"profiles": PROFILES}, Context())
