"""ConvertToGGUF as its container image runs it: the task root laid out by the Dockerfile's own
COPY lines, the handler named by its CMD, and Python packages from requirements/convert.txt alone
(a python3.12 environment `make test` builds, as the image's pip install does) — invoked in a fresh
interpreter against moto in server mode.

Not rehearsed: the image build itself (no Docker daemon in CI) and Amazon Linux's system libraries;
the Dockerfile's instructions that matter to Python (COPY, CMD, the requirements file) are read from it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pipeline import contracts, storage
from tests.deploy_rehearsal.conftest import create_bucket, lambda_environment
from tests.deploy_rehearsal.lambda_runtime import ROOT, DeployedFunction, RehearsalSetupMissing

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

DOCKERFILE = ROOT / "lambdas" / "convert_to_gguf" / "Dockerfile"
CONVERT_VENV = ROOT / ".build" / "convert-venv"


def image_task_root(target: Path) -> tuple[Path, str]:
    """${LAMBDA_TASK_ROOT} as the Dockerfile's COPY lines fill it, and the CMD's handler."""
    text = DOCKERFILE.read_text()
    copies = re.findall(r"^COPY[ \t]+((?:\S+[ \t]+)+)\$\{LAMBDA_TASK_ROOT\}/(\S*)[ \t]*$", text, re.M)
    assert copies, "the Dockerfile copies the code into ${LAMBDA_TASK_ROOT}"
    # What .dockerignore keeps out of the build context (demo code, caches) never reaches the image.
    ignored = shutil.ignore_patterns("__pycache__", "*.pyc", "local")
    assert "pipeline/local/" in (ROOT / ".dockerignore").read_text().splitlines()
    for sources, destination in copies:
        for source in sources.split():
            source_path = ROOT / source
            destination_path = target / destination
            if destination.endswith("/") and source_path.is_file():
                destination_path = destination_path / source_path.name
            if source_path.is_dir():
                shutil.copytree(source_path, destination_path, ignore=ignored)
            else:
                destination_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source_path, destination_path)
    [handler] = re.findall(r'^CMD \["([^"]+)"\]', text, re.M)
    assert "/tmp/convert.txt" in text and "requirements/convert.txt" in text  # the environment built below
    return target, handler


@pytest.fixture(scope="module")
def conversion_function(tmp_path_factory) -> DeployedFunction:
    python = CONVERT_VENV / "bin" / "python"
    site = sorted(CONVERT_VENV.glob("lib/python3.*/site-packages"))
    if not python.is_file() or not site:
        raise RehearsalSetupMissing(f"{CONVERT_VENV} is missing: run `make test` (it builds it from requirements/convert.txt)")
    task_root, handler = image_task_root(tmp_path_factory.mktemp("convert-task-root"))
    return DeployedFunction(
        name="convert-to-gguf",
        handler=handler,
        environment={"POWERTOOLS_SERVICE_NAME": "convert-to-gguf"},
        memory_mb=10_240,
        timeout_s=900,
        task_root=task_root,
        layer_roots=[],
        python=str(python),
        runtime_root=site[0],
    )


def test_the_image_converts_an_adapter_from_s3_to_a_tagged_gguf(conversion_function, aws_world, tmp_path):
    from tests.factories import tiny_model_with_adapter

    base, adapter, _ = tiny_model_with_adapter(tmp_path / "models", layers=2, seed=4)
    bucket = "artifacts-rehearsal"
    create_bucket(bucket)
    for directory, prefix in ((base, "base-model"), (adapter, "runs/run-1/training/job/output/model")):
        for path in directory.iterdir():
            if path.is_file():
                storage.write_bytes(f"s3://{bucket}/{prefix}/{path.name}", path.read_bytes())
    for name in ("tokenizer.model", "tokenizer_config.json"):  # the trainer leaves them beside the adapter
        if (base / name).is_file():
            storage.write_bytes(f"s3://{bucket}/runs/run-1/training/job/output/model/{name}", (base / name).read_bytes())
    out_uri = f"s3://{bucket}/runs/run-1/model.gguf"
    answer = conversion_function.invoke(
        {
            "base_model_uri": f"s3://{bucket}/base-model",
            "adapter_uri": f"s3://{bucket}/runs/run-1/training/job/output/model",
            "out_uri": out_uri,
            "quantization": "q8_0",
        },
        lambda_environment(aws_world),
        tmp_path,
    )
    assert "result" in answer, answer
    assert answer["result"]["out_uri"] == out_uri and answer["result"]["quantization"] == "q8_0"
    assert storage.read_bytes(out_uri)[:4] == b"GGUF" and storage.size_of(out_uri) == answer["result"]["size"]
    assert storage.get_tags(out_uri) == {contracts.RETENTION_TAG: contracts.RETENTION_EXPIRING}


def test_the_image_refuses_a_non_s3_uri_by_name(conversion_function, aws_world, tmp_path):
    answer = conversion_function.invoke(
        {"base_model_uri": "/etc", "adapter_uri": "s3://b/a", "out_uri": "s3://b/o"}, lambda_environment(aws_world), tmp_path
    )
    assert answer["errorType"] == "InvalidArgument" and "base_model_uri" in answer["errorMessage"]
