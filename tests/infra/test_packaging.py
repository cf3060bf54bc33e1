"""Lambda packaging: real pip builds of Linux wheels for the Lambda runtime, cached by content."""

from __future__ import annotations

import subprocess

import pytest

from infra import packaging


@pytest.fixture(scope="module")
def dataset_layer():
    return packaging.dependency_layer(packaging.ROOT / "requirements" / "dataset.txt")


def test_dataset_layer_holds_linux_psycopg2_for_the_lambda_runtime(dataset_layer):
    site = dataset_layer / "python"
    assert list((site / "psycopg2").glob("_psycopg.cpython-312-x86_64-linux-gnu.so")), "the manylinux cp312 wheel"
    assert (site / "psycopg2_binary-2.9.13.dist-info").is_dir()
    assert (site / "aws_lambda_powertools").is_dir() and (site / "smart_open").is_dir()
    assert not list(site.glob("boto3*")) and not list(site.glob("botocore*")), "left to the runtime"
    assert not list(site.rglob("__pycache__"))


def test_a_built_layer_is_reused_without_running_pip(dataset_layer, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("pip ran again")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert packaging.dependency_layer(packaging.ROOT / "requirements" / "dataset.txt") == dataset_layer


def test_pip_failure_is_a_named_error(tmp_path):
    requirements = tmp_path / "broken.txt"
    requirements.write_text("definitely-not-a-package-researcher-scorer==0.0.1\n")
    with pytest.raises(packaging.PackagingError, match="cannot build the Lambda layer for broken.txt"):
        packaging.dependency_layer(requirements)
    assert not list(packaging.BUILD_DIR.glob("layer-broken-*")), "no half-built layer is left to be reused"


def test_code_directory_holds_the_handlers_and_pipeline_only():
    code = packaging.code_directory()
    for stage in ("generate_dataset", "validate_data", "deploy_model", "validate_model", "promote_model", "rollback_model"):
        assert (code / "lambdas" / stage / "handler.py").is_file(), stage
    assert (code / "pipeline" / "prompt.py").is_file() and (code / "pipeline" / "dataset" / "schema.sql").is_file()
    assert not list(code.rglob("__pycache__")) and not list(code.rglob("Dockerfile"))
    assert sorted(path.name for path in code.iterdir()) == [".complete", "lambdas", "pipeline"]


def test_image_tag_follows_the_source():
    tag = packaging.source_tag("training_image/Dockerfile")
    assert tag.startswith("src-") and tag == packaging.source_tag("training_image/Dockerfile")
    assert tag != packaging.source_tag("lambdas/convert_to_gguf/Dockerfile")
