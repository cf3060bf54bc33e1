"""Rollback Lambda: delete the run's candidate tag; restore the production tag from
models/current.json if a promote was cut off. Never changes the pointer. Idempotent.

Environment: OLLAMA_URL, ARTIFACT_BUCKET, MODEL_NAME?, PRODUCTION_TAG?. Event: {"run_id"}.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

from pipeline import runs
from pipeline.serving import stage
from pipeline.serving.ollama import OllamaClient

logger = Logger(service="rollback-model")


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = stage.ServingSettings.from_env(os.environ)
    run_id = runs.check_run_id(event.get("run_id"))
    with OllamaClient(settings.ollama_url) as client:
        result = stage.rollback_model(client, settings.artifact_root, run_id, settings.serving)
    logger.info("rolled back", extra=result)
    return result
