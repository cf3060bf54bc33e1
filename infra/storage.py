"""The artifact bucket: datasets, base model, adapters, GGUF files, reports, the model pointer."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra import iam
from infra.config import StorageConfig
from pipeline.contracts import CHECKPOINTS_DIR, RETENTION_EXPIRING, RETENTION_TAG, RUN_GGUF_KEY

# Training checkpoints (managed spot) live under this prefix so that one lifecycle rule expires them.
CHECKPOINTS_PREFIX = f"{CHECKPOINTS_DIR}/"


class ArtifactStorageArgs:
    def __init__(self, config: StorageConfig):
        self.config = config


class ArtifactStorage(pulumi.ComponentResource):
    """Private, encrypted, versioned, TLS-only S3 bucket with expiry of what is disposable."""

    def __init__(self, name: str, args: ArtifactStorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:storage:ArtifactStorage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config = args.config

        self.bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=False, opts=child)
        self.ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        # SSE-KMS with the configured key, else S3-managed keys (SSE-S3).
        encryption_default = aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
            sse_algorithm="aws:kms" if config.kms_key_arn else "AES256",
            kms_master_key_id=config.kms_key_arn or None,
        )
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=self.bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=encryption_default, bucket_key_enabled=True
                )
            ],
            opts=child,
        )
        # Versioning: an overwritten or deleted model pointer or GGUF can be recovered.
        self.versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=self.bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        self.lifecycle = aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=self.bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-multipart-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=config.incomplete_upload_days
                    ),
                ),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-training-checkpoints",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=CHECKPOINTS_PREFIX),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=config.checkpoint_retention_days),
                ),
                # Old runs' GGUFs (~4.4 GB each). Promotion re-tags production's and its restore
                # point's, so those two never match (pipeline/serving/lifecycle.py).
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-old-run-gguf-files",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(
                        tag=aws.s3.BucketLifecycleConfigurationRuleFilterTagArgs(key=RETENTION_TAG, value=RETENTION_EXPIRING)
                    ),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=config.gguf_retention_days),
                ),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-noncurrent-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=config.noncurrent_version_retention_days
                    ),
                ),
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.versioning]),
        )
        self.policy = aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=self.bucket.id,
            policy=self.bucket.arn.apply(tls_only_policy),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.public_access_block]),
        )
        self.register_outputs({"bucket_name": self.bucket.bucket, "bucket_arn": self.bucket.arn})


def gguf_retention_tagging(bucket_arn: str) -> iam.Statement:
    """Setting a run GGUF's retention tag (ConvertToGGUF marks it expiring, PromoteModel re-tags)."""
    return iam.Statement("GgufRetentionTag", ["s3:PutObjectTagging", "s3:GetObjectTagging"], [f"{bucket_arn}/{RUN_GGUF_KEY}"])


def tls_only_policy(bucket_arn: str) -> str:
    """Deny every request to the bucket that does not use TLS."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )
