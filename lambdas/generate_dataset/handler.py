"""GenerateDataset Lambda: PostgreSQL -> s3://<bucket>/runs/<run_id>/dataset/.

Environment: ARTIFACT_BUCKET, DATABASE_SECRET_ARN (an RDS-style secret: host, port, username,
password, dbname; the password never sits in the environment), SEED_PROFILES_URI (the list of
seed-profile twitter_ids, s3://; required: the seed gates score those profiles).
MIN_ROWS (the stack's minRows, default 1000: the least an execution may ask for), DATABASE_SSLMODE
(the stack's databaseSslMode, default verify-full against pipeline/dataset/rds-ca-bundle.pem).
Event: {"run_id", "training_job_prefix"?, "teachers"?: [...], "min_rows"?: 1000 (at least MIN_ROWS)};
the optional fields may also come under "options" (the state machine passes the execution input there).
The split shares are not an option: the holdout the gates read is the same for every run.
Returns the dataset's URIs and counts, and the run's SageMaker training job name. With a model in
production it also snapshots the shadow comparison's fresh profiles (first scored by a teacher after
production's dataset) into runs/<run_id>/shadow/fresh.json, which ValidateModel scores.
Errors raised by name for the state machine: DatabaseUnavailable (retried), InsufficientData,
SourceSchemaError, ExportWorkerFailed (a process of the export killed, e.g. out of memory),
AwsApiUnreachable (no route from the subnet to Secrets Manager: a NAT or createVpcEndpoints).
"""

from __future__ import annotations

import dataclasses
import functools

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters

from lambdas import settings as lambda_settings
from pipeline import aws_clients, contracts
from pipeline.dataset import fresh, generate, source, split
from pipeline.errors import InvalidArgument

logger = Logger(service="generate-dataset")


@dataclasses.dataclass(frozen=True)
class Settings(lambda_settings.ArtifactSettings):
    database_secret_arn: str = lambda_settings.env("DATABASE_SECRET_ARN")
    seed_profiles_uri: str = lambda_settings.env("SEED_PROFILES_URI")
    min_rows: int = lambda_settings.env("MIN_ROWS", contracts.DEFAULT_MIN_ROWS, lambda_settings.positive_int)
    database_ssl_mode: str = lambda_settings.env("DATABASE_SSLMODE", source.DEFAULT_SSL_MODE, source.check_ssl_mode)


@functools.cache
def _secrets() -> parameters.SecretsProvider:
    # Bounded connects: from a subnet without a route to Secrets Manager, a named error in seconds.
    return parameters.SecretsProvider(boto_config=aws_clients.client_config())


def _database_params(settings: Settings) -> source.ConnectionParams:
    try:
        secret = _secrets().get(settings.database_secret_arn, max_age=300)
    except parameters.exceptions.GetParameterError as exc:
        cause = aws_clients.unreachable_cause(exc)
        if cause is not None:
            raise aws_clients.unreachable("secretsmanager", cause) from None
        raise InvalidArgument(f"cannot read the database secret {settings.database_secret_arn}: {exc}") from None
    if not isinstance(secret, str):  # a SecretBinary: the secret must be RDS-style JSON text
        raise InvalidArgument(f"the database secret {settings.database_secret_arn} holds no SecretString (RDS-style JSON)")
    # TLS verified against the RDS CA bundle shipped with the code, unless the stack relaxed it.
    return source.ConnectionParams.from_secret(secret, sslmode=settings.database_ssl_mode)


@logger.inject_lambda_context
def handler(event: dict, context) -> dict:
    settings = lambda_settings.from_environment(Settings)
    run_id = lambda_settings.run_id(event)
    event = lambda_settings.with_execution_options(event)
    if "split" in event:
        raise InvalidArgument(
            "split is not an execution option: the holdout the gates read is fixed for every run (pipeline export --split, locally)"
        )
    teachers = event.get("teachers")
    try:
        job_name = contracts.training_job_name(run_id, event.get("training_job_prefix") or contracts.TRAINING_JOB_PREFIX)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    min_rows = generate.parse_min_rows(event.get("min_rows"), floor=settings.min_rows, default=settings.min_rows)
    seed_ids = split.load_seed_ids(settings.seed_profiles_uri)  # before the database: fail fast
    if not seed_ids:
        raise InvalidArgument(f"the seed-profile list {settings.seed_profiles_uri} names no twitter_id")
    result = generate.generate_dataset(
        _database_params(settings),
        settings.artifact_root,
        run_id,
        teachers=source.parse_teachers(teachers) if teachers else source.DEFAULT_TEACHERS,
        seed_ids=seed_ids,
        min_rows=min_rows,
    )
    result["training_job_name"] = job_name
    result["shadow"] = fresh.snapshot(
        settings.artifact_root,
        run_id,
        _database_params(settings),
        teachers=source.parse_teachers(teachers) if teachers else source.DEFAULT_TEACHERS,
        seed_ids=seed_ids,
    )
    if result["shadow"].get("skipped"):
        logger.warning("no shadow set", extra=result["shadow"])
    logger.info("dataset written", extra={"counts": result["counts"], "rejects": result["rejects"], "training_job_name": job_name})
    return result
