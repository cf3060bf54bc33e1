import json

import pulumi

from infra.config import StorageConfig

CONFIG = StorageConfig(
    checkpoint_retention_days=14, gguf_retention_days=30, noncurrent_version_retention_days=90, incomplete_upload_days=2, kms_key_arn=None
)


def build(config=CONFIG):
    from infra.storage import ArtifactStorage, ArtifactStorageArgs

    return ArtifactStorage("artifacts", ArtifactStorageArgs(config))


def children_done(storage):
    return pulumi.Output.all(
        storage.bucket.id,
        storage.public_access_block.id,
        storage.encryption.id,
        storage.versioning.id,
        storage.lifecycle.id,
        storage.policy.id,
        storage.ownership.id,
    )


@pulumi.runtime.test
def test_bucket_is_private_encrypted_versioned(mocks):
    storage = build()

    def check(_):
        [block] = mocks.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
        assert all(
            block.inputs[flag] is True for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        )
        [encryption] = mocks.of_type("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
        assert encryption.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
        [versioning] = mocks.of_type("aws:s3/bucketVersioning:BucketVersioning")
        assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"
        [ownership] = mocks.of_type("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
        assert ownership.inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced"

    return children_done(storage).apply(check)


@pulumi.runtime.test
def test_every_resource_is_a_child_of_the_component(mocks):
    storage = build()
    children = [
        storage.bucket,
        storage.public_access_block,
        storage.encryption,
        storage.versioning,
        storage.lifecycle,
        storage.policy,
        storage.ownership,
    ]

    def check(urns):
        assert all("researcher-scorer:storage:ArtifactStorage$aws:s3/" in urn for urn in urns), urns

    return pulumi.Output.all(*[child.urn for child in children]).apply(check)


@pulumi.runtime.test
def test_kms_key_is_used_when_configured(mocks):
    key = "arn:aws:kms:us-east-1:123456789012:key/abcd"
    storage = build(StorageConfig(14, 30, 90, 2, key))

    def check(_):
        [encryption] = mocks.of_type("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
        default = encryption.inputs["rules"][0]["applyServerSideEncryptionByDefault"]
        assert default == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key}

    return children_done(storage).apply(check)


@pulumi.runtime.test
def test_policy_denies_every_request_without_tls(mocks):
    storage = build()

    def check(_):
        [policy] = mocks.of_type("aws:s3/bucketPolicy:BucketPolicy")
        [statement] = json.loads(policy.inputs["policy"])["Statement"]
        assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert statement["Resource"] == ["arn:aws:s3:::artifacts-bucket-abc123", "arn:aws:s3:::artifacts-bucket-abc123/*"]

    return children_done(storage).apply(check)


@pulumi.runtime.test
def test_lifecycle_aborts_uploads_and_expires_checkpoints_and_old_versions(mocks):
    storage = build()

    def check(_):
        [lifecycle] = mocks.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
        rules = {rule["id"]: rule for rule in lifecycle.inputs["rules"]}
        assert rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 2}
        assert rules["expire-training-checkpoints"]["filter"] == {"prefix": "checkpoints/"}
        assert rules["expire-training-checkpoints"]["expiration"] == {"days": 14}
        assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"] == {"noncurrentDays": 90}
        assert all(rule["status"] == "Enabled" for rule in rules.values())

    return children_done(storage).apply(check)


@pulumi.runtime.test
def test_old_run_gguf_files_expire_by_their_retention_tag(mocks):
    from pipeline import contracts

    storage = build()

    def check(_):
        [lifecycle] = mocks.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
        rule = {rule["id"]: rule for rule in lifecycle.inputs["rules"]}["expire-old-run-gguf-files"]
        # The tag the pipeline writes (tests/pipeline/serving/test_lifecycle.py shows who carries it).
        assert rule["filter"] == {"tag": {"key": contracts.RETENTION_TAG, "value": contracts.RETENTION_EXPIRING}}
        assert rule["expiration"] == {"days": 30} and rule["status"] == "Enabled"

    return children_done(storage).apply(check)
