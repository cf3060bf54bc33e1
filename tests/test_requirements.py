"""Each runtime installs only its own share (DESIGN.md, "Dependencies and where each belongs")."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def packages(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names |= packages(path.parent / line[3:].strip())
        elif line:
            names.add(re.split(r"[=<>\[ ]", line, maxsplit=1)[0].lower())
    return names


def test_pulumi_program_needs_no_ml_or_database_libraries():
    assert packages(ROOT / "requirements.txt") == {"pulumi", "pulumi-aws", "pulumi-docker-build", "pyyaml"}


def test_dataset_lambdas_need_no_torch_pulumi_or_sagemaker():
    dataset = packages(ROOT / "requirements" / "dataset.txt")
    assert "psycopg2-binary" in dataset
    assert not dataset & {"torch", "transformers", "peft", "pulumi", "pulumi-aws", "sagemaker", "moto", "pytest"}


def test_every_requirement_is_pinned():
    for path in [ROOT / "requirements.txt", *sorted((ROOT / "requirements").glob("*.txt"))]:
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-r "):
                assert "==" in line, f"{path.name}: {line} is not pinned"


def test_conversion_image_needs_no_torch():
    convert = packages(ROOT / "requirements" / "convert.txt")
    assert {"llama-cpp-python", "gguf", "numpy"} <= convert
    assert not convert & {"torch", "transformers", "peft", "pulumi", "psycopg2-binary"}


def test_serving_lambdas_need_no_torch_llama_cpp_or_database():
    serving = packages(ROOT / "requirements" / "serving.txt")
    assert {"httpx", "numpy", "matplotlib"} <= serving
    assert not serving & {"torch", "transformers", "llama-cpp-python", "psycopg2-binary", "pulumi", "moto"}


def test_the_sagemaker_sdk_is_a_workstation_extra_only():
    assert "sagemaker-core" in packages(ROOT / "requirements" / "sagemaker-sdk.txt")
    for runtime in ("dataset.txt", "serving.txt", "convert.txt", "training.txt", "training-gpu.txt", "lambda-runtime.txt", "local.txt"):
        assert not {name for name in packages(ROOT / "requirements" / runtime) if name.startswith("sagemaker")}, runtime
    assert not {name for name in packages(ROOT / "requirements.txt") if name.startswith("sagemaker")}
