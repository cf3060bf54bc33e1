"""`pipeline train --sagemaker`: one SageMaker training job from a workstation, on the stack's own
image, role and data, built from the state machine's job specification (job_spec.py) and started
with the SageMaker Python SDK (sagemaker-core, requirements/sagemaker-sdk.txt, imported only here).

Everything that can be wrong is checked before the job exists: the stack's settings, the instance
type (against botocore's SageMaker model), the hyperparameters (the container's own parser), the
dataset (its manifest, in the one place the stack's role may read). The job is named
``<prefix>-adhoc-<UTC time>-<random>-<hash>`` and tagged with its run id, like the pipeline's jobs;
its adapter lands in the run layout (``runs/<run id>/training/<job>/output/model/``), ready for
`pipeline convert --adapter` and `pipeline validate`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pipeline import contracts, runs, storage
from pipeline.errors import InvalidArgument, PipelineError, StorageError
from pipeline.training import hyperparameters, job_spec

STACK_OUTPUT = "training_job"  # the stack's export (__main__.py): job_spec.JobSettings as JSON
RUN_ID_PREFIX = "adhoc"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")
DEFAULT_POLL_SECONDS = 30.0
# Metrics shown on the status line while a job runs (what SageMaker also extracts from the logs).
SHOWN_METRICS = ("epoch", "train_loss", "eval_loss")


class StackOutputsUnavailable(PipelineError):
    """Neither the stack's outputs nor the flags name the role, image and bucket a job needs."""


class DatasetNotFound(PipelineError):
    """--dataset names no dataset stage output (no manifest.json there)."""


class PermissionDenied(PipelineError):
    """These credentials, or the stack's SageMaker role, may not do what the job needs."""


class TrainingJobRefused(PipelineError):
    """SageMaker refused to create the job (a limit, a name in use, a malformed value)."""


class TrainingJobFailed(PipelineError):
    """The job ended Failed; its FailureReason says why."""


class TrainingJobStopped(PipelineError):
    """The job ended Stopped (by a person, or at its maximum runtime)."""


class LeftRunning(PipelineError):
    """Ctrl-C, and the job was left running (it goes on, and bills, until it ends)."""


@dataclass(frozen=True)
class Overrides:
    """What the command line changes of the stack's settings."""

    role_arn: str | None = None
    image_uri: str | None = None
    bucket: str | None = None
    instance_type: str | None = None
    spot: bool | None = None
    hyperparameters: Mapping[str, str] | None = None


@dataclass(frozen=True)
class PlannedJob:
    run_id: str
    job_name: str
    request: dict[str, Any]
    adapter_uri: str
    region: str | None = None

    @property
    def console_url(self) -> str:
        region = self.region or "us-east-1"
        return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/jobs/{self.job_name}"


# --- the stack's settings --------------------------------------------------------------------------


def read_stack_outputs(stack: str | None, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> dict[str, Any] | None:
    """`pulumi stack output --json` of the current (or named) stack; None where the Pulumi CLI is absent."""
    if shutil.which("pulumi") is None:
        return None
    command = ["pulumi", "stack", "output", "--json", *(["--stack", stack] if stack else [])]
    try:
        done = run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackOutputsUnavailable(f"`{' '.join(command)}` did not answer: {exc}") from None
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise StackOutputsUnavailable(f"`{' '.join(command)}` failed: {reason[-1] if reason else f'exit {done.returncode}'}")
    try:
        outputs = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise StackOutputsUnavailable(f"`{' '.join(command)}` did not print JSON: {exc}") from None
    return outputs if isinstance(outputs, dict) else None


def resolve_settings(outputs: Mapping[str, Any] | None, overrides: Overrides) -> job_spec.JobSettings:
    """The stack's settings with the command line's changes; a named error when neither names a job."""
    if outputs is not None and STACK_OUTPUT in outputs:
        settings = job_spec.JobSettings.from_output(outputs[STACK_OUTPUT])
    elif overrides.role_arn and overrides.image_uri and overrides.bucket:
        # The stack's defaults for everything else (job_spec's, which match Pulumi.yaml's).
        settings = job_spec.JobSettings(
            role_arn=overrides.role_arn,
            image_uri=overrides.image_uri,
            bucket=overrides.bucket,
            base_model_uri=f"s3://{overrides.bucket}/{contracts.BASE_MODEL_PREFIX}",
        )
    else:
        where = "the stack's outputs have no training_job" if outputs is not None else "the Pulumi CLI is not on PATH"
        raise StackOutputsUnavailable(
            f"{where}: run this where `pulumi stack output --json` shows the deployed stack (--stack NAME), "
            "or give --role-arn, --image-uri and --bucket (the stack's training_role_arn, training_image_uri, artifact_bucket)"
        )
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("role_arn", overrides.role_arn),
            ("image_uri", overrides.image_uri),
            ("bucket", overrides.bucket),
            ("instance_type", overrides.instance_type),
            ("spot", overrides.spot),
        )
        if value is not None
    }
    if overrides.hyperparameters:
        changes["hyperparameters"] = {**settings.hyperparameters, **overrides.hyperparameters}
    settings = replace(settings, **changes)
    settings.check()
    check_instance_type(settings.instance_type)
    hyperparameters.parse(dict(settings.hyperparameters))  # the training container's own check
    return settings


