"""The GenerateDataset and ValidateData Lambdas: moto for S3 and Secrets Manager, real PostgreSQL."""

import contextlib
import json
import uuid

import boto3
import psycopg2
import pytest

from lambdas.generate_dataset import handler as generate
from lambdas.validate_data import handler as validate
from pipeline import contracts
from pipeline.errors import DatabaseUnavailable, InsufficientData, InvalidArgument
from tests.factories import insert_fresh_scores, load_rows, researchers


class FakeContext:
    function_name = "generate-dataset"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:generate-dataset"
    aws_request_id = "request-1"


def make_secret(database_url: str, **override) -> str:
    params = psycopg2.extensions.parse_dsn(database_url)
    secret = {
        "host": params["host"],
        "port": int(params.get("port", 5432)),
        "username": params["user"],
        "password": "unused-with-trust-auth",
        "dbname": params["dbname"],
    }
    secret.update(override)
    return boto3.client("secretsmanager").create_secret(Name=f"db-{uuid.uuid4().hex[:6]}", SecretString=json.dumps(secret))["ARN"]


@pytest.fixture
def lambda_env(monkeypatch, bucket, database_url):
    boto3.client("s3").create_bucket(Bucket="stack-config")
    seeds = "".join(f"{profile.twitter_id}\n" for profile, _ in researchers(12))  # the stack's seed-profile list
    boto3.client("s3").put_object(Bucket="stack-config", Key="seed-profiles.txt", Body=seeds.encode())
    monkeypatch.setenv("SEED_PROFILES_URI", "s3://stack-config/seed-profiles.txt")
    monkeypatch.setenv("ARTIFACT_BUCKET", bucket)
    monkeypatch.setenv("DATABASE_SECRET_ARN", make_secret(database_url))
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "test")
    monkeypatch.setenv("MIN_ROWS", "50")  # the stack's minRows, lowered for these small tables
    monkeypatch.setenv("DATABASE_SSLMODE", "prefer")  # the test server has no TLS (TLS: test_database_tls.py)
    return bucket


def test_generate_then_validate_under_the_run_prefix(db, lambda_env):
    load_rows(db, researchers(500))
    result = generate.handler({"run_id": "weekly-2026-11-25", "min_rows": 50}, FakeContext())
    assert result["dataset_uri"] == f"s3://{lambda_env}/runs/weekly-2026-11-25/dataset"
    assert result["counts"]["total"] == 500
    assert len(json.dumps(result)) < 4096  # URIs and counts, never data (Step Functions: 256 KB)
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=lambda_env)["Contents"]}
    assert keys == {
        f"runs/weekly-2026-11-25/dataset/{n}" for n in ("train.jsonl", "validation.jsonl", "holdout.jsonl", "seeds.jsonl", "manifest.json")
    }
    assert result["files"]["train"]["uri"] == f"s3://{lambda_env}/runs/weekly-2026-11-25/dataset/train.jsonl"
    assert result["counts"]["seed_profiles_in_holdout"] == 12
    assert result["training_job_name"] == contracts.training_job_name("weekly-2026-11-25")

    verdict = validate.handler({"run_id": "weekly-2026-11-25", "dataset_uri": result["dataset_uri"], "min_rows": 50}, FakeContext())
    assert verdict["valid"] and verdict["counts"]["total"] == 500
    verdict = validate.handler({"run_id": "weekly-2026-11-25", "options": {"min_rows": 1000}}, FakeContext())  # raised by an execution
    assert not verdict["valid"] and [p["reason"] for p in verdict["problems"]] == ["InsufficientData"]


# An execution's input (a person at the console) cannot hollow out the gates: no split shares, no
# lower row minimum than the stack's, no seed list without seeds - each refused before any write.
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"split": "0.98,0.01,0.01"}, "split is not an execution option"),
        ({"min_rows": 1}, r"min_rows must be at least 50 \(the stack's minRows"),
    ],
)
def test_execution_input_cannot_shrink_what_the_gates_read(db, lambda_env, options, message):
    load_rows(db, researchers(500))
    with pytest.raises(InvalidArgument, match=message):
        generate.handler({"run_id": "r1", "options": options}, FakeContext())
    with pytest.raises(InvalidArgument, match=message) if "min_rows" in options else contextlib.nullcontext():
        validate.handler({"run_id": "r1", "options": options}, FakeContext())
    assert boto3.client("s3").list_objects_v2(Bucket=lambda_env).get("KeyCount") == 0


def test_an_empty_seed_list_is_refused_before_the_database_is_read(monkeypatch, db, lambda_env):
    boto3.client("s3").put_object(Bucket="stack-config", Key="seed-profiles.txt", Body=b"# no ids yet\n\n")
    monkeypatch.setenv("DATABASE_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:never-read-AbCdEf")
    with pytest.raises(InvalidArgument, match="names no twitter_id"):
        generate.handler({"run_id": "r1"}, FakeContext())


def test_a_small_holdout_stops_the_run_at_validate_data(db, lambda_env):
    load_rows(db, researchers(120))  # ~11 held-out profiles
    generate.handler({"run_id": "r1"}, FakeContext())
    verdict = validate.handler({"run_id": "r1"}, FakeContext())
    assert not verdict["valid"] and [p["reason"] for p in verdict["problems"]] == ["TooFewHoldoutProfiles"]


def test_database_down_raises_the_retryable_named_error(monkeypatch, lambda_env, database_url):
    monkeypatch.setenv("DATABASE_SECRET_ARN", make_secret(database_url, host="127.0.0.1", port=1))
    with pytest.raises(DatabaseUnavailable, match="127.0.0.1:1"):
        generate.handler({"run_id": "r1"}, FakeContext())


