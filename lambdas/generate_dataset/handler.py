"""GenerateDataset Lambda: PostgreSQL -> s3://<bucket>/runs/<run_id>/dataset/.

Environment: ARTIFACT_BUCKET, DATABASE_SECRET_ARN (an RDS-style secret: host, port, username,
password, dbname; the password never sits in the environment), SEED_PROFILES_URI (the list of
seed-profile twitter_ids, s3://; required: the seed gates score those profiles).
Event: {"run_id", "training_job_prefix"?, "teachers"?: [...], "split"?: "0.8,0.1,0.1", "min_rows"?: 1000};
the optional fields may also come under "options" (the state machine passes the execution input there).
Returns the dataset's URIs and counts, and the run's SageMaker training job name.
Errors raised by name for the state machine: DatabaseUnavailable (retried), InsufficientData.
"""

from __future__ import annotations

import dataclasses

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters

from lambdas import settings as lambda_settings
from pipeline import contracts
from pipeline.dataset import generate, source, split
from pipeline.errors import InvalidArgument

logger = Logger(service="generate-dataset")


@dataclasses.dataclass(frozen=True)
class Settings(lambda_settings.ArtifactSettings):
    database_secret_arn: str = lambda_settings.env("DATABASE_SECRET_ARN")
    seed_profiles_uri: str = lambda_settings.env("SEED_PROFILES_URI")


def _database_params(secret_arn: str) -> source.ConnectionParams:
    try:
        secret = parameters.get_secret(secret_arn, max_age=300)
    except parameters.exceptions.GetParameterError as exc:
        raise InvalidArgument(f"cannot read the database secret {secret_arn}: {exc}") from None
    return source.ConnectionParams.from_secret(secret)


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    run_id = lambda_settings.run_id(event)
    event = lambda_settings.with_execution_options(event)
    teachers = event.get("teachers")
    try:
        job_name = contracts.training_job_name(run_id, event.get("training_job_prefix") or contracts.TRAINING_JOB_PREFIX)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    seed_ids = split.load_seed_ids(settings.seed_profiles_uri)  # before the database: fail fast
    result = generate.generate_dataset(
        _database_params(settings.database_secret_arn),
        settings.artifact_root,
        run_id,
        teachers=generate.parse_teachers(teachers) if teachers else source.DEFAULT_TEACHERS,
        fractions=split.SplitFractions.parse(event["split"]) if event.get("split") else None,
        seed_ids=seed_ids,
        min_rows=generate.parse_min_rows(event.get("min_rows")),
    )
    result["training_job_name"] = job_name
    logger.info("dataset written", extra={"counts": result["counts"], "rejects": result["rejects"], "training_job_name": job_name})
    return result
