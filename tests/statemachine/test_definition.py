"""The ASL file itself: the spec's states, guards on every task, and two independent validators."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from infra import asl
from tests.statemachine.conftest import sample_definition_values

ROOT = Path(__file__).resolve().parents[2]
ASL_VALIDATOR = ROOT / "node_modules" / ".bin" / "asl-validator"
SEED_STATES = {
    "GenerateDataset",
    "ValidateData",
    "StartTraining",
    "WaitForTraining",
    "CheckStatus",
    "ConvertToGGUF",
    "DeployModel",
    "ValidateModel",
    "Rollback",
}


@pytest.fixture(scope="module")
def definition() -> dict:
    return json.loads(asl.render(sample_definition_values()))


def broken(definition: dict) -> dict:
    """A definition with a dangling Next and an unreachable state: both validators must object."""
    copy = json.loads(json.dumps(definition))
    copy["States"]["GenerateDataset"]["Next"] = "NoSuchState"
    return copy


def asl_validator(definition: dict, tmp_path) -> subprocess.CompletedProcess:
    assert ASL_VALIDATOR.exists(), "asl-validator is missing: `make test` installs it with npm (package.json)"
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(definition))
    return subprocess.run([str(ASL_VALIDATOR), "--json-path", str(path)], capture_output=True, text=True)


def cfn_lint_errors(definition: dict, tmp_path) -> list[str]:
    from cfnlint.api import lint_all

    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "TrainingPipeline": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {"RoleArn": "arn:aws:iam::123456789012:role/sfn", "Definition": definition},
            }
        },
    }
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    return [f"{match.rule.id}: {match.message}" for match in lint_all(path.read_text())]


def test_asl_validator_accepts_it_and_rejects_a_broken_copy(definition, tmp_path):
    result = asl_validator(definition, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert asl_validator(broken(definition), tmp_path).returncode != 0


def test_cfn_lint_e3601_accepts_it_and_rejects_a_broken_copy(definition, tmp_path):
    assert [error for error in cfn_lint_errors(definition, tmp_path) if error.startswith("E3601")] == []
    # E3601 checks the schema (types, fields), not the graph: break the schema.
    schema_broken = json.loads(json.dumps(definition))
    del schema_broken["States"]["StartTraining"]["Resource"]
    assert any(error.startswith("E3601") for error in cfn_lint_errors(schema_broken, tmp_path))


def test_the_seeds_states_are_there_by_name(definition):
    assert SEED_STATES <= set(definition["States"])
    assert definition["States"]["WaitForTraining"]["Next"] == "CheckStatus"
    choices = {c["StringEquals"]: c["Next"] for c in definition["States"]["TrainingDone"]["Choices"] if "StringEquals" in c}
    assert choices["InProgress"] == "WaitForTraining" and choices["Completed"] == "CheckAdapter"
    assert choices["Failed"] == "DescribeFailedTraining"
    # SageMaker: a job stopped at MaxRuntime is Stopped with SecondaryStatus MaxRuntimeExceeded; what
    # it left in /opt/ml/model is uploaded. It goes on only if that holds an adapter.
    [max_runtime] = [c for c in definition["States"]["TrainingDone"]["Choices"] if "And" in c]
    assert {(v["Variable"], v["StringEquals"]) for v in max_runtime["And"]} == {
        ("$.training_status.TrainingJobStatus", "Stopped"),
        ("$.training_status.SecondaryStatus", "MaxRuntimeExceeded"),
    }
    assert max_runtime["Next"] == "CheckAdapter"
    assert definition["States"]["AdapterFound"]["Choices"][0]["Next"] == "ConvertToGGUF"
    assert definition["States"]["AdapterFound"]["Default"] == "NoAdapter"


def test_every_task_is_caught_and_every_lambda_retries_transient_errors(definition):
    for name, state in definition["States"].items():
        if state["Type"] != "Task":
            continue
        assert any("States.ALL" in c["ErrorEquals"] for c in state.get("Catch", [])), f"{name} has no catch-all"
        if state["Resource"] == "arn:aws:states:::lambda:invoke":
            retried = {error for retry in state["Retry"] for error in retry["ErrorEquals"]}
            assert {"Lambda.ServiceException", "Lambda.TooManyRequestsException"} <= retried, name
    for name in ("DeployModel", "ValidateModel", "PromoteModel"):
        assert definition["States"][name]["Catch"][0]["Next"] == "Rollback"
    assert "DatabaseUnavailable" in {e for r in definition["States"]["GenerateDataset"]["Retry"] for e in r["ErrorEquals"]}


# What each service's throttling is called in a Task's Error: "<Service>.<ErrorName>", the error
# name always with the suffix "Exception" (AWS Step Functions developer guide, "AWS SDK service
# integrations": e.g. S3's BucketAlreadyExists is S3.BucketAlreadyExistsException).
THROTTLING = {
    "arn:aws:states:::lambda:invoke": "Lambda.TooManyRequestsException",
    "arn:aws:states:::sns:publish": "SNS.ThrottledException",
    "sagemaker": "SageMaker.ThrottlingException",
    "ec2": "Ec2.RequestLimitExceededException",
    "sfn": "Sfn.ThrottlingException",
    "s3": "S3.SlowDownException",
}


def test_every_aws_call_retries_its_services_throttling(definition):
    for name, state in definition["States"].items():
        if state["Type"] != "Task":
            continue
        resource = state["Resource"]
        key = resource if resource in THROTTLING else resource.split(":")[-2]
        retried = {error for retry in state.get("Retry", []) for error in retry["ErrorEquals"]}
        assert THROTTLING[key] in retried, f"{name} does not retry {THROTTLING[key]}"
        assert not any(error.startswith("Ec2.") and not error.endswith("Exception") for error in retried), name


def paths_read(value) -> set[str]:
    """The top-level fields of the state's input that its Parameters (or Choice rules) read."""
    found = set()
    text = json.dumps(value)
    for match in re.finditer(r"\$\.([A-Za-z_]+)", text):
        found.add(match.group(1))
    return found


