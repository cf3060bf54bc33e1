"""DeployModel Lambda (in the Ollama host's VPC): runs/<run_id>/model.gguf -> mistral-researcher:<run_id>-<hash>.

Environment: OLLAMA_URL (the host's private address), ARTIFACT_BUCKET, MODEL_NAME?.
Event: {"run_id", "gguf_uri"?}. Errors by name: OllamaUnavailable (retried), OllamaError, StorageError.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from lambdas import settings as lambda_settings
from pipeline import runs
from pipeline.serving import lifecycle
from pipeline.serving.ollama import OllamaClient

Settings = lambda_settings.OllamaSettings  # OLLAMA_URL, ARTIFACT_BUCKET, MODEL_NAME
logger = Logger(service="deploy-model")


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    run_id = lambda_settings.run_id(event)
    gguf_uri = lambda_settings.optional_text(event, "gguf_uri") or runs.gguf_uri(settings.artifact_root, run_id)
    with OllamaClient(settings.ollama_url) as client:
        result = lifecycle.deploy(client, gguf_uri, run_id, settings.serving)
    logger.info("candidate created", extra=result)
    return result
