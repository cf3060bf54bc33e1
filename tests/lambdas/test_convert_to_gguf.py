"""The ConvertToGGUF Lambda over moto S3, with the real exporter."""

import json
from pathlib import Path

import boto3
import pytest

from lambdas.convert_to_gguf import handler as convert
from pipeline import storage
from pipeline.errors import InvalidArgument
from pipeline.gguf.budget import ModelTooLargeForLambda
from tests.pipeline.gguf.conftest import models  # noqa: F401  (session fixture)

ROOT = Path(__file__).resolve().parents[2]


class Context:
    function_name = "convert-to-gguf"
    memory_limit_in_mb = 10240
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:convert-to-gguf"
    aws_request_id = "request-1"

    def __init__(self, remaining_ms: int = 900_000):
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def uploaded(models, bucket):  # noqa: F811
    s3 = boto3.client("s3")
    for local, prefix in ((models.base, "models/base"), (models.adapter, "runs/r1/adapter")):
        for path in local.iterdir():
            if path.is_file():
                s3.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return {
        "base_model_uri": f"s3://{bucket}/models/base",
        "adapter_uri": f"s3://{bucket}/runs/r1/adapter",
        "out_uri": f"s3://{bucket}/runs/r1/model.gguf",
    }


def test_converts_and_returns_the_description(uploaded):
    result = convert.handler({**uploaded, "quantization": "q8_0"}, Context())
    assert result["quantization"] == "q8_0" and result["out_uri"] == uploaded["out_uri"]
    assert json.loads(storage.read_bytes(f"{uploaded['out_uri']}.json"))["sha256"] == result["sha256"]
    assert len(json.dumps(result)) < 4096


def test_refuses_up_front_what_cannot_finish_in_time(uploaded):
    with pytest.raises(ModelTooLargeForLambda, match="estimated"):
        convert.handler(uploaded, Context(remaining_ms=convert.RESERVE_SECONDS * 1000 + 100))
    assert not storage.exists(uploaded["out_uri"])


@pytest.mark.parametrize("change", [{"out_uri": "/tmp/model.gguf"}, {"base_model_uri": None}, {"quantization": "q2_k"}])
def test_malformed_events_are_named_errors(uploaded, change):
    with pytest.raises(InvalidArgument):
        convert.handler({**uploaded, **change}, Context())


def test_image_builds_llama_cpp_portably_and_runs_the_handler():
    dockerfile = (ROOT / "lambdas" / "convert_to_gguf" / "Dockerfile").read_text()
    assert "-DGGML_NATIVE=OFF" in dockerfile and "requirements/convert.txt" in dockerfile
    assert 'CMD ["handler.handler"]' in dockerfile and "COPY pipeline/" in dockerfile
    requirements = (ROOT / "requirements" / "convert.txt").read_text()
    assert "llama-cpp-python==" in requirements and "gguf==" in requirements
