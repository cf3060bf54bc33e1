"""ValidateModel Lambda (in the Ollama host's VPC): the quality gates on the run's candidate tag.

Environment: OLLAMA_URL, ARTIFACT_BUCKET, MODEL_NAME?, QUALITY_GATES? (JSON thresholds),
VALIDATION_CONCURRENCY?, SHADOW_DROP_ALERT? (default 0.05). Event: {"run_id"}.
With a model in production it also scores GenerateDataset's fresh profiles with it (the shadow
comparison with the teachers, runs/<run_id>/shadow/, a line of the run history).
Returns {passed, failed_gates, metrics, report_uri, ...}: a failed gate is a result, not an error
(the state machine's Choice sends it to Rollback).
"""

from __future__ import annotations

import dataclasses

from aws_lambda_powertools import Logger

from lambdas import settings as lambda_settings
from pipeline.evaluation import evaluate
from pipeline.evaluation.gates import QualityGates
from pipeline.serving.ollama import OllamaClient

logger = Logger(service="validate-model")


@dataclasses.dataclass(frozen=True)
class Settings(lambda_settings.OllamaSettings):
    gates: QualityGates = lambda_settings.env(
        "QUALITY_GATES", QualityGates(), lambda text: QualityGates.from_mapping(lambda_settings.json_object(text))
    )
    concurrency: int = lambda_settings.env("VALIDATION_CONCURRENCY", 4, lambda_settings.positive_int)
    # Phase 4's shadow: alert when production's Pearson with the teachers falls more than this.
    shadow_drop_alert: float = lambda_settings.env("SHADOW_DROP_ALERT", 0.05, float)


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    run_id = lambda_settings.run_id(event)
    with OllamaClient(settings.ollama_url) as client:
        result = evaluate.validate_model(
            client,
            settings.artifact_root,
            run_id,
            gates=settings.gates,
            concurrency=settings.concurrency,
            config=settings.serving,
            shadow_drop_alert=settings.shadow_drop_alert,
        )
    logger.info("validation finished", extra={"passed": result["passed"], "failed_gates": result["failed_gates"]})
    return result
