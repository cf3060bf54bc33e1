"""Each zip Lambda exactly as `pulumi up` ships it (the program's own code archive and layer,
zipped and unpacked), imported and invoked in a fresh python3.12 with nothing on its path but the
package and the runtime's boto3 — against moto in server mode, the real PostgreSQL and the Ollama
contract-test server. What the in-process handler tests cannot see: a module the layer lacks, an
import that pulls in another stage's dependencies, a path the runtime does not have."""

from __future__ import annotations

import json
import re

import boto3
import pytest

from pipeline import contracts, prompt, storage
from pipeline.local import sample
from pipeline.serving.modelfile import model_tag
from tests.deploy_rehearsal.conftest import create_bucket, lambda_environment
from tests.deploy_rehearsal.lambda_runtime import UNZIPPED_LIMIT_BYTES, unzipped_size
from tests.lambdas.test_dataset_handlers import make_secret
from tests.pipeline.serving.ollama_contract_server import OllamaContractServer, echo_teacher_responder

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

ZIP_FUNCTIONS = {
    "generate-dataset",
    "validate-data",
    "deploy-model",
    "validate-model",
    "promote-model",
    "rollback-model",
    "score-profiles",
    "record-run",
}


def test_every_zip_lambda_is_within_lambdas_unzipped_size_limit(deployed_functions):
    assert set(deployed_functions) == ZIP_FUNCTIONS
    for function in deployed_functions.values():
        assert not (function.task_root / "pipeline" / "local").exists(), "demo code does not ship"
        size = unzipped_size(function.task_root) + sum(unzipped_size(layer) for layer in function.layer_roots)
        assert size < UNZIPPED_LIMIT_BYTES, (function.name, size)


def test_every_zip_lambda_imports_and_answers_a_bad_event_with_a_named_error(deployed_functions, aws_world, tmp_path):
    """The handler module imports in the runtime (no ModuleNotFoundError at cold start) and refuses
    an event without a run id by name."""
    for name, function in sorted(deployed_functions.items()):
        answer = function.invoke({}, lambda_environment(aws_world), tmp_path)
        assert answer.get("errorType") == "InvalidArgument", (name, answer)
        # The pipeline's stages need a run id; ScoreProfiles (the orchestrator's) a batch of profiles.
        expected = "list of profiles" if name == "score-profiles" else "run id"
        assert expected in answer["errorMessage"], (name, answer)


