"""Training jobs under moto that live as SageMaker's do, and a record of the requests made.

moto 5.2.5 answers a training job Completed the moment it is created and does not implement
StopTrainingJob. Real jobs (DescribeTrainingJob, StopTrainingJob in the SageMaker API reference) are
InProgress through SecondaryStatus Starting, Downloading, Training, Uploading, then Completed,
Failed (with a FailureReason) or Stopped; StopTrainingJob makes an InProgress job Stopping, then
Stopped, and refuses a job that has ended (ValidationException). ``JobLifecycle`` plays a scripted
life per describe and implements StopTrainingJob that way; everything else is moto's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobLifecycle:
    """``script``: the DescribeTrainingJob fields of each successive describe (the last one repeats)."""

    script: list[dict[str, Any]] = field(default_factory=list)
    stop_requests: list[str] = field(default_factory=list)
    describes: int = 0

    def install(self, monkeypatch) -> JobLifecycle:
        from moto.core.responses import EmptyResult
        from moto.sagemaker.exceptions import ValidationError
        from moto.sagemaker.models import SageMakerModelBackend
        from moto.sagemaker.responses import SageMakerResponse

        original = SageMakerModelBackend.describe_training_job
        lifecycle = self

        def describe(backend, training_job_name):
            response = dict(original(backend, training_job_name))
            lifecycle.describes += 1
            if lifecycle.script:
                step = lifecycle.script.pop(0) if len(lifecycle.script) > 1 else lifecycle.script[0]
                response.update(step)
            return response

        def stop_training_job(handler):
            name = handler._get_param("TrainingJobName")
            current = lifecycle.script[0] if lifecycle.script else original(handler.sagemaker_backend, name)
            status = current.get("TrainingJobStatus")
            if status != "InProgress":
                raise ValidationError(message=f"The request was rejected because the training job is in status {status}.")
            lifecycle.stop_requests.append(name)
            lifecycle.script = [
                {"TrainingJobStatus": "Stopping", "SecondaryStatus": "Stopping"},
                {"TrainingJobStatus": "Stopped", "SecondaryStatus": "Stopped"},
            ]
            return EmptyResult()

        monkeypatch.setattr(SageMakerModelBackend, "describe_training_job", describe)
        monkeypatch.setattr(SageMakerResponse, "stop_training_job", stop_training_job, raising=False)
        return self


@dataclass
class RequestRecorder:
    """Every request an AWS client sends, by (service, operation), with its parameters as sent."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    failures: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def install(self, monkeypatch) -> RequestRecorder:
        import copy

        import botocore.client
        from botocore.exceptions import ClientError

        original = botocore.client.BaseClient._make_api_call
        recorder = self

        def make_api_call(client, operation_name, api_params):
            service = client.meta.service_model.service_name
            recorder.calls.append((service, operation_name, copy.deepcopy(api_params)))
            error = recorder.failures.get((service, operation_name))
            if error:
                raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation_name)
            return original(client, operation_name, api_params)

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)
        return self

    def sent(self, service: str, operation: str) -> list[dict[str, Any]]:
        return [params for s, o, params in self.calls if (s, o) == (service, operation)]
