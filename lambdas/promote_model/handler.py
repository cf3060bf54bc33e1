"""PromoteModel Lambda: copy the validated candidate to the production tag, then write
models/current.json. Refuses a run whose report did not pass (PromotionError).

Environment: OLLAMA_URL, ARTIFACT_BUCKET, MODEL_NAME?, PRODUCTION_TAG?. Event: {"run_id", "adapter_uri"?}.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

from pipeline import runs
from pipeline.serving import stage
from pipeline.serving.ollama import OllamaClient

logger = Logger(service="promote-model")


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = stage.ServingSettings.from_env(os.environ)
    run_id = runs.check_run_id(event.get("run_id"))
    with OllamaClient(settings.ollama_url) as client:
        result = stage.promote_model(client, settings.artifact_root, run_id, event.get("adapter_uri"), settings.serving)
    logger.info("promoted", extra=result)
    return result
