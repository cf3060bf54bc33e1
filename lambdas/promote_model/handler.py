"""PromoteModel Lambda: copy the validated candidate to the production tag, then write
models/current.json. Refuses a run whose report did not pass (PromotionError).

Environment: OLLAMA_URL, ARTIFACT_BUCKET, MODEL_NAME?. Event: {"run_id", "adapter_uri"?}.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from lambdas import settings as lambda_settings
from pipeline.serving import lifecycle
from pipeline.serving.ollama import OllamaClient

Settings = lambda_settings.OllamaSettings  # OLLAMA_URL, ARTIFACT_BUCKET, MODEL_NAME
logger = Logger(service="promote-model")


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    run_id = lambda_settings.run_id(event)
    with OllamaClient(settings.ollama_url) as client:
        result = lifecycle.promote_run(
            client, settings.artifact_root, run_id, lambda_settings.optional_text(event, "adapter_uri"), settings.serving
        )
    logger.info("promoted", extra=result)
    return result
