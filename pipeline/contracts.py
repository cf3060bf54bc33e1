"""Facts every runtime shares, with no dependencies (the Pulumi program imports this module too,
where numpy, boto3, psycopg2 and torch are absent): the run layout, the dataset manifest's name
and format, the model's name, and how a run id becomes a SageMaker training job name."""

from __future__ import annotations

import hashlib
import re

MODEL_NAME = "mistral-researcher"

# Every artifact of a run lives under <root>/runs/<run_id>/ (root: a local directory or s3://bucket).
RUNS_DIR = "runs"
DATASET_DIR = "dataset"
TRAINING_DIR = "training"  # SageMaker writes <TRAINING_DIR>/<job name>/output/model/ (the adapter)
ADAPTER_DIR = "adapter"  # the local loop's adapter
GGUF_NAME = "model.gguf"
REPORT_DIR = "report"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "researcher-scorer-dataset/v2"  # v2: seed profiles in seeds.jsonl
HOLDOUT_FILE = "holdout.jsonl"
# A dataset with fewer usable rows than this fails (InsufficientData) before any GPU time is spent.
DEFAULT_MIN_ROWS = 1000
# ValidateData refuses a dataset with fewer seed profiles (the known researchers the seed gates
# score) than this, before any GPU time is spent; the stack setting minSeedProfiles overrides it.
DEFAULT_MIN_SEED_PROFILES = 10
# Scores at or above this are the "researcher" class (class balance, agreement at the threshold).
POSITIVE_SCORE = 0.5
SEEDS_FILE = "seeds.jsonl"

# Large artifacts (a run's GGUF, ~4.4 GB for Mistral-7B Q4_K_M) carry an S3 object tag saying how
# long they are kept. The bucket's lifecycle rule expires objects tagged RETENTION_EXPIRING after
# the stack's ggufRetentionDays; promotion re-tags the production GGUF and its restore point so
# they never expire, and hands the one they replace back to the rule.
RETENTION_TAG = "retention"
RETENTION_EXPIRING = "expiring"
RETENTION_PRODUCTION = "production"
RETENTION_RESTORE_POINT = "restore-point"

# Step Functions execution names (the run ids in AWS): 1-80 characters of letters, digits, '-' and '_'.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")

# SageMaker training job names: 1-63 characters, ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$.
TRAINING_JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TRAINING_JOB_NAME_MAX = 63
TRAINING_JOB_PREFIX = MODEL_NAME
# Hex digits of sha256(run id) that make a job name unique when two run ids read the same once
# shortened and cleaned ("a_b" and "a-b", or two 80-character ids sharing a 40-character start).
JOB_NAME_HASH_DIGITS = 8


# The stack's job-name prefix (config trainingJobPrefix); IAM scopes the jobs to "<prefix>-*".
TRAINING_JOB_PREFIX_PATTERN = re.compile(r"^[a-z0-9](-?[a-z0-9]){0,25}$")


def training_job_name(run_id: str, prefix: str = TRAINING_JOB_PREFIX) -> str:
    """A valid, unique, traceable SageMaker job name for any run id (execution names allow 80
    characters and '_'; job names 63, no '_'): ``<prefix>-<the run id, runs of other characters as
    '-', cut to fit>-<sha256(run id)[:8]>``."""
    if not TRAINING_JOB_PREFIX_PATTERN.match(prefix):
        raise ValueError(f"training job prefix must match {TRAINING_JOB_PREFIX_PATTERN.pattern}, got {prefix!r}")
    digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:JOB_NAME_HASH_DIGITS]
    room = TRAINING_JOB_NAME_MAX - len(prefix) - len(digest) - 2
    readable = re.sub(r"[^A-Za-z0-9]+", "-", run_id)[:room].strip("-")
    return "-".join(part for part in (prefix, readable, digest) if part)
