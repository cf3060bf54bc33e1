"""The stack's configuration, read once into a typed object; bad values fail `pulumi up` early.

Pulumi.yaml's ``config:`` block is the one home of every setting's type, default and description:
this module takes the defaults from there. Every problem found is collected, and `pulumi up` stops
with one message listing them all, before any resource is declared.

The quality gates (names, defaults, ranges), quantization types and training-job names are
checked against pipeline/contracts.py, which has no dependencies: the Pulumi program's environment
(requirements.txt) has no numpy, torch or boto3. Pulumi.yaml repeats the defaults, because the
Pulumi CLI reads them there; a test checks that they agree.
"""

from __future__ import annotations

import ipaddress
import json
import re
import zoneinfo
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pulumi
import yaml

from infra import asl
from infra.user_data import OllamaHostSettings, UserDataError
from pipeline import contracts
from pipeline.errors import InvalidArgument
from pipeline.training import hyperparameters

PROJECT = "researcher-scorer"
PULUMI_YAML = Path(__file__).resolve().parents[1] / "Pulumi.yaml"

# Days, bounded so that a typo (3650 for 30) fails loudly instead of keeping data for a decade.
MAX_RETENTION_DAYS = 3650
# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)
HOST_INSTANCE_FAMILIES = ("g4dn", "g5", "g6", "g6e", "p3", "p4d", "p5")
# SageMaker limits: MaxRuntimeInSeconds up to 28 days; a training volume of at least the model's size.
MAX_TRAINING_SECONDS = 28 * 24 * 3600
MIN_TRAINING_VOLUME_GB, MAX_TRAINING_VOLUME_GB = 30, 16384
# At least the default AMI's snapshot (the ECS GPU AMI is built on a 30 GB volume: block_device_size_gb
# in aws/amazon-ecs-ami's variables.pkr.hcl); another AMI's larger snapshot is EC2's own check at creation.
MIN_HOST_VOLUME_GB, MAX_HOST_VOLUME_GB = 30, 16384
QUANTIZATIONS = tuple(quantization.value for quantization in contracts.Quantization)
# EventBridge Scheduler's cron: cron(minutes hours day-of-month month day-of-week year).
CRON = re.compile(r"cron\((?P<fields>[^()]+)\)")
CRON_FIELD = re.compile(r"[0-9A-Za-z*?,/#L W-]+")
SECRET_ARN = re.compile(r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+")
KMS_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/.+")
# Lambda's CreateFunction accepts `repo:tag` or `repo@sha256:…`, never both; SageMaker likewise. A
# prebuilt image is named by digest so that what was tested is what runs.
ECR_IMAGE = re.compile(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}")
MODEL_NAME = contracts.MODEL_NAME_PATTERN
RFC1918_BLOCKS = tuple(ipaddress.IPv4Network(block) for block in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
OLLAMA_CIDR_MIN_PREFIX = 16  # the widest range ollamaAllowedCidrs admits to the host's port


@dataclass(frozen=True)
class StorageConfig:
    checkpoint_retention_days: int
    gguf_retention_days: int
    noncurrent_version_retention_days: int
    incomplete_upload_days: int
    kms_key_arn: str | None


@dataclass(frozen=True)
class NetworkConfig:
    vpc_id: str
    private_subnet_ids: tuple[str, ...]
    ollama_allowed_security_group_ids: tuple[str, ...]
    ollama_allowed_cidrs: tuple[str, ...]
    create_vpc_endpoints: bool = False  # interface endpoints for the APIs the Lambdas call (infra/vpc_access.py)


@dataclass(frozen=True)
class DatasetConfig:
    database_secret_arn: str
    in_vpc: bool
    database_security_group_id: str | None
    database_port: int
    seed_profiles_uri: str
    min_seed_profiles: int
    min_rows: int
    ssl_mode: str
    secret_kms_key_arn: str | None = None  # the secret's customer managed key, if any


@dataclass(frozen=True)
class ImagesConfig:
    training_image_uri: str | None  # None: build and push training_image/
    conversion_image_uri: str | None  # None: build and push lambdas/convert_to_gguf/


@dataclass(frozen=True)
class TrainingConfig:
    base_model_s3_uri: str | None  # None: s3://<bucket>/base-models/Mistral-7B-Instruct-v0.2/
    instance_type: str
    volume_size_gb: int
    max_runtime_seconds: int
    max_wait_seconds: int
    job_prefix: str
    hyperparameters: dict[str, str]  # overrides only, as SageMaker passes them (strings)
    poll_seconds: int


@dataclass(frozen=True)
class HostConfig:
    instance_type: str
    ami_parameter: str
    root_volume_gb: int
    ollama: OllamaHostSettings
    keep_running: bool


@dataclass(frozen=True)
class ModelServingConfig:
    model_name: str
    quality_gates: dict[str, float]  # QualityGates field -> threshold, handed to ValidateModel as JSON
    validation_concurrency: int
    quantization: str
    conversion_memory_mb: int = contracts.LAMBDA_MAX_MEMORY_MB  # the ConvertToGGUF Lambda's memory (and CPU)
    custom_model_share: float = 0.0  # percent of profiles ScoreProfiles routes to the custom model
    shadow_drop_alert: float = 0.05  # Pearson points the shadow comparison may fall before it alerts
    teacher_audit_share: float = 5.0  # percent of routed profiles ScoreProfiles flags for the teacher too


@dataclass(frozen=True)
class ScheduleConfig:
    expression: str
    timezone: str
    enabled: bool


@dataclass(frozen=True)
class StackConfig:
    storage: StorageConfig
    network: NetworkConfig
    dataset: DatasetConfig
    images: ImagesConfig
    training: TrainingConfig
    host: HostConfig
    serving: ModelServingConfig
    schedule: ScheduleConfig
    alert_email: str | None
    log_retention_days: int


@cache
def declared() -> dict[str, dict[str, Any]]:
    """Pulumi.yaml's config block, keyed by the setting's name without the project prefix."""
    block = yaml.safe_load(PULUMI_YAML.read_text(encoding="utf-8"))["config"]
    return {key.split(":", 1)[1]: spec for key, spec in block.items()}


@dataclass
class _Reader:
    """Reads settings by name with Pulumi.yaml's defaults, collecting every problem."""

    config: pulumi.Config
    problems: list[str] = field(default_factory=list)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{PROJECT}:{key} {message}")

    def has_problem(self, key: str) -> bool:
        return any(problem.startswith(f"{PROJECT}:{key} ") for problem in self.problems)

    def raw(self, key: str) -> Any:
        if key not in declared():
            raise KeyError(f"{key} is not declared in Pulumi.yaml")  # a programming error, not a user's
        value = self.config.get(key)
        return declared()[key].get("default") if value is None else value

    def text(self, key: str) -> str:
        return str(self.raw(key)).strip()

    def optional(self, key: str) -> str | None:
        return self.text(key) or None

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.raw(key)
        try:
            number = int(str(value).strip())
        except ValueError:
            self.problem(key, f"must be a whole number, got {value!r}")
            return int(declared()[key]["default"])
        if not low <= number <= high:
            self.problem(key, f"must be between {low} and {high}, got {number}")
        return number

    def _float(self, key: str) -> float | None:
        value = self.raw(key)
        try:
            return float(str(value).strip())
        except ValueError:
            self.problem(key, f"must be a number, got {value!r}")
            return None

    def threshold(self, rule: contracts.GateRule) -> float:
        """A quality gate's threshold, checked against the gate's own range (pipeline.contracts.GATES)."""
        number = self._float(rule.setting)
        problem = rule.problem(number) if number is not None else None
        if problem:
            self.problem(rule.setting, problem)
        return float(declared()[rule.setting]["default"]) if number is None else number

    def boolean(self, key: str) -> bool:
        value = self.raw(key)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false"):
            self.problem(key, f"must be true or false, got {value!r}")
            return bool(declared()[key]["default"])
        return text == "true"

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else []
            except json.JSONDecodeError:
                self.problem(key, f'must be a list, e.g. ["a", "b"], got {value!r}')
                return ()
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            self.problem(key, f"must be a list of non-empty strings, got {value!r}")
            return ()
        return tuple(item.strip() for item in value)


def load() -> StackConfig:
    reader = _Reader(pulumi.Config())
    loaded = _read(reader)
    if reader.problems:
        raise pulumi.RunError("invalid stack configuration (pulumi config set <key> <value>):\n  - " + "\n  - ".join(reader.problems))
    return loaded


def _read(r: _Reader) -> StackConfig:
    kms_key_arn = r.optional("kmsKeyArn")
    if kms_key_arn and not KMS_ARN.fullmatch(kms_key_arn):
        r.problem("kmsKeyArn", f"must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>), got {kms_key_arn!r}")
    storage = StorageConfig(
        checkpoint_retention_days=r.integer("checkpointRetentionDays", 1, MAX_RETENTION_DAYS),
        gguf_retention_days=r.integer("ggufRetentionDays", 1, MAX_RETENTION_DAYS),
        noncurrent_version_retention_days=r.integer("noncurrentVersionRetentionDays", 1, MAX_RETENTION_DAYS),
        incomplete_upload_days=r.integer("incompleteUploadDays", 1, MAX_RETENTION_DAYS),
        kms_key_arn=kms_key_arn,
    )
    log_retention_days = r.integer("logRetentionDays", 1, MAX_RETENTION_DAYS)
    if log_retention_days not in LOG_RETENTION_DAYS:
        r.problem("logRetentionDays", f"must be one of CloudWatch's periods {LOG_RETENTION_DAYS}, got {log_retention_days}")
    return StackConfig(
        storage=storage,
        network=_network(r),
        dataset=_dataset(r),
        images=_images(r),
        training=_training(r),
        host=_host(r),
        serving=_serving(r),
        schedule=_schedule(r),
        alert_email=_alert_email(r),
        log_retention_days=log_retention_days,
    )


def _network(r: _Reader) -> NetworkConfig:
    vpc_id = r.text("vpcId")
    if not vpc_id:
        r.problem("vpcId", "is required: the VPC of the Ollama host and the serving Lambdas")
    elif not re.fullmatch(r"vpc-[0-9a-f]{8,17}", vpc_id):
        r.problem("vpcId", f"must be a VPC id (vpc-...), got {vpc_id!r}")
    subnets = r.strings("privateSubnetIds")
    if not subnets and not r.has_problem("privateSubnetIds"):
        r.problem("privateSubnetIds", "is required: at least one private subnet of vpcId")
    for subnet in subnets:
        if not re.fullmatch(r"subnet-[0-9a-f]{8,17}", subnet):
            r.problem("privateSubnetIds", f"must hold subnet ids (subnet-...), got {subnet!r}")
    groups = r.strings("ollamaAllowedSecurityGroupIds")
    for group in groups:
        if not re.fullmatch(r"sg-[0-9a-f]{8,17}", group):
            r.problem("ollamaAllowedSecurityGroupIds", f"must hold security group ids (sg-...), got {group!r}")
    cidrs = r.strings("ollamaAllowedCidrs")
    for cidr in cidrs:
        try:
            network = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError:
            # IPv6 too: the ingress rule is IPv4 (cidr_ipv4), and EC2 would refuse it only at `pulumi up`.
            r.problem("ollamaAllowedCidrs", f"must hold IPv4 CIDR ranges like 10.20.0.0/16, got {cidr!r}")
            continue
        # Ollama's API has no authentication, and whoever reaches it can replace a tag: only an
        # RFC 1918 range, and none wider than a /16 (10.0.0.0/8 admitted a whole corporate network).
        if not any(network.subnet_of(block) for block in RFC1918_BLOCKS):
            r.problem(
                "ollamaAllowedCidrs",
                f"{cidr} is not within 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16: Ollama's API has no authentication",
            )
        elif network.prefixlen < OLLAMA_CIDR_MIN_PREFIX:
            r.problem(
                "ollamaAllowedCidrs",
                f"{cidr} is wider than a /{OLLAMA_CIDR_MIN_PREFIX}: name the clients' own range (Ollama's API has no authentication)",
            )
    return NetworkConfig(vpc_id, subnets, groups, cidrs, r.boolean("createVpcEndpoints"))


def _dataset(r: _Reader) -> DatasetConfig:
    secret = r.text("databaseSecretArn")
    if not secret:
        r.problem(
            "databaseSecretArn",
            "is required: the Secrets Manager secret with the database connection (the password never goes into the Lambda's environment)",
        )
    elif not SECRET_ARN.fullmatch(secret):
        r.problem("databaseSecretArn", f"must be a Secrets Manager secret ARN, got {secret!r}")
    group = r.optional("databaseSecurityGroupId")
    if group and not re.fullmatch(r"sg-[0-9a-f]{8,17}", group):
        r.problem("databaseSecurityGroupId", f"must be a security group id (sg-...), got {group!r}")
    in_vpc = r.boolean("datasetInVpc")
    if group and not in_vpc:
        r.problem("databaseSecurityGroupId", "needs datasetInVpc true: a Lambda outside the VPC has no security group")
    seeds = r.text("seedProfilesUri")
    if not seeds:
        r.problem(
            "seedProfilesUri",
            "is required: an s3:// text file with one twitter_id of a known researcher per line "
            "(the seed gates score those profiles; nothing else says who they are)",
        )
    elif not re.fullmatch(r"s3://[a-z0-9.-]{3,63}/.+[^/]", seeds):
        r.problem("seedProfilesUri", f"must be an s3:// URI of one object, got {seeds!r}")
    secret_key = r.optional("databaseSecretKmsKeyArn")
    if secret_key and not KMS_ARN.fullmatch(secret_key):
        r.problem("databaseSecretKmsKeyArn", f"must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>), got {secret_key!r}")
    ssl_mode = r.text("databaseSslMode")
    if ssl_mode not in contracts.DATABASE_SSL_MODES:
        r.problem("databaseSslMode", f"must be one of {', '.join(contracts.DATABASE_SSL_MODES)}, got {ssl_mode!r}")
    return DatasetConfig(
        secret,
        in_vpc,
        group,
        r.integer("databasePort", 1, 65535),
        seeds,
        r.integer("minSeedProfiles", contracts.MIN_SEED_SAMPLE, 100_000),
        r.integer("minRows", contracts.MIN_HOLDOUT_PROFILES, 100_000_000),
        ssl_mode,
        secret_key,
    )


def _images(r: _Reader) -> ImagesConfig:
    uris = {}
    for key in ("trainingImageUri", "conversionImageUri"):
        uri = uris[key] = r.optional(key)
        if uri and not ECR_IMAGE.fullmatch(uri):
            r.problem(
                key,
                "must be an ECR image pinned by digest (<account>.dkr.ecr.<region>.amazonaws.com/<repo>@sha256:<64 hex>; "
                f"`aws ecr describe-images` shows the digest), got {uris[key]!r}",
            )
    return ImagesConfig(uris["trainingImageUri"], uris["conversionImageUri"])


def _training(r: _Reader) -> TrainingConfig:
    instance_type = r.text("trainingInstanceType")
    if not contracts.is_training_gpu_instance(instance_type):
        families = ", ".join(contracts.TRAINING_INSTANCE_FAMILIES)
        r.problem("trainingInstanceType", f"must be a SageMaker GPU instance of {families} (e.g. ml.g4dn.xlarge), got {instance_type!r}")
    max_runtime = r.integer("trainingMaxRuntimeSeconds", 600, MAX_TRAINING_SECONDS)
    max_wait = r.integer("trainingMaxWaitSeconds", 600, MAX_TRAINING_SECONDS)
    if max_wait < max_runtime:
        r.problem("trainingMaxWaitSeconds", f"must be at least trainingMaxRuntimeSeconds ({max_runtime}), got {max_wait}")
    prefix = r.text("trainingJobPrefix")
    if not contracts.TRAINING_JOB_PREFIX_PATTERN.fullmatch(prefix):
        r.problem(
            "trainingJobPrefix",
            f"must be 1-26 lowercase letters, digits or single '-' (training job names are "
            f"<prefix>-<run id, shortened>-<hash>, at most 63), got {prefix!r}",
        )
    base_model = r.optional("baseModelS3Uri")
    if base_model and not re.fullmatch(r"s3://[a-z0-9.-]{3,63}/.+", base_model):
        r.problem("baseModelS3Uri", f"must be s3://<bucket>/<prefix>, got {base_model!r}")
    overrides = _hyperparameters(r)
    poll_seconds = r.integer("trainingPollSeconds", 30, 3600)
    least_poll = asl.least_training_poll_seconds(max_wait)
    if poll_seconds < least_poll:
        r.problem(
            "trainingPollSeconds",
            f"{poll_seconds} s would poll a job that waits trainingMaxWaitSeconds ({max_wait}) about {max_wait // poll_seconds} times, "
            f"{asl.EVENTS_PER_TRAINING_POLL} history events each: past Step Functions' {asl.HISTORY_EVENT_LIMIT:,} events per execution, "
            f"which ends the run; at least {least_poll} with this trainingMaxWaitSeconds",
        )
    return TrainingConfig(
        base_model.rstrip("/") + "/" if base_model else None,
        instance_type,
        r.integer("trainingVolumeSizeGb", MIN_TRAINING_VOLUME_GB, MAX_TRAINING_VOLUME_GB),
        max_runtime,
        max_wait,
        prefix,
        overrides,
        poll_seconds,
    )


def _hyperparameters(r: _Reader) -> dict[str, str]:
    text = r.text("trainingHyperparameters") or "{}"
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        r.problem("trainingHyperparameters", f"must be a JSON object: {exc}")
        return {}
    if not isinstance(values, dict):
        r.problem("trainingHyperparameters", f"must be a JSON object, got {text!r}")
        return {}
    overrides = {name: value if isinstance(value, str) else json.dumps(value) for name, value in values.items()}
    try:
        hyperparameters.parse(overrides)  # the training container's own check, at `pulumi up`
    except InvalidArgument as exc:
        r.problem("trainingHyperparameters", str(exc))
    return overrides


def _host(r: _Reader) -> HostConfig:
    instance_type = r.text("ollamaInstanceType")
    if instance_type.split(".")[0] not in HOST_INSTANCE_FAMILIES or instance_type.count(".") != 1:
        r.problem(
            "ollamaInstanceType",
            f"must be an EC2 GPU instance of {', '.join(HOST_INSTANCE_FAMILIES)} (e.g. g4dn.xlarge), got {instance_type!r}",
        )
    ami_parameter = r.text("ollamaAmiParameter")
    if not ami_parameter.startswith("/"):
        r.problem("ollamaAmiParameter", f"must be an SSM parameter name starting with '/', got {ami_parameter!r}")
    archive_sha256 = r.text("ollamaArchiveSha256")
    keep_running = r.boolean("keepHostRunning")
    idle_minutes = r.integer("hostIdleStopMinutes", contracts.HOST_IDLE_STOP_MIN_MINUTES, 1440)
    ollama = OllamaHostSettings(
        version=r.text("ollamaVersion"),
        archive_url=r.text("ollamaArchiveUrl"),
        archive_sha256=archive_sha256,
        idle_stop_minutes=0 if keep_running else idle_minutes,  # an always-on host never stops itself
    )
    if not archive_sha256:
        # Root unpacks the archive into /usr/local: the host installs only the archive named here.
        r.problem(
            "ollamaArchiveSha256",
            "is required: the sha256 of the Ollama archive the host installs (for a GitHub release, its line "
            "in https://github.com/ollama/ollama/releases/download/v<ollamaVersion>/sha256sum.txt; for a staged copy, "
            "sha256sum of that file)",
        )
    else:
        try:
            ollama.values()
        except UserDataError as exc:
            r.problem("ollamaVersion/ollamaArchiveUrl/ollamaArchiveSha256", str(exc))
    return HostConfig(
        instance_type,
        ami_parameter,
        r.integer("ollamaRootVolumeGb", MIN_HOST_VOLUME_GB, MAX_HOST_VOLUME_GB),
        ollama,
        keep_running,
    )


def _serving(r: _Reader) -> ModelServingConfig:
    name = r.text("modelName")
    if not MODEL_NAME.fullmatch(name):
        r.problem("modelName", f"must be an Ollama model name (lowercase letters, digits, '.', '_', '-'), got {name!r}")
    gates = {rule.name: r.threshold(rule) for rule in contracts.GATES}
    quantization = r.text("quantization").lower()
    if quantization not in QUANTIZATIONS:
        r.problem("quantization", f"must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    memory = r.integer("conversionMemoryMb", 128, contracts.LAMBDA_MAX_MEMORY_MB)
    if memory < contracts.CONVERSION_MIN_MEMORY_MB:
        r.problem(
            "conversionMemoryMb",
            f"{memory} MB gives the conversion Lambda {contracts.lambda_vcpus(memory):.1f} vCPUs: the Mistral-7B export would not "
            f"finish within {contracts.LAMBDA_MAX_TIMEOUT_S} s (pipeline/gguf/budget.py refuses it); at least "
            f"{contracts.CONVERSION_MIN_MEMORY_MB}, {contracts.LAMBDA_MAX_MEMORY_MB} recommended. An account held to "
            f"{contracts.NEW_ACCOUNT_LAMBDA_MEMORY_MB:,} MB asks AWS Support to raise it (docs/deploy.md, Prerequisites)",
        )
    share = r._float("customModelShare")
    if share is not None and not 0 <= share <= 100:
        r.problem("customModelShare", f"must be a percentage from 0 to 100, got {share:g}")
    audit = r._float("teacherAuditShare")
    if audit is not None and not 0 <= audit <= 100:
        r.problem("teacherAuditShare", f"must be a percentage from 0 to 100, got {audit:g}")
    drop = r._float("shadowDropAlert")
    if drop is not None and not 0 <= drop <= 2:
        r.problem("shadowDropAlert", f"must be within [0, 2] (Pearson points), got {drop:g}")
    return ModelServingConfig(
        name,
        gates,
        r.integer("validationConcurrency", 1, 32),
        quantization,
        memory,
        share if share is not None else 0.0,
        drop if drop is not None else 0.05,
        audit if audit is not None else 5.0,
    )


def _schedule(r: _Reader) -> ScheduleConfig:
    expression = r.text("scheduleExpression")
    match = CRON.fullmatch(expression)
    fields_ = match.group("fields").split() if match else []
    if len(fields_) != 6 or not all(CRON_FIELD.fullmatch(part) for part in fields_):
        r.problem(
            "scheduleExpression",
            f"must be cron(minutes hours day-of-month month day-of-week year), e.g. cron(0 3 ? * MON *), got {expression!r}",
        )
    elif (fields_[2] == "?") == (fields_[4] == "?"):
        r.problem("scheduleExpression", f"needs '?' in exactly one of day-of-month and day-of-week, got {expression!r}")
    timezone = r.text("scheduleTimezone")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        r.problem("scheduleTimezone", f"must be an IANA time zone such as UTC or Europe/Berlin, got {timezone!r}")
    return ScheduleConfig(expression, timezone, r.boolean("scheduleEnabled"))


def _alert_email(r: _Reader) -> str | None:
    email = r.optional("alertEmail")
    if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        r.problem("alertEmail", f"must be an email address, got {email!r}")
    return email


REFERENCE_BEGIN, REFERENCE_END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"


def reference_markdown() -> str:
    """The README's configuration reference, generated from Pulumi.yaml's block (scripts/config_reference.py)."""

    def cell(value: Any) -> str:
        text = json.dumps(value) if isinstance(value, (list, bool)) else str(value)
        return (f"`{text}`" if text not in ("", '""') else '`""`').replace("|", "\\|")

    lines = ["| setting | type | default | what it is |", "| --- | --- | --- | --- |"]
    for key, spec in declared().items():
        lines.append(f"| `{key}` | {spec['type']} | {cell(spec['default'])} | {spec['description'].replace('|', '/')} |")
    return "\n".join(lines)
