"""The Pulumi program: wires the components of infra/ and exports what operators need."""

import pulumi

from infra import config as stack_config
from infra.storage import ArtifactStorage, ArtifactStorageArgs

config = stack_config.load()
storage = ArtifactStorage("artifacts", ArtifactStorageArgs(config.storage))

pulumi.export("artifact_bucket", storage.bucket.bucket)
