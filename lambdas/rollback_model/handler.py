"""Rollback Lambda: delete the run's candidate tag; restore the production tag from
models/current.json if a promote was cut off. Never changes the pointer. Idempotent.

Environment: OLLAMA_URL, ARTIFACT_BUCKET, MODEL_NAME?. Event: {"run_id"}.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from lambdas import settings as lambda_settings
from pipeline.serving import lifecycle
from pipeline.serving.ollama import OllamaClient

Settings = lambda_settings.OllamaSettings  # OLLAMA_URL, ARTIFACT_BUCKET, MODEL_NAME
logger = Logger(service="rollback-model")


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    run_id = lambda_settings.run_id(event)
    with OllamaClient(settings.ollama_url) as client:
        result = lifecycle.rollback(client, settings.artifact_root, run_id, settings.serving)
    logger.info("rolled back", extra=result)
    return result
