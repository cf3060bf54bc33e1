"""The whole Pulumi program (__main__.py) under mocks, as `pulumi up` would run it."""

import runpy
from pathlib import Path

import pulumi

PROGRAM = Path(__file__).resolve().parents[2] / "__main__.py"


@pulumi.runtime.test
def test_program_declares_the_artifact_bucket_with_its_protections(mocks):
    pulumi.runtime.set_all_config({})
    namespace = runpy.run_path(str(PROGRAM))
    storage = namespace["storage"]

    def check(_):
        types = {resource.typ for resource in mocks.resources}
        assert {"aws:s3/bucket:Bucket", "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                "aws:s3/bucketPolicy:BucketPolicy", "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"} <= types

    return pulumi.Output.all(storage.bucket.id, storage.policy.id, storage.lifecycle.id).apply(check)


def test_pulumi_yaml_declares_every_setting_the_program_reads():
    import yaml

    declared = yaml.safe_load((PROGRAM.parent / "Pulumi.yaml").read_text())["config"]
    read = ("checkpointRetentionDays", "noncurrentVersionRetentionDays", "incompleteUploadDays", "kmsKeyArn")
    for key in read:
        entry = declared[f"researcher-scorer:{key}"]
        assert {"type", "default", "description"} <= set(entry)
    example = yaml.safe_load((PROGRAM.parent / "Pulumi.dev.yaml").read_text())["config"]
    assert {f"researcher-scorer:{key}" for key in read} <= set(example)
