"""The stack's configuration, read once into a typed object; bad values fail `pulumi up` early."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

# Days, bounded so that a typo (3650 for 30) fails loudly instead of keeping data for a decade.
MAX_RETENTION_DAYS = 3650


@dataclass(frozen=True)
class StorageConfig:
    checkpoint_retention_days: int
    noncurrent_version_retention_days: int
    incomplete_upload_days: int
    kms_key_arn: str | None


@dataclass(frozen=True)
class StackConfig:
    storage: StorageConfig


def _days(config: pulumi.Config, key: str, default: int) -> int:
    value = config.get_int(key)
    value = default if value is None else value
    if not 1 <= value <= MAX_RETENTION_DAYS:
        raise pulumi.RunError(f"config {config.name}:{key} must be between 1 and {MAX_RETENTION_DAYS} days, got {value}")
    return value


def load() -> StackConfig:
    config = pulumi.Config()
    kms_key_arn = config.get("kmsKeyArn") or None
    if kms_key_arn is not None and not kms_key_arn.startswith("arn:aws"):
        raise pulumi.RunError(f"config {config.name}:kmsKeyArn must be a KMS key ARN, got {kms_key_arn!r}")
    return StackConfig(
        storage=StorageConfig(
            checkpoint_retention_days=_days(config, "checkpointRetentionDays", 14),
            noncurrent_version_retention_days=_days(config, "noncurrentVersionRetentionDays", 90),
            incomplete_upload_days=_days(config, "incompleteUploadDays", 2),
            kms_key_arn=kms_key_arn,
        )
    )
