"""The one CreateTrainingJob specification: the state machine's StartTraining and `pipeline train
--sagemaker` both build their request here, so a job started by hand from a workstation is the job
the weekly pipeline would start (image, role, channels, hyperparameters, checkpoints, stopping
condition, metric definitions), differing only in what names the job and its data.

Standard library only: the Pulumi program imports it (infra/training.py fills StartTraining's
Parameters with ``state_machine_parameters``), and so does the workstation command.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pipeline import contracts
from pipeline.errors import InvalidArgument

# Channels the training container reads (pipeline/training/sagemaker.py, ContainerPaths).
TRAINING_CHANNEL = "training"
BASE_MODEL_CHANNEL = "base_model"
# The trainer plans its steps to the job's MaxRuntime (trainer.TimeBudget): the state machine and an
# ad-hoc job both hand it over under this name.
TIME_BUDGET_HYPERPARAMETER = "time_budget_seconds"
RUN_ID_TAG = "run_id"

# The stack's defaults (Pulumi.yaml's training settings; tests/pipeline/training/test_job_spec.py
# checks that they agree), for a job started with flags instead of the stack's outputs.
DEFAULT_INSTANCE_TYPE = "ml.g4dn.xlarge"
DEFAULT_VOLUME_SIZE_GB = 50
DEFAULT_MAX_RUNTIME_SECONDS = 7200
DEFAULT_MAX_WAIT_SECONDS = 14400


@dataclass(frozen=True)
class JobSettings:
    """What a stack decides for every training job: its ``training_job`` output."""

    role_arn: str
    image_uri: str
    bucket: str
    base_model_uri: str
    instance_type: str = DEFAULT_INSTANCE_TYPE
    volume_size_gb: int = DEFAULT_VOLUME_SIZE_GB
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_SECONDS
    max_wait_seconds: int = DEFAULT_MAX_WAIT_SECONDS
    job_prefix: str = contracts.TRAINING_JOB_PREFIX
    hyperparameters: Mapping[str, str] = field(default_factory=dict)  # overrides of the seed's settings, as strings
    spot: bool = True  # managed spot training, resumed from the checkpoints when interrupted

    def as_output(self) -> dict[str, Any]:
        """The stack output's JSON form."""
        return {**asdict(self), "hyperparameters": dict(self.hyperparameters)}

    @classmethod
    def from_output(cls, values: object) -> JobSettings:
        """A ``training_job`` stack output (JSON) back into settings; a wrong shape is a named error."""
        if not isinstance(values, Mapping):
            raise InvalidArgument(f"the stack's training_job output must be a JSON object, got {type(values).__name__}")
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(names))
        missing = sorted(name for name in ("role_arn", "image_uri", "bucket", "base_model_uri") if not values.get(name))
        if unknown or missing:
            raise InvalidArgument(f"the stack's training_job output: unknown fields {unknown}, missing {missing}")
        settings = cls(**dict(values))
        settings.check()
        return settings

    def check(self) -> None:
        """Types and ranges a CreateTrainingJob request needs; a named error, not a ValidationException later."""
        for name in ("role_arn", "image_uri", "bucket", "base_model_uri", "instance_type", "job_prefix"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidArgument(f"training job setting {name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("volume_size_gb", "max_runtime_seconds", "max_wait_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidArgument(f"training job setting {name} must be a positive integer, got {value!r}")
        if not isinstance(self.spot, bool):
            raise InvalidArgument(f"training job setting spot must be true or false, got {self.spot!r}")
        if self.spot and self.max_wait_seconds < self.max_runtime_seconds:
            raise InvalidArgument(
                f"max_wait_seconds ({self.max_wait_seconds}) must be at least max_runtime_seconds "
                f"({self.max_runtime_seconds}) for spot training"
            )
        if not contracts.TRAINING_JOB_PREFIX_PATTERN.fullmatch(self.job_prefix):
            pattern = contracts.TRAINING_JOB_PREFIX_PATTERN.pattern
            raise InvalidArgument(f"training job prefix must match {pattern}, got {self.job_prefix!r}")
        if not isinstance(self.hyperparameters, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.hyperparameters.items()
        ):
            raise InvalidArgument("training job hyperparameters must map names to strings, as SageMaker passes them")
        if not re.fullmatch(r"s3://[a-z0-9.-]{3,63}/.*", self.base_model_uri):
            raise InvalidArgument(f"base_model_uri must be s3://<bucket>/<prefix>/, got {self.base_model_uri!r}")


@dataclass(frozen=True)
class FromExecution:
    """A value known only when the execution runs: an ASL path (``$.run_id``) or intrinsic function,
    written under the parameter's name with ``.$`` appended."""

    expression: str


Value = str | FromExecution


def _format(template: str, value: Value) -> Value:
    """``template`` with its one ``{}`` filled: now, or by the execution (States.Format)."""
    if isinstance(value, FromExecution):
        # Bucket names and the run layout hold no quote, brace or backslash: the template is literal.
        if re.search(r"['\\{}]", template.replace("{}", "", 1)):
            raise ValueError(f"cannot hand {template!r} to States.Format")
        return FromExecution(f"States.Format('{template}', {value.expression})")
    return template.format(value)


def output_path(bucket: str, run_id: Value) -> Value:
    """Where SageMaker writes <job name>/output/model/, the adapter (the run layout's training/)."""
    return _format(f"s3://{bucket}/{contracts.RUNS_DIR}/{{}}/{contracts.TRAINING_DIR}", run_id)


def checkpoint_uri(bucket: str, run_id: Value) -> Value:
    return _format(f"s3://{bucket}/{contracts.CHECKPOINTS_DIR}/{{}}", run_id)


def adapter_uri(bucket: str, run_id: str, job_name: str) -> str:
    """The adapter a completed job leaves (OutputDataConfig without compression: plain files)."""
    return f"{output_path(bucket, run_id)}/{job_name}/output/model/"


def _channel(name: str, uri: Value) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}},
    }


