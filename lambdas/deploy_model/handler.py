"""DeployModel Lambda (in the Ollama host's VPC): runs/<run_id>/model.gguf -> mistral-researcher:<run_id>.

Environment: OLLAMA_URL (the host's private address), ARTIFACT_BUCKET, MODEL_NAME?, PRODUCTION_TAG?.
Event: {"run_id", "gguf_uri"?}. Errors by name: OllamaUnavailable (retried), OllamaError, StorageError.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

from pipeline import runs
from pipeline.serving import stage
from pipeline.serving.ollama import OllamaClient

logger = Logger(service="deploy-model")


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = stage.ServingSettings.from_env(os.environ)
    run_id = runs.check_run_id(event.get("run_id"))
    with OllamaClient(settings.ollama_url) as client:
        result = stage.deploy_model(client, settings.artifact_root, run_id, event.get("gguf_uri"), settings.serving)
    logger.info("candidate created", extra=result)
    return result