def test_no_rows_is_insufficient_data_and_nothing_is_written(db, lambda_env):
    with pytest.raises(InsufficientData):
        generate.handler({"run_id": "r1"}, FakeContext())
    assert boto3.client("s3").list_objects_v2(Bucket=lambda_env).get("KeyCount") == 0


@pytest.mark.parametrize("event", [{}, {"run_id": "../../etc"}, {"run_id": "r1", "min_rows": "many"}, {"run_id": "r1", "min_rows": True}])
def test_malformed_events_are_named_errors(db, lambda_env, event):
    with pytest.raises(InvalidArgument):
        generate.handler(event, FakeContext())


def test_validate_refuses_a_dataset_outside_its_bucket(lambda_env):
    with pytest.raises(InvalidArgument):
        validate.handler({"run_id": "r1", "dataset_uri": "s3://someone-elses-bucket/runs/r1/dataset"}, FakeContext())


def test_without_the_stacks_seed_profile_list_nothing_is_exported(monkeypatch, db, lambda_env):
    load_rows(db, researchers(80))
    monkeypatch.delenv("SEED_PROFILES_URI")
    with pytest.raises(InvalidArgument, match="SEED_PROFILES_URI"):
        generate.handler({"run_id": "r1", "min_rows": 50}, FakeContext())
    assert boto3.client("s3").list_objects_v2(Bucket=lambda_env).get("KeyCount") == 0


def test_too_few_seed_profiles_in_the_database_is_invalid_data(monkeypatch, db, lambda_env):
    load_rows(db, researchers(500))
    monkeypatch.setenv("MIN_SEED_PROFILES", "20")  # the stack's minSeedProfiles
    result = generate.handler({"run_id": "r1", "min_rows": 50}, FakeContext())
    verdict = validate.handler({"run_id": "r1", "min_rows": 50, "options": {"min_seed_profiles": 1}}, FakeContext())
    assert not verdict["valid"] and [p["reason"] for p in verdict["problems"]] == ["TooFewSeedProfiles"]
    assert result["counts"]["seed_profiles_in_holdout"] == 12


def test_missing_secret_is_a_named_error(monkeypatch, lambda_env):
    monkeypatch.setenv("DATABASE_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf")
    with pytest.raises(InvalidArgument, match="cannot read the database secret"):
        generate.handler({"run_id": "r1"}, FakeContext())


def test_an_execution_name_used_again_never_overwrites_that_runs_dataset(db, lambda_env):
    """Step Functions accepts a name again after 90 days; the earlier run (maybe production's) keeps its files."""
    from pipeline.errors import RunFolderExists

    load_rows(db, researchers(80))
    generate.handler({"run_id": "weekly-1", "min_rows": 50}, FakeContext())
    s3 = boto3.client("s3")
    before = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=lambda_env)["Contents"]}
    load_rows(db, researchers(40, start=1000))  # the database changed since
    with pytest.raises(RunFolderExists, match="runs/weekly-1/dataset already holds a dataset"):
        generate.handler({"run_id": "weekly-1", "min_rows": 50}, FakeContext())
    assert {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=lambda_env)["Contents"]} == before


def test_the_deployed_default_verifies_the_database_certificate(monkeypatch, lambda_env, tls_server):
    """No DATABASE_SSLMODE (the stack's default): a server whose certificate no RDS CA signed is refused."""
    monkeypatch.delenv("DATABASE_SSLMODE")
    password = "pw-" + uuid.uuid4().hex
    monkeypatch.setenv("DATABASE_SECRET_ARN", make_secret(f"postgresql://postgres@localhost:{tls_server.port}/postgres", password=password))
    with pytest.raises(DatabaseUnavailable, match="certificate verify failed") as failure:
        generate.handler({"run_id": "r1"}, FakeContext())
    assert password not in str(failure.value)
    assert boto3.client("s3").list_objects_v2(Bucket=lambda_env).get("KeyCount") == 0


def test_with_a_model_in_production_the_run_snapshots_its_shadow_set(db, lambda_env, monkeypatch):
    """The profiles first scored after production's dataset, for ValidateModel to score; a failure to
    read them is said in the result and never fails the dataset stage (its retry would find the dataset written)."""
    from pipeline import storage
    from pipeline.dataset import fresh
    from pipeline.errors import DatabaseUnavailable

    load_rows(db, researchers(500))
    assert generate.handler({"run_id": "week-1", "min_rows": 50}, FakeContext())["shadow"] == {
        "profiles": 0,
        "skipped": "no model in production",
    }
    storage.write_bytes(f"s3://{lambda_env}/models/current.json", json.dumps({"run_id": "week-1"}).encode())
    insert_fresh_scores(db, {"new_person": 0.8}, prefix="9300")  # a week of new scores
    result = generate.handler({"run_id": "week-2", "min_rows": 50}, FakeContext())
    assert result["shadow"]["profiles"] == 1 and result["shadow"]["uri"] == f"s3://{lambda_env}/runs/week-2/shadow/fresh.json"
    profiles, rejected, _ = fresh.read_snapshot(result["shadow"]["uri"])
    assert [p.row["twitter_id"] for p in profiles] == ["93000"] and profiles[0].teacher_score == 0.8 and rejected == 0

    def unavailable(*args, **kwargs):
        raise DatabaseUnavailable("cannot connect to PostgreSQL at db:5432: timeout")

    monkeypatch.setattr(fresh, "fresh_profiles", unavailable)
    result = generate.handler({"run_id": "week-3", "min_rows": 50}, FakeContext())
    assert result["counts"]["total"] == 501 and "DatabaseUnavailable" in result["shadow"]["skipped"]