def create_training_job_request(settings: JobSettings, *, job_name: Value, dataset_uri: Value, run_id: Value) -> dict[str, Any]:
    """SageMaker's CreateTrainingJob request (botocore's member names) for one job.

    ``dataset_uri`` is the dataset stage's output (``.../runs/<run>/dataset``, no trailing slash);
    ``run_id`` places the output and checkpoints in the run layout and tags the job."""
    settings.check()
    stopping: dict[str, Any] = {"MaxRuntimeInSeconds": settings.max_runtime_seconds}
    if settings.spot:  # CreateTrainingJob refuses MaxWaitTimeInSeconds without spot
        stopping["MaxWaitTimeInSeconds"] = settings.max_wait_seconds
    return {
        "TrainingJobName": job_name,
        "RoleArn": settings.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": settings.image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": contracts.metric_definitions(),
        },
        "HyperParameters": {TIME_BUDGET_HYPERPARAMETER: str(settings.max_runtime_seconds), **settings.hyperparameters},
        "InputDataConfig": [
            _channel(TRAINING_CHANNEL, _format("{}/", dataset_uri)),
            _channel(BASE_MODEL_CHANNEL, settings.base_model_uri),
        ],
        # No compression: the adapter lands as files ConvertToGGUF reads directly.
        "OutputDataConfig": {"S3OutputPath": output_path(settings.bucket, run_id), "CompressionType": "NONE"},
        "ResourceConfig": {"InstanceType": settings.instance_type, "InstanceCount": 1, "VolumeSizeInGB": settings.volume_size_gb},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": settings.spot,
        "CheckpointConfig": {"S3Uri": checkpoint_uri(settings.bucket, run_id)},
        # SageMaker moves the channels and output itself; the container reaches nothing.
        "EnableNetworkIsolation": True,
        "Tags": [{"Key": RUN_ID_TAG, "Value": run_id}],
    }


def _as_asl(value: Any) -> Any:
    """A request with FromExecution values -> ASL Parameters (``"Name.$": expression``)."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if isinstance(item, FromExecution):
                result[f"{key}.$"] = item.expression
            else:
                result[key] = _as_asl(item)
        return result
    if isinstance(value, list):
        if any(isinstance(item, FromExecution) for item in value):
            raise ValueError("a list item cannot come from the execution in ASL Parameters")
        return [_as_asl(item) for item in value]
    return value


def state_machine_parameters(settings: JobSettings) -> dict[str, Any]:
    """StartTraining's Parameters: the request, with the job name and dataset that GenerateDataset
    chose and the execution's run id filled in by Step Functions."""
    request = create_training_job_request(
        settings,
        job_name=FromExecution("$.dataset.training_job_name"),
        dataset_uri=FromExecution("$.dataset.dataset_uri"),
        run_id=FromExecution("$.run_id"),
    )
    return _as_asl(request)


def describe(request: Mapping[str, Any]) -> str:
    """One line of the request for a person: what runs where, for how long."""
    resources, stopping = request["ResourceConfig"], request["StoppingCondition"]
    spot = "spot" if request.get("EnableManagedSpotTraining") else "on-demand"
    return (
        f"{resources['InstanceType']} ({spot}), {resources['VolumeSizeInGB']} GB, at most "
        f"{stopping['MaxRuntimeInSeconds'] / 3600:g} h training; hyperparameters {json.dumps(request['HyperParameters'], sort_keys=True)}"
    )
