"""Facts every runtime shares, with no dependencies (the Pulumi program imports this module too,
where numpy, boto3, psycopg2 and torch are absent): the run layout and the key patterns derived
from it, the dataset manifest's name and format, the model's name and production tag, how a run id
becomes a SageMaker training job name, the retention tags, the quantization types, Lambda's limits,
and the quality gates with their defaults and valid ranges. Everything else imports them from here;
the one copy that cannot import (the ASL JSON) is checked against them by a test."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum

MODEL_NAME = "mistral-researcher"
# The names a stack may give the model (modelName): Ollama model names, lowercase.
MODEL_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
PRODUCTION_TAG = "latest"  # mistral-researcher:latest is the model in production

# Every artifact of a run lives under <root>/runs/<run_id>/ (root: a local directory or s3://bucket).
RUNS_DIR = "runs"
DATASET_DIR = "dataset"
TRAINING_DIR = "training"  # SageMaker writes <TRAINING_DIR>/<job name>/output/model/ (the adapter)
ADAPTER_DIR = "adapter"  # the local loop's adapter
GGUF_NAME = "model.gguf"
REPORT_DIR = "report"
REPORT_JSON = "report.json"  # runs/<run_id>/report/: the gates' verdict PromoteModel reads
REPORT_MD = "report.md"
MODELFILE_NAME = "Modelfile"  # beside the run's GGUF
CHECKPOINTS_DIR = "checkpoints"  # s3://<bucket>/checkpoints/<run_id>/: managed spot's checkpoints
MODELS_DIR = "models"  # s3://<bucket>/models/current.json: the production pointer
POINTER_NAME = "current.json"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "researcher-scorer-dataset/v2"  # v2: seed profiles in seeds.jsonl
HOLDOUT_FILE = "holdout.jsonl"
# A dataset with fewer usable rows than this fails (InsufficientData) before any GPU time is spent.
DEFAULT_MIN_ROWS = 1000
# ValidateData refuses a dataset with fewer seed profiles (the known researchers the seed gates
# score) than this, before any GPU time is spent; the stack setting minSeedProfiles overrides it.
DEFAULT_MIN_SEED_PROFILES = 10
# The smallest samples a gate decides on; below them the gate fails ("too few profiles"), whatever
# the metric says, and ValidateData refuses the dataset before training. A Pearson of 0.85 on 10
# profiles is consistent (95 %, Fisher z) with a true correlation of 0.47; on 30, of 0.71.
MIN_HOLDOUT_PROFILES = 30
# The teacher whose style the model imitates at inference: every prompt production sends names it
# on its "Scored by model" line (prompt.DEFAULT_INFERENCE_TEACHER).
INFERENCE_TEACHER = "claude-haiku-20240307"
# The teacher the agreement gates (correlation, champion/challenger) measure against: the one
# production's prompt names, whoever labelled a row (the design's success criterion is "Correlation
# with Claude"); the other teachers' agreement is reported, not gated.
GATED_TEACHER = INFERENCE_TEACHER
# Five known researchers is the least the seed gates' mean and minimum can be read on; the stack's
# minSeedProfiles may not go below it.
MIN_SEED_SAMPLE = 5
# The holdout is the top HOLDOUT_SHARE of the twitter_id hash space, in every run and every split:
# a profile held out once is held out forever, so no later week trains on it (pipeline.dataset.split).
HOLDOUT_SHARE = 0.1
# libpq's sslmode values for the dataset Lambda's connection, strictest first. verify-full (the
# default) checks the server's certificate against the RDS CA bundle and its name against the host;
# the stack's databaseSslMode relaxes it for a database that cannot offer that.
DATABASE_SSL_MODES = ("verify-full", "verify-ca", "require", "prefer", "disable")
DEFAULT_DATABASE_SSL_MODE = "verify-full"
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

# S3 key patterns of the run layout, for IAM policies and lifecycle rules ("runs/*/dataset/*").
ANY_RUN = f"{RUNS_DIR}/*"
RUN_DATASET_KEYS = f"{ANY_RUN}/{DATASET_DIR}/*"
RUN_TRAINING_KEYS = f"{ANY_RUN}/{TRAINING_DIR}/*"
RUN_REPORT_KEYS = f"{ANY_RUN}/{REPORT_DIR}/*"
RUN_GGUF_KEY = f"{ANY_RUN}/{GGUF_NAME}"
RUN_GGUF_DESCRIPTION_KEY = f"{ANY_RUN}/{GGUF_NAME}.json"
RUN_MODELFILE_KEY = f"{ANY_RUN}/{MODELFILE_NAME}"
CHECKPOINT_KEYS = f"{CHECKPOINTS_DIR}/*"
# The run history (pipeline/history.py): one JSON line per run and operator action. Its name has a
# dot, which no run id has (RUN_ID_PATTERN), so it never collides with a run's folder.
RUN_INDEX_NAME = "index.jsonl"
RUN_INDEX_KEY = f"{RUNS_DIR}/{RUN_INDEX_NAME}"
# Shadow (Phase 4): GenerateDataset snapshots the profiles first scored after production's dataset
# (runs/<run_id>/shadow/fresh.json); ValidateModel scores them with production and reports there.
SHADOW_DIR = "shadow"
FRESH_PROFILES_NAME = "fresh.json"
RUN_SHADOW_KEYS = f"{ANY_RUN}/{SHADOW_DIR}/*"
POINTER_KEYS = f"{MODELS_DIR}/*"

# Hex digits of sha256(run id) that make a job name unique when two run ids read the same once
# shortened and cleaned ("a_b" and "a-b", or two 80-character ids sharing a 40-character start).
JOB_NAME_HASH_DIGITS = 8


def run_digest(run_id: str) -> str:
    """The run id's short sha256: makes a shortened or case-folded name unique again."""
    return hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:JOB_NAME_HASH_DIGITS]


