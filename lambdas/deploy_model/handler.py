"""DeployModel Lambda (in the Ollama host's VPC): runs/<run_id>/model.gguf -> mistral-researcher:<run_id>-<hash>.

Environment: OLLAMA_URL (the host's private address), ARTIFACT_BUCKET, MODEL_NAME?, HOST_INSTANCE_ID?
(the host on demand: woken first - started when stopped or stopping - and waited for up to
HOST_WAKE_WAIT_SECONDS, default 60).
Event: {"run_id", "gguf_uri"?}. Errors by name: HostStarting and OllamaUnavailable (retried),
HostCapacityUnavailable (EC2 has no capacity now: retried for longer), HostUnavailable, OllamaError,
StorageError.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from lambdas import settings as lambda_settings
from pipeline import runs
from pipeline.serving import host, lifecycle
from pipeline.serving.ollama import OllamaClient

Settings = lambda_settings.HostOnDemandSettings  # OLLAMA_URL, ARTIFACT_BUCKET, MODEL_NAME, HOST_INSTANCE_ID
logger = Logger(service="deploy-model")


def _wake(settings: Settings) -> None:
    """The host is woken here, right before its first request, not before the conversion: a host
    started earlier sat idle through ConvertToGGUF and could stop itself before it was asked."""
    with host.on_demand(settings.host_instance_id, settings.ollama_url, wait_s=settings.host_wake_wait_s) as wake:
        if wake() is host.HostStatus.STARTING:
            raise host.HostStarting(f"the Ollama host {settings.host_instance_id} is starting; Ollama does not answer yet")


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    run_id = lambda_settings.run_id(event)
    gguf_uri = lambda_settings.optional_text(event, "gguf_uri") or runs.gguf_uri(settings.artifact_root, run_id)
    if settings.host_instance_id:
        _wake(settings)
    with OllamaClient(settings.ollama_url) as client:
        result = lifecycle.deploy(client, gguf_uri, run_id, settings.serving)
    logger.info("candidate created", extra=result)
    return result
