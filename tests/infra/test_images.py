"""The image builds' context: what the Dockerfiles COPY is exactly what .dockerignore lets through."""

from __future__ import annotations

import re

import pytest

from infra import images, packaging

DOCKERIGNORE = packaging.ROOT / ".dockerignore"


def allowed() -> set[str]:
    return {line[1:].strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}


@pytest.mark.parametrize("source", [images.TRAINING, images.CONVERSION], ids=lambda s: s.key)
def test_every_copied_path_is_in_the_build_context(source):
    dockerfile = (packaging.ROOT / source.dockerfile).read_text()
    copied = [
        part for line in dockerfile.splitlines() if line.startswith("COPY ") for part in line.split()[1:-1] if not part.startswith("--")
    ]
    assert copied
    for path in copied:
        assert (packaging.ROOT / path).exists(), path
        assert path.split("/")[0] in allowed(), f"{path} is not in .dockerignore's allow-list"


def test_context_is_an_allow_list_matching_the_image_tag_sources():
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "everything else (.venv, runs, .build) stays out of the build context"
    assert allowed() == set(packaging.IMAGE_SOURCES)
    assert not any(re.match(r"!\.?(venv|runs|build)", line) for line in lines)


def test_images_are_built_in_process_where_the_provider_turns_provenance_off(deploy):
    """pulumi-docker-build's in-process buildx sets no default provenance attestation (its
    provider/internal/client.go); exec mode would let buildx add one and push an OCI index, which
    Lambda refuses. Both images are declared with exec off and pushed for linux/amd64 only."""
    images = deploy().all("docker-build:index:Image")
    assert len(images) == 2
    for image in images:
        assert image.inputs.get("exec") is False, image.name
        assert image.inputs["platforms"] == ["linux/amd64"] and image.inputs["push"] is True


def test_each_repository_keeps_the_image_in_use_and_the_one_before(deploy):
    """ECR storage is billed per GB-month and a training image is ~8 GB: two kept per repository."""
    import json

    policies = deploy().all("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert len(policies) == 2
    for policy in policies:
        (rule,) = json.loads(policy.inputs["policy"])["rules"]
        assert rule["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2}
        assert rule["action"] == {"type": "expire"}