# Ollama model tags: [a-zA-Z0-9_][a-zA-Z0-9_.-]{0,79}, matched case-insensitively.
OLLAMA_TAG_MAX = 80


def candidate_tag(run_id: str) -> str:
    """A run's candidate tag: ``<the run id, lowercased, other characters as '-', cut>-<sha256[:8]>``.
    The digest suffix means no run id ("latest", "LATEST", another run's id in other case) can name
    the production tag or another run's candidate, whatever the execution was called."""
    digest = run_digest(run_id)
    readable = re.sub(r"[^a-z0-9_.]+", "-", run_id.lower())[: OLLAMA_TAG_MAX - len(digest) - 1].strip("-.") or "run"
    return f"{readable}-{digest}"


# Step Functions execution names (the run ids in AWS): 1-80 characters of letters, digits, '-' and '_'.
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")

# SageMaker training job names: 1-63 characters, ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$.
TRAINING_JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TRAINING_JOB_NAME_MAX = 63
TRAINING_JOB_PREFIX = MODEL_NAME


# GPU families a training job may run on: SageMaker spot training and the 4-bit kernels need NVIDIA
# GPUs (the stack's trainingInstanceType and `pipeline train --sagemaker --instance-type`).
TRAINING_INSTANCE_FAMILIES = ("ml.g4dn", "ml.g5", "ml.g6", "ml.g6e", "ml.p3", "ml.p4d", "ml.p4de", "ml.p5")
# Where `pipeline stage-base-model` puts Mistral-7B-Instruct-v0.2 in the artifact bucket by default.
BASE_MODEL_PREFIX = "base-models/Mistral-7B-Instruct-v0.2/"


def is_training_gpu_instance(instance_type: str) -> bool:
    return instance_type.count(".") == 2 and instance_type.rsplit(".", 1)[0] in TRAINING_INSTANCE_FAMILIES


# The stack's job-name prefix (config trainingJobPrefix); IAM scopes the jobs to "<prefix>-*".
TRAINING_JOB_PREFIX_PATTERN = re.compile(r"^[a-z0-9](-?[a-z0-9]){0,25}$")


def training_job_name(run_id: str, prefix: str = TRAINING_JOB_PREFIX) -> str:
    """A valid, unique, traceable SageMaker job name for any run id (execution names allow 80
    characters and '_'; job names 63, no '_'): ``<prefix>-<the run id, runs of other characters as
    '-', cut to fit>-<sha256(run id)[:8]>``."""
    if not TRAINING_JOB_PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"training job prefix must match {TRAINING_JOB_PREFIX_PATTERN.pattern}, got {prefix!r}")
    digest = run_digest(run_id)
    room = TRAINING_JOB_NAME_MAX - len(prefix) - len(digest) - 2
    readable = re.sub(r"[^A-Za-z0-9]+", "-", run_id)[:room].strip("-")
    return "-".join(part for part in (prefix, readable, digest) if part)


# The trainer prints its metrics one per line as ``name=value``; the training job's
# MetricDefinitions (declared by infra/, launched by the state machine) find them with these regexes.
TRAINING_METRICS = ("train_loss", "eval_loss", "learning_rate", "epoch", "planned_steps", "seconds_per_step")
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def metric_definitions() -> list[dict[str, str]]:
    """SageMaker's MetricDefinitions for the trainer's metric lines."""
    return [{"Name": name, "Regex": f"{name}={_NUMBER}"} for name in TRAINING_METRICS]


class Quantization(str, Enum):
    """The GGUF types the conversion writes (pipeline/gguf/quant.py maps each to llama.cpp's rules)."""

    F32 = "f32"
    F16 = "f16"
    Q8_0 = "q8_0"
    Q4_K_M = "q4_k_m"


