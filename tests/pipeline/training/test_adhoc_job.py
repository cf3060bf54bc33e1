"""`python -m pipeline train --sagemaker` against moto: the job it creates through the SageMaker SDK
is the job the deployed state machine's StartTraining creates (both requests as sent, field by
field), its status and logs are followed, and every bad input is a named error before any job."""

from __future__ import annotations

import json
import stat
import time
import types
import uuid
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from infra import asl
from pipeline import cli, contracts, runs
from pipeline.training import adhoc_job, job_spec
from tests.conftest import fake_aws_credentials
from tests.sagemaker_jobs import JobLifecycle, RequestRecorder
from tests.statemachine.conftest import FUNCTIONS, definition_values

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/training-sagemaker-role"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/training@sha256:" + "a" * 64
RUN_ID = "adhoc-20261129-120000-abcdef"  # what runs.new_run_id gives these tests
JOB_NAME = contracts.training_job_name(RUN_ID, contracts.TRAINING_JOB_PREFIX)  # the stack's default prefix


@pytest.fixture
def sagemaker(monkeypatch, tmp_path):
    """moto (Step Functions executing the ASL, S3, SageMaker, CloudWatch Logs), a bucket holding a
    dataset stage's output, a recorder of every request sent, and jobs that live as real ones do."""
    fake_aws_credentials(monkeypatch, REGION)
    monkeypatch.setattr(runs, "new_run_id", lambda prefix="run": f"{prefix}-20261129-120000-abcdef")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no Pulumi CLI unless a test puts one there
    (tmp_path / "bin").mkdir()
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        dataset = f"s3://{bucket}/runs/run-20261122-030000-0a0b0c/dataset"
        manifest = {"format": contracts.MANIFEST_FORMAT, "counts": {"train": 800}}
        boto3.client("s3").put_object(Bucket=bucket, Key=dataset.split("/", 3)[3] + "/manifest.json", Body=json.dumps(manifest))
        recorder = RequestRecorder().install(monkeypatch)
        lifecycle = JobLifecycle().install(monkeypatch)
        yield Sandbox(bucket, dataset, recorder, lifecycle, tmp_path)


