"""ValidateData Lambda: checks the run's dataset before training is started.

Environment: ARTIFACT_BUCKET, MIN_SEED_PROFILES? (the stack's minSeedProfiles; never an execution
option), MIN_ROWS? (the stack's minRows). Event: {"run_id", "dataset_uri"?, "min_rows"?: 1000, at
least MIN_ROWS} (min_rows may also come under "options", the execution input). The holdout must
hold at least pipeline.contracts.MIN_HOLDOUT_PROFILES rows, whatever the input says.
Returns {valid, problems, counts, class_balance, warnings, dataset_uri}; the state machine fails
the execution with InsufficientData when valid is false.
"""

from __future__ import annotations

import dataclasses

from aws_lambda_powertools import Logger

from lambdas import settings as lambda_settings
from pipeline import contracts, runs
from pipeline.dataset import generate, validate
from pipeline.errors import InvalidArgument

logger = Logger(service="validate-data")


@dataclasses.dataclass(frozen=True)
class Settings(lambda_settings.ArtifactSettings):
    min_seed_profiles: int = lambda_settings.env("MIN_SEED_PROFILES", contracts.DEFAULT_MIN_SEED_PROFILES, lambda_settings.seed_count)
    min_rows: int = lambda_settings.env("MIN_ROWS", contracts.DEFAULT_MIN_ROWS, lambda_settings.positive_int)


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    run_id = lambda_settings.run_id(event)
    event = lambda_settings.with_execution_options(event)
    dataset_uri = lambda_settings.optional_text(event, "dataset_uri") or runs.dataset_uri(settings.artifact_root, run_id)
    if not dataset_uri.startswith(f"{settings.artifact_root}/"):
        raise InvalidArgument(f"dataset_uri must be inside {settings.artifact_root}/, got {dataset_uri!r}")
    min_rows = generate.parse_min_rows(event.get("min_rows"), floor=settings.min_rows, default=settings.min_rows)
    result = validate.validate_data(dataset_uri, min_rows, settings.min_seed_profiles)
    logger.info("dataset validated", extra={"valid": result["valid"], "problems": result["problems"]})
    return result