def training_instance_types() -> tuple[str, ...]:
    """Every instance type CreateTrainingJob accepts, from botocore's SageMaker service model."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return tuple(model.shape_for("TrainingInstanceType").enum)


def check_instance_type(instance_type: str) -> None:
    if instance_type not in training_instance_types():
        raise InvalidArgument(f"unknown SageMaker training instance type {instance_type!r} (e.g. ml.g4dn.xlarge, ml.g5.xlarge)")
    if not contracts.is_training_gpu_instance(instance_type):
        families = ", ".join(contracts.TRAINING_INSTANCE_FAMILIES)
        raise InvalidArgument(f"{instance_type} has no NVIDIA GPU the trainer can use: choose one of {families}")


# --- the dataset -------------------------------------------------------------------------------------


def check_dataset(dataset_uri: str, settings: job_spec.JobSettings) -> str:
    """The dataset stage's output the job may read: ``s3://<stack bucket>/runs/<run>/dataset``, with
    its manifest. Returns the URI without a trailing slash."""
    uri = dataset_uri.rstrip("/")
    pattern = rf"s3://{re.escape(settings.bucket)}/{contracts.RUNS_DIR}/[A-Za-z0-9_-]{{1,80}}/{contracts.DATASET_DIR}"
    if not re.fullmatch(pattern, uri):
        raise PermissionDenied(
            f"--dataset {dataset_uri!r}: the stack's SageMaker role reads datasets only at "
            f"s3://{settings.bucket}/{contracts.RUNS_DIR}/<run_id>/{contracts.DATASET_DIR}/ (the dataset stage's output)"
        )
    manifest = f"{uri}/{contracts.MANIFEST_NAME}"
    try:
        present = storage.exists(manifest)
    except StorageError as exc:
        if "403" in str(exc) or "AccessDenied" in str(exc) or "Forbidden" in str(exc):
            raise PermissionDenied(f"these credentials may not read {manifest}: {exc}") from None
        raise
    if not present:
        raise DatasetNotFound(f"{manifest} does not exist: --dataset must name a dataset stage's output (`pipeline dataset export`)")
    try:
        declared = json.loads(storage.read_bytes(manifest)).get("format")
    except (ValueError, AttributeError):
        declared = None
    if declared != contracts.MANIFEST_FORMAT:
        raise DatasetNotFound(f"{manifest} is not a {contracts.MANIFEST_FORMAT} manifest (format {declared!r})")
    return uri


# --- the job ---------------------------------------------------------------------------------------


def plan(settings: job_spec.JobSettings, dataset_uri: str, region: str | None = None, run_id: str | None = None) -> PlannedJob:
    run_id = run_id or runs.new_run_id(RUN_ID_PREFIX)
    job_name = contracts.training_job_name(run_id, settings.job_prefix)
    request = job_spec.create_training_job_request(settings, job_name=job_name, dataset_uri=dataset_uri, run_id=run_id)
    return PlannedJob(run_id, job_name, request, job_spec.adapter_uri(settings.bucket, run_id, job_name), region)


def _client_error(exc: Exception) -> PipelineError:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return TrainingJobRefused(f"CreateTrainingJob failed: {exc}")
    error = exc.response.get("Error", {})
    code, message = error.get("Code", ""), error.get("Message", str(exc))
    if code in {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"} or "not authorized" in message:
        return PermissionDenied(f"CreateTrainingJob: {message} (these credentials need sagemaker:CreateTrainingJob and iam:PassRole)")
    return TrainingJobRefused(f"CreateTrainingJob: {code}: {message}")


def start(job: PlannedJob, session=None):
    """Creates the job with the SDK (sagemaker.core.resources.TrainingJob); returns the SDK's object."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
    from sagemaker.core.resources import TrainingJob
    from sagemaker.core.utils.code_injection.codec import transform

    session = session or boto3.Session()
    # The SDK takes CreateTrainingJob's members in snake_case: transform() is its own mapping.
    arguments = transform(job.request, "CreateTrainingJobRequest")
    try:
        return TrainingJob.create(**arguments, session=session, region=session.region_name)
    except (ClientError, BotoCoreError) as exc:
        raise _client_error(exc) from None