def test_every_catch_writes_what_the_states_after_it_read(definition):
    """A Catch's output is its ResultPath; the state it goes to (and those that state leads to before
    the run ends) must not read an $.error that the Catch did not write. NotifyFailure and Fail read
    $.error: every Catch that reaches them writes $.error, or had it written before."""
    states = definition["States"]
    for name, state in states.items():
        for catch in state.get("Catch", []):
            target = states[catch["Next"]]
            if "error" in paths_read(target.get("Parameters", {})) and catch["ResultPath"] != "$.error":
                # allowed only where $.error was written before this state could run
                # NotifyFailure runs only with $.error written; RecordFailedRun after it reads that one
                assert name in {"Rollback", "NotifyFailure"}, f"{name}'s Catch writes {catch['ResultPath']}, {catch['Next']} reads $.error"


def test_every_placeholder_is_filled_and_typed_values_stay_typed(definition):
    text = json.dumps(definition)
    assert "${" not in text
    spec = definition["States"]["StartTraining"]["Parameters"]
    assert spec["ResourceConfig"]["VolumeSizeInGB"] == 50 and spec["StoppingCondition"]["MaxRuntimeInSeconds"] == 7200
    assert isinstance(spec["AlgorithmSpecification"]["MetricDefinitions"], list)
    assert spec["OutputDataConfig"]["CompressionType"] == "NONE" and spec["EnableNetworkIsolation"] is True


def test_render_refuses_missing_extra_or_mistyped_values():
    values = sample_definition_values()
    with pytest.raises(asl.DefinitionError, match="without values"):
        asl.render({k: v for k, v in values.items() if k != "ArtifactBucket"})
    with pytest.raises(asl.DefinitionError, match="without placeholders"):
        asl.render({**values, "Unused": "x"})
    with pytest.raises(asl.DefinitionError, match="needs a string"):
        asl.render({**values, "ArtifactBucket": 5})


def test_the_host_is_woken_right_before_its_first_request_and_held_by_the_requests_after(definition):
    """ConvertToGGUF -> DescribeHost -> DeployModel, which wakes the host: nothing sits between
    starting the host and its first request. The states after DeployModel each ask Ollama, and no
    one of them lasts longer than a Lambda's timeout, which the least hostIdleStopMinutes outlasts."""
    from pipeline import contracts

    states = definition["States"]
    assert states["AdapterFound"]["Choices"][0]["Next"] == "ConvertToGGUF"
    assert states["ConvertToGGUF"]["Next"] == "DescribeHost" and states["DescribeHost"]["Next"] == "DeployModel"
    assert not any(state.get("Resource", "").endswith("ec2:startInstances") for state in states.values())  # DeployModel starts it
    assert "OllamaUnavailable" not in json.dumps(states["ConvertToGGUF"].get("Retry", []))  # the conversion never asks Ollama
    assert contracts.HOST_IDLE_STOP_MIN_MINUTES * 60 > contracts.LAMBDA_MAX_TIMEOUT_S + 2 * 60


def ollama_unavailable_errors() -> set[str]:
    """Every error a Lambda reports for an Ollama that does not answer: OllamaUnavailable and each
    subclass (Lambda's errorType is the class name; Step Functions matches names, not classes)."""
    import pipeline.serving.host  # noqa: F401  (defines HostStarting)
    from pipeline.serving.ollama import OllamaUnavailable

    def names(cls) -> set[str]:
        return {cls.__name__}.union(*(names(sub) for sub in cls.__subclasses__()))

    return names(OllamaUnavailable)


def test_every_state_that_retries_an_unanswering_ollama_retries_each_of_its_kinds(definition):
    kinds = ollama_unavailable_errors()
    assert {"OllamaUnavailable", "OllamaTimeout", "HostStarting"} <= kinds
    retrying = 0
    for name, state in definition["States"].items():
        for retry in state.get("Retry", []):
            if set(retry["ErrorEquals"]) & kinds:
                retrying += 1
                assert set(retry["ErrorEquals"]) == kinds, f"{name} retries {retry['ErrorEquals']}, not every kind of {sorted(kinds)}"
    assert retrying == 4  # DeployModel, ValidateModel, PromoteModel, Rollback


def test_a_capacity_shortage_is_retried_for_tens_of_minutes(definition):
    [retry] = [r for r in definition["States"]["DeployModel"]["Retry"] if r["ErrorEquals"] == ["HostCapacityUnavailable"]]
    waits = [min(retry["IntervalSeconds"] * retry["BackoffRate"] ** i, retry["MaxDelaySeconds"]) for i in range(retry["MaxAttempts"])]
    assert 30 * 60 <= sum(waits) <= 60 * 60, sum(waits)  # at most this long, JitterStrategy FULL draws each wait below


def test_an_execution_stops_only_a_host_it_started_and_no_scoring_uses(definition):
    [rule] = definition["States"]["RestoreHost"]["Choices"]
    assert rule["Next"] == "StopHost"
    text = json.dumps(rule)
    assert '"StringEquals": "stopped"' in text and '"StringEquals": "stopping"' in text
    assert {"Variable": "$.custom_model_share", "NumericEquals": 0} in rule["And"]
    assert {"Variable": "$.keep_host_running", "BooleanEquals": False} in rule["And"]