class Sandbox:
    def __init__(self, bucket, dataset, recorder, lifecycle, tmp_path):
        self.bucket, self.dataset, self.recorder, self.lifecycle, self.tmp_path = bucket, dataset, recorder, lifecycle, tmp_path

    @property
    def flags(self) -> list[str]:
        return ["--role-arn", ROLE, "--image-uri", IMAGE, "--bucket", self.bucket]

    def settings(self) -> job_spec.JobSettings:
        """What the stack would decide with its defaults (infra/training.py)."""
        return job_spec.JobSettings(
            role_arn=ROLE, image_uri=IMAGE, bucket=self.bucket, base_model_uri=f"s3://{self.bucket}/{contracts.BASE_MODEL_PREFIX}"
        )

    def created(self) -> list[dict]:
        return self.recorder.sent("sagemaker", "CreateTrainingJob")

    def pulumi_cli(self, outputs: dict) -> Path:
        """A `pulumi` on PATH that prints these stack outputs as `pulumi stack output --json` does."""
        script = self.tmp_path / "bin" / "pulumi"
        (self.tmp_path / "outputs.json").write_text(json.dumps(outputs))
        script.write_text(
            f'#!/bin/sh\necho "$@" > {self.tmp_path}/pulumi-args\n'
            f'[ "$1 $2 $3" = "stack output --json" ] || exit 2\n/bin/cat {self.tmp_path}/outputs.json\n'
        )
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        return script

    def log(self, *lines: str) -> None:
        """The job's container log (SageMaker's log group, one stream per instance)."""
        logs = boto3.client("logs")
        if not logs.describe_log_groups(logGroupNamePrefix=adhoc_job.LOG_GROUP)["logGroups"]:
            logs.create_log_group(logGroupName=adhoc_job.LOG_GROUP)
        stream = f"{JOB_NAME}/algo-1-1764417600"
        logs.create_log_stream(logGroupName=adhoc_job.LOG_GROUP, logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
        logs.put_log_events(logGroupName=adhoc_job.LOG_GROUP, logStreamName=stream, logEvents=events)


def start_training_as_the_state_machine_does(sandbox: Sandbox, run_id: str) -> dict:
    """The deployed definition's StartTraining state, executed by Step Functions (moto's interpreter)
    with what GenerateDataset hands it; returns the CreateTrainingJob request it sent."""
    arns = {name: f"arn:aws:lambda:{REGION}:123456789012:function:{name}" for name in FUNCTIONS}
    values = definition_values(arns, sandbox.bucket, ROLE, "i-0123456789abcdef0", f"arn:aws:sns:{REGION}:123456789012:failures")
    values["StartTrainingParameters"] = job_spec.state_machine_parameters(sandbox.settings())
    values["BaseModelS3Uri"] = sandbox.settings().base_model_uri
    state = json.loads(asl.render(values))["States"]["StartTraining"]
    state = {key: value for key, value in state.items() if key not in {"Retry", "Catch", "Next"}} | {"End": True}
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(
        name="start-training", definition=json.dumps({"StartAt": "StartTraining", "States": {"StartTraining": state}}), roleArn=ROLE
    )["stateMachineArn"]
    execution_input = {
        "run_id": run_id,
        "dataset": {
            "dataset_uri": sandbox.dataset,
            "training_job_name": contracts.training_job_name(run_id, sandbox.settings().job_prefix),
        },
    }
    execution = sfn.start_execution(stateMachineArn=machine, name=run_id, input=json.dumps(execution_input))["executionArn"]
    for _ in range(200):
        if sfn.describe_execution(executionArn=execution)["status"] != "RUNNING":
            break
        time.sleep(0.05)
    assert sfn.describe_execution(executionArn=execution)["status"] == "SUCCEEDED"
    (request,) = sandbox.created()
    return request


def per_job_fields(request: dict) -> dict:
    """What names one job and places its output: the only fields two jobs of one stack differ in."""
    return {
        "TrainingJobName": request.pop("TrainingJobName"),
        "S3OutputPath": request["OutputDataConfig"].pop("S3OutputPath"),
        "Checkpoint": request.pop("CheckpointConfig"),
        "Tags": request.pop("Tags"),
    }


def test_the_job_is_the_state_machines_job_field_by_field(sagemaker, capsys):
    weekly = start_training_as_the_state_machine_does(sagemaker, "run-20261129-030000-0d0e0f")

    assert cli.main(["train", "--sagemaker", "--dataset", sagemaker.dataset + "/", *sagemaker.flags]) == 0
    adhoc = sagemaker.created()[-1]

    weekly_names, adhoc_names = per_job_fields(weekly), per_job_fields(adhoc)
    assert adhoc.keys() == weekly.keys()
    for name in weekly:  # image, role, channels (same dataset), hyperparameters, stopping, metrics, spot, isolation
        assert adhoc[name] == weekly[name], name
    assert adhoc_names == {
        "TrainingJobName": JOB_NAME,
        "S3OutputPath": f"s3://{sagemaker.bucket}/runs/{RUN_ID}/training",
        "Checkpoint": {"S3Uri": f"s3://{sagemaker.bucket}/checkpoints/{RUN_ID}"},
        "Tags": [{"Key": "run_id", "Value": RUN_ID}],
    }
    assert weekly_names["Tags"] == [{"Key": "run_id", "Value": "run-20261129-030000-0d0e0f"}]
    assert JOB_NAME.startswith("mistral-researcher-adhoc-20261129-120000-")  # traceable, and within the role's <prefix>-* scope
    out = capsys.readouterr().out
    assert f"started {JOB_NAME}" in out and "ml.g4dn.xlarge (spot)" in out
    assert f"s3://{sagemaker.bucket}/runs/{RUN_ID}/training/{JOB_NAME}/output/model/" in out
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=JOB_NAME)
    assert described["RoleArn"] == ROLE and described["EnableManagedSpotTraining"] is True