@dataclass
class Followed:
    status: str
    secondary_status: str
    failure_reason: str | None
    metrics: dict[str, float]


def _ask_to_stop(job_name: str) -> bool:
    try:
        answer = input(f"\nstop training job {job_name}? [y/N] ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in {"y", "yes"}


def follow(
    training_job,
    *,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    progress: bool = True,
    ask_to_stop: Callable[[str], bool] = _ask_to_stop,
    sleep: Callable[[float], None] | None = None,
) -> Followed:
    """Streams the job's log lines and its status until it ends; the status line carries its latest
    metrics (read with the job's own MetricDefinitions). Ctrl-C asks whether to stop the job."""
    from sagemaker.core.utils.logs import MultiLogStreamHandler
    from tqdm import tqdm

    name = training_job.training_job_name
    regexes = {d["Name"]: re.compile(d["Regex"]) for d in contracts.metric_definitions()}
    metrics: dict[str, float] = {}
    logs = MultiLogStreamHandler(log_group_name=LOG_GROUP, log_stream_name_prefix=name, expected_stream_count=1)
    stop_requested = False
    with tqdm(total=None, bar_format="{desc} [{elapsed}]", disable=not progress, file=sys.stderr, leave=False) as bar:

        def show(status: str, secondary: str) -> None:
            figures = " ".join(f"{key} {metrics[key]:.4g}" for key in SHOWN_METRICS if key in metrics)
            bar.set_description_str(f"{name}: {status} ({secondary}){' ' + figures if figures else ''}")

        while True:
            try:
                training_job.refresh()
                if logs.ready():
                    for _, event in logs.get_latest_log_events():
                        line = event["message"].rstrip("\n")
                        tqdm.write(line, file=sys.stdout)
                        for metric, regex in regexes.items():
                            match = regex.search(line)
                            if match:
                                metrics[metric] = float(match.group(1))
                status, secondary = str(training_job.training_job_status), str(training_job.secondary_status)
                show(status, secondary)
                if status in TERMINAL_STATUSES:
                    reason = training_job.failure_reason
                    return Followed(status, secondary, reason if isinstance(reason, str) else None, metrics)
                (sleep or time.sleep)(poll_seconds)
            except KeyboardInterrupt:
                if stop_requested:
                    raise LeftRunning(f"{name} is stopping; stopped following it") from None
                if not ask_to_stop(name):
                    raise LeftRunning(f"{name} goes on running (and billing) until it ends; stopped following it") from None
                training_job.stop()
                stop_requested = True
                tqdm.write(f"stop requested: {name} saves a checkpoint and ends as Stopped", file=sys.stderr)


def final_metrics(training_job) -> dict[str, float]:
    """What SageMaker extracted from the logs with the MetricDefinitions (FinalMetricDataList)."""
    found = training_job.final_metric_data_list
    if not isinstance(found, list):
        return {}
    return {entry.metric_name: entry.value for entry in found if isinstance(getattr(entry, "value", None), int | float)}


def outcome(job: PlannedJob, followed: Followed) -> None:
    """Raises the named error of a job that did not complete."""
    if followed.status == "Failed":
        raise TrainingJobFailed(f"{job.job_name}: {followed.failure_reason or 'no reason given'}")
    if followed.status == "Stopped":
        adapter = f"{job.adapter_uri}adapter_config.json"
        left = f"; it left an adapter at {job.adapter_uri}" if storage.exists(adapter) else "; it left no adapter"
        raise TrainingJobStopped(f"{job.job_name} stopped ({followed.secondary_status}){left}")