DEFAULT_QUANTIZATION = Quantization.Q4_K_M

# Lambda's maxima, which the conversion function is given by default and its budget plans against.
LAMBDA_MAX_MEMORY_MB = 10_240
LAMBDA_MAX_TIMEOUT_S = 900
# Lambda gives CPU in proportion to memory: one vCPU's worth at 1,769 MB, six at 10,240 MB.
LAMBDA_MB_PER_VCPU = 1_769
# New accounts may be held to this much Lambda memory until AWS raises it (CreateFunction then
# answers "Member must have value less than or equal to 3008").
NEW_ACCOUNT_LAMBDA_MEMORY_MB = 3_008
# The Mistral-7B export's budget (pipeline/gguf/budget.py) fits the 900 s timeout from 3 vCPUs on;
# at 2 it estimates ~920 s and the conversion refuses (tests/pipeline/gguf/test_export.py).
CONVERSION_MIN_MEMORY_MB = 3 * LAMBDA_MB_PER_VCPU


def lambda_vcpus(memory_mb: int) -> float:
    return min(memory_mb, LAMBDA_MAX_MEMORY_MB) / LAMBDA_MB_PER_VCPU


# The host on demand stops itself after hostIdleStopMinutes without an Ollama request. DeployModel
# wakes it and asks Ollama at once; every state after it asks Ollama too, and none lasts longer than
# a Lambda's timeout: the idle time must outlast that, plus 5 minutes for the invocation's transient
# retries, or the host could stop itself between two requests of one execution.
HOST_IDLE_STOP_MIN_MINUTES = LAMBDA_MAX_TIMEOUT_S // 60 + 5


@dataclass(frozen=True)
class GateRule:
    """One quality gate: the threshold's name (pipeline.evaluation.gates.QualityGates), the metric it
    reads, the stack setting that overrides it, the spec's default, the values a threshold may take,
    and how the metric must compare to it."""

    name: str
    metric: str
    setting: str
    default: float
    low: float  # inclusive, or exclusive when low_exclusive
    high: float | None
    comparison: str  # ">", "<" or ">="
    low_exclusive: bool = False

    def problem(self, value: float) -> str | None:
        """Why ``value`` is not a valid threshold for this gate, or None."""
        if self.low_exclusive and not value > self.low:
            return f"must be above {self.low:g}, got {value:g}"
        if not self.low_exclusive and value < self.low or self.high is not None and value > self.high:
            return f"must be within [{self.low:g}, {self.high:g}], got {value:g}"
        return None


# The spec's Success Criteria: seed-profile mean > 0.75 and min > 0.5, Pearson with the teacher
# > 0.85, latency < 5 s, valid JSON >= 98 %. A correlation threshold may be any correlation.
GATES = (
    GateRule("seed_mean_min", "seed_mean", "gateSeedMeanMin", 0.75, 0.0, 1.0, ">"),
    GateRule("seed_min_min", "seed_min", "gateSeedMinMin", 0.50, 0.0, 1.0, ">"),
    GateRule("correlation_min", "pearson", "gateCorrelationMin", 0.85, -1.0, 1.0, ">"),
    GateRule("latency_p50_max_s", "latency_p50_s", "gateLatencyP50MaxSeconds", 5.0, 0.0, None, "<", low_exclusive=True),
    GateRule("latency_p95_max_s", "latency_p95_s", "gateLatencyP95MaxSeconds", 5.0, 0.0, None, "<", low_exclusive=True),
    GateRule("valid_json_rate_min", "valid_json_rate", "gateValidJsonRateMin", 0.98, 0.0, 1.0, ">="),
    # Requests that got no answer (timeout, host unreachable, refused) after the client's retries
    # and one more pass: counted here, never as a score of 0 (one timeout among 40 seeds set
    # seed_min to 0 and failed 18 % of runs at a 0.5 % per-request failure rate).
    GateRule("request_failure_rate_max", "request_failure_rate", "gateRequestFailureRateMax", 0.02, 0.0, 1.0, "<"),
    # Champion / challenger (Phase 4), a non-inferiority test: on the same holdout, the candidate's
    # Pearson may be at most this much below production's, and its MAE at most this much above,
    # each at 95 % one-sided confidence (pipeline/evaluation/champion.py). Error rates by simulation
    # in docs/benchmarks.md (an equal candidate passes 93 % at 200 profiles, one worse by 0.05
    # Pearson or +0.02 MAE at most 5 %). The first run, with nothing in production, passes.
    GateRule("champion_pearson_drop_max", "champion_pearson_drop", "gateChampionPearsonDropMax", 0.05, 0.0, 2.0, "<"),
    GateRule("champion_mae_rise_max", "champion_mae_rise", "gateChampionMaeRiseMax", 0.02, 0.0, 1.0, "<"),
)
GATE_RULES = {rule.name: rule for rule in GATES}
