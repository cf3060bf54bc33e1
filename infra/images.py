"""Container images: the SageMaker training image and the GGUF conversion Lambda's image.

Built from this repository and pushed at `pulumi up` (pulumi-docker-build, linux/amd64, pinned by
digest), each into an ECR repository of this stack; or, where config names a prebuilt URI, used as
given and nothing is built."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from infra import packaging
from infra.config import ImagesConfig

# Untagged layers of superseded pushes are expired; the image in use and the one before it stay
# (a stack rollback needs no more: `pulumi up` rebuilds from source). Each kept training image is
# ~8 GB of ECR storage at $0.10/GB-month (docs/deploy.md's cost table).
KEEP_IMAGES = 2


@dataclass(frozen=True)
class ImageSource:
    key: str  # "training" / "conversion"
    dockerfile: str  # relative to the repository root, which is the build context
    description: str


TRAINING = ImageSource("training", "training_image/Dockerfile", "SageMaker training image (LoRA/QLoRA)")
CONVERSION = ImageSource("conversion", "lambdas/convert_to_gguf/Dockerfile", "ConvertToGGUF Lambda image")


@dataclass
class ContainerImagesArgs:
    config: ImagesConfig
    kms_key_arn: str | None


class ContainerImages(pulumi.ComponentResource):
    """``training_image_uri`` and ``conversion_image_uri``: digest-pinned references."""

    def __init__(self, name: str, args: ContainerImagesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("researcher-scorer:images:ContainerImages", name, None, opts)
        self.repositories: dict[str, aws.ecr.Repository] = {}
        self.training_image_uri = self._image(name, TRAINING, args.config.training_image_uri, args.kms_key_arn)
        self.conversion_image_uri = self._image(name, CONVERSION, args.config.conversion_image_uri, args.kms_key_arn)
        self.register_outputs(
            {
                "training_image_uri": self.training_image_uri,
                "conversion_image_uri": self.conversion_image_uri,
                "repositories": {key: repo.repository_url for key, repo in self.repositories.items()},
            }
        )

    def _image(self, name: str, source: ImageSource, prebuilt: str | None, kms_key_arn: str | None) -> pulumi.Output[str]:
        if prebuilt:
            return pulumi.Output.from_input(prebuilt)
        child = pulumi.ResourceOptions(parent=self)
        repository = aws.ecr.Repository(
            f"{name}-{source.key}",
            image_tag_mutability="MUTABLE",  # the image is referenced by digest (image.ref), not tag
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS" if kms_key_arn else "AES256", kms_key=kms_key_arn)
            ],
            force_delete=False,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-{source.key}-lifecycle",
            repository=repository.name,
            policy=json.dumps(
                {
                    "rules": [
                        {
                            "rulePriority": 1,
                            "description": f"keep the last {KEEP_IMAGES} images",
                            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEEP_IMAGES},
                            "action": {"type": "expire"},
                        }
                    ]
                }
            ),
            opts=pulumi.ResourceOptions(parent=repository),
        )
        self.repositories[source.key] = repository
        token = aws.ecr.get_authorization_token_output(registry_id=repository.registry_id)
        # Tagged by the hash of the files the image is built from, for tracing an image to its source.
        image = docker_build.Image(
            f"{name}-{source.key}-image",
            context=docker_build.BuildContextArgs(location=str(packaging.ROOT)),
            dockerfile=docker_build.DockerfileArgs(location=str(packaging.ROOT / source.dockerfile)),
            platforms=[docker_build.Platform.LINUX_AMD64],
            push=True,
            # In-process buildx (not exec mode): the provider turns buildx's default provenance
            # attestation off there (provider/internal/client.go, Attests provenance nil), so the push is
            # one image manifest, not the OCI index that Lambda refuses. Exec mode would not.
            exec_=False,
            tags=[repository.repository_url.apply(lambda url: f"{url}:{packaging.source_tag(source.dockerfile)}")],
            # Credentials are per registry host (<account>.dkr.ecr.<region>.amazonaws.com), not per repository.
            registries=[
                docker_build.RegistryArgs(
                    address=repository.repository_url.apply(lambda url: url.split("/", 1)[0]),
                    username=token.user_name,
                    password=token.password,
                )
            ],
            opts=pulumi.ResourceOptions(parent=repository),
        )
        # Not image.ref: the provider makes it `repo:tag@sha256:…` (pulumi-docker-build image.go, addDigest;
        # its issue #571), which Lambda's CreateFunction refuses ("Source image … is not valid").
        return pulumi.Output.concat(repository.repository_url, "@", image.digest)