def test_wait_follows_status_streams_logs_and_metrics_and_prints_the_adapter(sagemaker, capsys):
    sagemaker.lifecycle.script = [
        {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting"},  # TrainingJob.create's own describe
        {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"},
        {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Uploading"},
        {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed"},
    ]
    sagemaker.log("loading the base model", "train_loss=1.234", "eval_loss=1.5 epoch=1", "adapter saved")

    code = cli.main(["train", "--sagemaker", "--wait", "--poll-seconds", "0.01", "--dataset", sagemaker.dataset, *sagemaker.flags])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "loading the base model\ntrain_loss=1.234\neval_loss=1.5 epoch=1\nadapter saved" in captured.out  # the job's log, in order
    assert f"{JOB_NAME} completed" in captured.out
    adapter = f"s3://{sagemaker.bucket}/runs/{RUN_ID}/training/{JOB_NAME}/output/model/"
    assert f"adapter: {adapter}" in captured.out
    assert (
        f"python -m pipeline convert --base-model s3://{sagemaker.bucket}/{contracts.BASE_MODEL_PREFIX} --adapter {adapter}" in captured.out
    )
    assert "python -m pipeline validate --ollama-url" in captured.out and f"{sagemaker.dataset}/holdout.jsonl" in captured.out
    assert sagemaker.lifecycle.describes >= 4  # followed through every status, not answered from the first


def test_follow_shows_the_latest_metrics_on_its_status_line(sagemaker):
    sagemaker.lifecycle.script = [
        {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"},
        {"TrainingJobStatus": "Completed", "SecondaryStatus": "Completed"},
    ]
    sagemaker.log("train_loss=2.5", "train_loss=1.25 epoch=2", "eval_loss=1.5")
    job = adhoc_job.plan(sagemaker.settings(), sagemaker.dataset)
    followed = adhoc_job.follow(adhoc_job.start(job), poll_seconds=0, progress=False)
    assert followed.status == "Completed"
    assert followed.metrics == {"train_loss": 1.25, "epoch": 2.0, "eval_loss": 1.5}  # the job's MetricDefinitions, latest value


def test_a_failed_job_is_a_named_error_with_its_reason(sagemaker, capsys):
    sagemaker.lifecycle.script = [
        {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"},
        {"TrainingJobStatus": "Failed", "SecondaryStatus": "Failed", "FailureReason": "AlgorithmError: CUDA out of memory"},
    ]
    code = cli.main(["train", "--sagemaker", "--wait", "--poll-seconds", "0.01", "--dataset", sagemaker.dataset, *sagemaker.flags])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert f"error: TrainingJobFailed: {JOB_NAME}: AlgorithmError: CUDA out of memory" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("answer", ["y", "n"])
def test_ctrl_c_asks_whether_to_stop_the_job(sagemaker, monkeypatch, capsys, answer):
    sagemaker.lifecycle.script = [{"TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"}]
    interrupted = []

    def sleep(seconds):
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt

    monkeypatch.setattr(adhoc_job, "time", types.SimpleNamespace(sleep=sleep))  # Ctrl-C while the command waits
    monkeypatch.setattr("builtins.input", lambda prompt: answer)

    code = cli.main(["train", "--sagemaker", "--wait", "--dataset", sagemaker.dataset, *sagemaker.flags])

    err = capsys.readouterr().err
    if answer == "y":
        assert sagemaker.recorder.sent("sagemaker", "StopTrainingJob") == [{"TrainingJobName": JOB_NAME}]
        assert code == cli.EXIT_ERROR and f"error: TrainingJobStopped: {JOB_NAME} stopped (Stopped); it left no adapter" in err
    else:
        assert sagemaker.recorder.sent("sagemaker", "StopTrainingJob") == []
        assert code == cli.EXIT_INTERRUPTED and "goes on running (and billing)" in err
        assert boto3.client("sagemaker").describe_training_job(TrainingJobName=JOB_NAME)["TrainingJobStatus"] == "InProgress"


def test_stack_outputs_come_from_the_pulumi_cli(sagemaker, capsys):
    settings = job_spec.JobSettings(**{**sagemaker.settings().as_output(), "instance_type": "ml.g5.2xlarge", "volume_size_gb": 80})
    sagemaker.pulumi_cli({"artifact_bucket": sagemaker.bucket, "training_job": settings.as_output()})

    assert cli.main(["train", "--sagemaker", "--stack", "prod", "--dataset", sagemaker.dataset]) == 0

    (request,) = sagemaker.created()
    assert (sagemaker.tmp_path / "pulumi-args").read_text().split() == ["stack", "output", "--json", "--stack", "prod"]
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 80}
    assert request["RoleArn"] == ROLE and request["AlgorithmSpecification"]["TrainingImage"] == IMAGE


def test_flags_change_the_instance_spot_and_hyperparameters(sagemaker):
    args = ["--instance-type", "ml.g6.xlarge", "--no-spot", "--set", "num_train_epochs=1", "--set", "learning_rate=1e-4"]
    assert cli.main(["train", "--sagemaker", "--dataset", sagemaker.dataset, *sagemaker.flags, *args]) == 0
    (request,) = sagemaker.created()
    assert request["ResourceConfig"]["InstanceType"] == "ml.g6.xlarge"
    assert request["EnableManagedSpotTraining"] is False
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}  # no MaxWait without spot: AWS refuses it
    assert request["HyperParameters"] == {"time_budget_seconds": "7200", "num_train_epochs": "1", "learning_rate": "1e-4"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--instance-type", "ml.g9.huge"], "InvalidArgument: unknown SageMaker training instance type 'ml.g9.huge'"),
        (["--instance-type", "ml.m5.xlarge"], "InvalidArgument: ml.m5.xlarge has no NVIDIA GPU"),
        (["--set", "lora_r=-3"], "InvalidArgument: "),
        (["--set", "no_such_setting=1"], "InvalidArgument: "),
        (
            ["--dataset", "s3://{bucket}/runs/run-x/dataset"],
            "DatasetNotFound: s3://{bucket}/runs/run-x/dataset/manifest.json does not exist",
        ),
        (["--dataset", "s3://someone-elses-bucket/runs/run-x/dataset"], "PermissionDenied: --dataset 's3://someone-elses-bucket/"),
        (["--dataset", "s3://{bucket}/elsewhere"], "PermissionDenied: --dataset 's3://{bucket}/elsewhere': the stack's SageMaker role"),
        (["--out", "adapter/"], "InvalidArgument: --out does not go with --sagemaker"),
    ],
)
def test_bad_input_is_a_named_one_line_error_before_any_job(sagemaker, capsys, change, expected):
    args = ["train", "--sagemaker", "--dataset", sagemaker.dataset, *sagemaker.flags]
    for flag, value in zip(change[::2], change[1::2], strict=True):
        args = args[: args.index(flag)] + args[args.index(flag) + 2 :] if flag in args else args
        args += [flag, value.format(bucket=sagemaker.bucket)]
    assert cli.main(args) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert f"error: {expected.format(bucket=sagemaker.bucket)}" in err and len(err.strip().splitlines()) == 1
    assert sagemaker.created() == []


def test_without_stack_outputs_or_flags_it_says_what_to_give(sagemaker, capsys):
    assert cli.main(["train", "--sagemaker", "--dataset", sagemaker.dataset]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "StackOutputsUnavailable: the Pulumi CLI is not on PATH" in err and "--role-arn, --image-uri and --bucket" in err
    sagemaker.pulumi_cli({"artifact_bucket": sagemaker.bucket})  # a stack deployed before training_job existed
    assert cli.main(["train", "--sagemaker", "--dataset", sagemaker.dataset]) == cli.EXIT_ERROR
    assert "StackOutputsUnavailable: the stack's outputs have no training_job" in capsys.readouterr().err
    assert sagemaker.created() == []


def test_refused_permission_is_a_named_error_and_no_job_exists(sagemaker, capsys):
    sagemaker.recorder.failures[("sagemaker", "CreateTrainingJob")] = {
        "Code": "AccessDeniedException",
        "Message": f"User: arn:aws:iam::123456789012:user/dev is not authorized to perform: iam:PassRole on resource: {ROLE}",
    }
    assert cli.main(["train", "--sagemaker", "--dataset", sagemaker.dataset, *sagemaker.flags]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "error: PermissionDenied: CreateTrainingJob: User: arn:aws:iam::123456789012:user/dev is not authorized" in err
    assert "iam:PassRole" in err and "Traceback" not in err
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_training_here_refuses_the_sagemaker_flags(tmp_path, capsys):
    assert cli.main(["train", "--dataset", str(tmp_path), "--base-model", str(tmp_path), "--out", str(tmp_path), "--wait"]) == 1
    assert "InvalidArgument: --wait only go with --sagemaker" in capsys.readouterr().err
    assert cli.main(["train", "--dataset", str(tmp_path)]) == 1
    assert "needs --base-model and --out" in capsys.readouterr().err


def test_the_sdk_is_imported_by_the_workstation_command_only():
    from tests.test_architecture import ROOT, imported_modules, sources

    users = {
        path.relative_to(ROOT).as_posix()
        for path in sources("pipeline", "lambdas", "infra", "training_image")
        if any(name.startswith("sagemaker") for name in imported_modules(path))
    }
    assert users == {"pipeline/training/adhoc_job.py"}
