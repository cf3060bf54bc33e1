"""ValidateModel Lambda (in the Ollama host's VPC): the quality gates on the run's candidate tag.

Environment: OLLAMA_URL, ARTIFACT_BUCKET, QUALITY_GATES? (JSON thresholds), VALIDATION_CONCURRENCY?,
VALIDATION_MAX_HOLDOUT?, MODEL_NAME?. Event: {"run_id"}.
Returns {passed, failed_gates, metrics, report_uri, ...}: a failed gate is a result, not an error
(the state machine's Choice sends it to Rollback).
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

from pipeline import runs
from pipeline.serving import stage
from pipeline.serving.ollama import OllamaClient

logger = Logger(service="validate-model")


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = stage.ServingSettings.from_env(os.environ)
    run_id = runs.check_run_id(event.get("run_id"))
    with OllamaClient(settings.ollama_url) as client:
        result = stage.validate_model(client, settings.artifact_root, run_id, gates=settings.gates,
                                      concurrency=settings.concurrency, max_holdout=settings.max_holdout,
                                      config=settings.serving)
    logger.info("validation finished", extra={"passed": result["passed"], "failed_gates": result["failed_gates"]})
    return result
