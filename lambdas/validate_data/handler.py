"""ValidateData Lambda: checks the run's dataset before training is started.

Environment: ARTIFACT_BUCKET, MIN_SEED_PROFILES (the stack's minSeedProfiles; not an execution option). Event: {"run_id": "...", "dataset_uri": "s3://..."?, "min_rows": 1000?} (min_rows may
also come under "options", the execution input).
Returns {valid, problems, counts, class_balance, warnings, dataset_uri}; the state machine fails
the execution with InsufficientData when valid is false.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

from pipeline import contracts, runs
from pipeline.dataset import export, stage
from pipeline.errors import InvalidArgument

logger = Logger(service="validate-data")


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    run_id = runs.check_run_id(event.get("run_id"))
    bucket = os.environ.get("ARTIFACT_BUCKET")
    if not bucket:
        raise InvalidArgument("environment variable ARTIFACT_BUCKET is not set")
    dataset_uri = event.get("dataset_uri") or runs.dataset_uri(f"s3://{bucket}", run_id)
    if not dataset_uri.startswith(f"s3://{bucket}/"):
        raise InvalidArgument(f"dataset_uri must be inside s3://{bucket}/, got {dataset_uri!r}")
    options = event.get("options") if isinstance(event.get("options"), dict) else {}
    min_rows = event.get("min_rows", options.get("min_rows"))
    min_seed_profiles = export.parse_min_rows(os.environ.get("MIN_SEED_PROFILES") or contracts.DEFAULT_MIN_SEED_PROFILES)
    result = stage.validate_data(dataset_uri, export.parse_min_rows(min_rows), min_seed_profiles)
    logger.info("dataset validated", extra={"valid": result["valid"], "problems": result["problems"]})
    return result
