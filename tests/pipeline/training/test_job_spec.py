"""The one training job specification: its defaults are the stack's, its ASL form is what Step
Functions reads, and a stack output that is not one is a named error."""

from __future__ import annotations

import json

import pytest

from infra import config as stack_config
from pipeline import contracts
from pipeline.errors import InvalidArgument
from pipeline.training import job_spec

SETTINGS = job_spec.JobSettings(
    role_arn="arn:aws:iam::123456789012:role/sm",
    image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1",
    bucket="artifacts",
    base_model_uri="s3://artifacts/base-models/Mistral-7B-Instruct-v0.2/",
)


def test_defaults_are_the_stacks_defaults():
    """A job started with flags alone is the job a stack with default settings would start."""
    declared = stack_config.declared()
    assert SETTINGS.instance_type == declared["trainingInstanceType"]["default"]
    assert SETTINGS.volume_size_gb == declared["trainingVolumeSizeGb"]["default"]
    assert SETTINGS.max_runtime_seconds == declared["trainingMaxRuntimeSeconds"]["default"]
    assert SETTINGS.max_wait_seconds == declared["trainingMaxWaitSeconds"]["default"]
    assert SETTINGS.job_prefix == declared["trainingJobPrefix"]["default"]
    assert dict(SETTINGS.hyperparameters) == json.loads(declared["trainingHyperparameters"]["default"])


def test_state_machine_parameters_take_the_run_from_the_execution():
    parameters = job_spec.state_machine_parameters(SETTINGS)
    assert parameters["TrainingJobName.$"] == "$.dataset.training_job_name"
    training, base_model = parameters["InputDataConfig"]
    assert training["DataSource"]["S3DataSource"]["S3Uri.$"] == "States.Format('{}/', $.dataset.dataset_uri)"
    assert base_model["DataSource"]["S3DataSource"]["S3Uri"] == SETTINGS.base_model_uri
    assert parameters["OutputDataConfig"]["S3OutputPath.$"] == "States.Format('s3://artifacts/runs/{}/training', $.run_id)"
    assert parameters["CheckpointConfig"] == {"S3Uri.$": "States.Format('s3://artifacts/checkpoints/{}', $.run_id)"}
    assert parameters["Tags"] == [{"Key": "run_id", "Value.$": "$.run_id"}]
    assert "FromExecution" not in json.dumps(parameters)


def test_a_concrete_request_places_the_job_in_the_run_layout():
    request = job_spec.create_training_job_request(SETTINGS, job_name="job", dataset_uri="s3://artifacts/runs/r1/dataset", run_id="r2")
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://artifacts/runs/r1/dataset/"
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://artifacts/runs/r2/training", "CompressionType": "NONE"}
    assert job_spec.adapter_uri("artifacts", "r2", "job") == "s3://artifacts/runs/r2/training/job/output/model/"
    assert request["HyperParameters"] == {"time_budget_seconds": "7200"}
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == contracts.metric_definitions()


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("not an object", "must be a JSON object"),
        ({**SETTINGS.as_output(), "role_arn": ""}, "missing \\['role_arn'\\]"),
        ({**SETTINGS.as_output(), "extra": 1}, "unknown fields \\['extra'\\]"),
        ({**SETTINGS.as_output(), "volume_size_gb": "50"}, "volume_size_gb must be a positive integer"),
        ({**SETTINGS.as_output(), "max_wait_seconds": 60}, "must be at least max_runtime_seconds"),
        ({**SETTINGS.as_output(), "hyperparameters": {"lora_r": 8}}, "map names to strings"),
        ({**SETTINGS.as_output(), "job_prefix": "Bad_Prefix"}, "training job prefix must match"),
    ],
)
def test_a_stack_output_that_is_not_a_specification_is_a_named_error(output, message):
    with pytest.raises(InvalidArgument, match=message):
        job_spec.JobSettings.from_output(output)


def test_the_output_round_trips():
    assert job_spec.JobSettings.from_output(json.loads(json.dumps(SETTINGS.as_output()))) == SETTINGS