def test_a_weekly_run_through_every_zip_lambda(deployed_functions, aws_world, db, database_url, tmp_path):
    sample.load_sample(db, profiles=700, seed=3)
    generate = deployed_functions["generate-dataset"]
    bucket = generate.environment["ARTIFACT_BUCKET"]
    create_bucket(bucket)
    seeds_uri = generate.environment["SEED_PROFILES_URI"]
    create_bucket(storage.split_s3_uri(seeds_uri)[0])
    storage.write_bytes(seeds_uri, sample.seed_profile_list().encode())
    environment = lambda_environment(aws_world, DATABASE_SECRET_ARN=make_secret(database_url))
    run_id = "Weekly_run_" + "2026_11_29"

    dataset = generate.invoke(
        {"run_id": run_id, "options": {"min_rows": 100}, "training_job_prefix": "researcher-scorer"}, environment, tmp_path
    )
    assert "result" in dataset, dataset
    dataset = dataset["result"]
    assert dataset["dataset_uri"] == f"s3://{bucket}/runs/{run_id}/dataset"
    assert re.fullmatch(contracts.TRAINING_JOB_NAME_PATTERN, dataset["training_job_name"])
    assert dataset["counts"]["seed_profiles_in_holdout"] == len(sample.seed_profile_ids())

    validation = deployed_functions["validate-data"].invoke({"run_id": run_id, "options": {"min_rows": 100}}, environment, tmp_path)
    assert validation["result"]["valid"] is True, validation

    # What ConvertToGGUF would have written (the image Lambda is rehearsed in test_conversion_image.py).
    gguf_uri = f"s3://{bucket}/runs/{run_id}/model.gguf"
    storage.write_bytes(gguf_uri, b"GGUF" + b"\x00" * 4096)
    scores = {}
    for name in (contracts.HOLDOUT_FILE, contracts.SEEDS_FILE):
        for line in storage.read_bytes(f"{dataset['dataset_uri']}/{name}").decode().splitlines():
            answer = prompt.parse_answer(json.loads(line)["output"])
            scores[answer.handle] = answer.score
    # The Ollama host, stopped (on moto's EC2): DeployModel wakes it before its first request.
    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge")["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance])

    def host_state() -> str:
        return ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]

    with OllamaContractServer() as ollama:
        ollama.state.responder = echo_teacher_responder(scores)
        serving = lambda_environment(aws_world, OLLAMA_URL=ollama.url, HOST_INSTANCE_ID=instance)
        deployed = deployed_functions["deploy-model"].invoke({"run_id": run_id}, serving, tmp_path)
        assert deployed.get("result", {}).get("candidate") == model_tag(run_id), deployed
        assert host_state() == "running"
        validated = deployed_functions["validate-model"].invoke({"run_id": run_id}, serving, tmp_path)
        assert validated.get("result", {}).get("passed") is True, validated
        assert storage.exists(f"s3://{bucket}/runs/{run_id}/report/report.md")
        promoted = deployed_functions["promote-model"].invoke({"run_id": run_id}, serving, tmp_path)
        assert promoted.get("result", {}).get("production") == "mistral-researcher:latest", promoted
        assert ollama.state.models["mistral-researcher:latest"] == ollama.state.models[model_tag(run_id)]
        # RecordRun: the run's history line, its outcome read from the artifacts, and the summary NotifySuccess publishes.
        recorded = deployed_functions["record-run"].invoke({"run_id": run_id}, serving, tmp_path)
        assert recorded.get("result", {}).get("outcome") == "promoted", recorded
        assert recorded["result"]["summary"].startswith(f"Run {run_id} promoted; pearson 1.000")
        line = json.loads(storage.read_bytes(f"s3://{bucket}/runs/index.jsonl").decode().splitlines()[-1])
        assert (line["run_id"], line["origin"], line["dataset"]["rows"]) == (run_id, "aws", dataset["counts"]["total"])
        # The orchestrator's batch, for a host that is stopped again: woken, then scored by the model
        # now in production and named by its run.
        ec2.stop_instances(InstanceIds=[instance])
        batch = {"profiles": [{"twitter_id": "42", "username": "neuro_jane", "bio": "PhD at MIT"}, {"twitter_id": "43"}]}
        at_full_share = {**serving, "CUSTOM_MODEL_SHARE": "100"}  # the migration's end
        scored = deployed_functions["score-profiles"].invoke(batch, at_full_share, tmp_path)
        assert host_state() == "running"
        assert scored.get("result", {}).get("run_id") == run_id, scored
        assert [(r["twitter_id"], r["failure"], r["route"]) for r in scored["result"]["results"]] == [
            ("42", None, "custom"),
            ("43", "invalid_profile", "teacher"),
        ]
        # A later run that fails its gates is rolled back; production stays.
        storage.write_bytes(f"s3://{bucket}/runs/run-2/model.gguf", b"GGUF" + b"\x01" * 4096)
        assert "result" in deployed_functions["deploy-model"].invoke(
            {"run_id": "run-2", "gguf_uri": f"s3://{bucket}/runs/run-2/model.gguf"}, serving, tmp_path
        )
        rolled_back = deployed_functions["rollback-model"].invoke({"run_id": "run-2"}, serving, tmp_path)
        assert rolled_back.get("result", {}).get("candidate_deleted") is True, rolled_back
        assert model_tag("run-2") not in ollama.state.models
        assert ollama.state.models["mistral-researcher:latest"] == ollama.state.models[model_tag(run_id)]
    pointer = json.loads(storage.read_bytes(f"s3://{bucket}/models/current.json"))
    assert pointer["run_id"] == run_id


def test_validate_data_refuses_a_dataset_without_enough_seed_profiles(deployed_functions, aws_world, db, database_url, tmp_path):
    """The demo's synthetic seed ids are not a production default: a list that matches too few
    profiles in the database stops the run before training."""
    sample.load_sample(db, profiles=700, seed=3)
    generate = deployed_functions["generate-dataset"]
    create_bucket(generate.environment["ARTIFACT_BUCKET"])
    seeds_uri = generate.environment["SEED_PROFILES_URI"]
    create_bucket(storage.split_s3_uri(seeds_uri)[0])
    storage.write_bytes(seeds_uri, b"999999999999\n")  # nobody in this database
    environment = lambda_environment(aws_world, DATABASE_SECRET_ARN=make_secret(database_url))
    assert "result" in generate.invoke({"run_id": "run-seedless", "options": {"min_rows": 100}}, environment, tmp_path)
    validation = deployed_functions["validate-data"].invoke({"run_id": "run-seedless", "options": {"min_rows": 100}}, environment, tmp_path)
    assert validation["result"]["valid"] is False
    assert [problem["reason"] for problem in validation["result"]["problems"]] == ["TooFewSeedProfiles"]


def test_generate_dataset_without_a_seed_list_is_a_named_error(deployed_functions, aws_world, tmp_path):
    generate = deployed_functions["generate-dataset"]
    answer = generate.invoke({"run_id": "run-x"}, lambda_environment(aws_world, SEED_PROFILES_URI=""), tmp_path)
    assert answer["errorType"] == "InvalidArgument" and "SEED_PROFILES_URI" in answer["errorMessage"]
