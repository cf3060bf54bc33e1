"""GenerateDataset Lambda: PostgreSQL -> s3://<bucket>/runs/<run_id>/dataset/.

Environment: ARTIFACT_BUCKET, DATABASE_SECRET_ARN (an RDS-style secret: host, port, username,
password, dbname; the password never sits in the environment), SEED_PROFILES_URI (the list of
seed-profile twitter_ids, s3://; required: the seed gates score those profiles).
Event: {"run_id": "...", "teachers": [...]?, "split": "0.8,0.1,0.1"?, "min_rows": 1000?}; the optional
fields may also come under "options" (the state machine passes the execution input there).
Errors raised by name for the state machine: DatabaseUnavailable (retried), InsufficientData.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters

from pipeline import contracts, runs
from pipeline.dataset import export, source, split, stage
from pipeline.errors import InvalidArgument

logger = Logger(service="generate-dataset")


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise InvalidArgument(f"environment variable {name} is not set")
    return value


def _database_params() -> source.ConnectionParams:
    secret_arn = _required_env("DATABASE_SECRET_ARN")
    try:
        secret = parameters.get_secret(secret_arn, max_age=300)
    except parameters.exceptions.GetParameterError as exc:
        raise InvalidArgument(f"cannot read the database secret {secret_arn}: {exc}") from None
    return source.ConnectionParams.from_secret(secret)


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    run_id = runs.check_run_id(event.get("run_id"))
    options = event.get("options") or {}
    if not isinstance(options, dict):
        raise InvalidArgument(f"options must be an object, got {type(options).__name__}")
    event = {**options, **event}
    teachers = event.get("teachers")
    seed_ids = split.load_seed_ids(_required_env("SEED_PROFILES_URI"))  # before the database: fail fast
    result = stage.generate_dataset(
        _database_params(),
        f"s3://{_required_env('ARTIFACT_BUCKET')}",
        run_id,
        teachers=export.parse_teachers(teachers) if teachers else source.DEFAULT_TEACHERS,
        fractions=split.SplitFractions.parse(event["split"]) if event.get("split") else None,
        seed_ids=seed_ids,
        min_rows=export.parse_min_rows(event.get("min_rows")),
    )
    prefix = event.get("training_job_prefix") or contracts.TRAINING_JOB_PREFIX
    try:
        result["training_job_name"] = contracts.training_job_name(run_id, prefix)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    logger.info("dataset written", extra={"counts": result["counts"], "rejects": result["rejects"],
                                          "training_job_name": result["training_job_name"]})
    return result
