from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import prompt
from pipeline.serving.ollama import OllamaClient, RetryPolicy
from tests.pipeline.serving.ollama_contract_server import OllamaContractServer


@pytest.fixture
def ollama() -> Iterator[OllamaContractServer]:
    with OllamaContractServer() as server:
        yield server


@pytest.fixture
def client(ollama) -> Iterator[OllamaClient]:
    sleeps: list[float] = []
    with OllamaClient(ollama.url, retry=RetryPolicy(attempts=3), sleep=sleeps.append) as ollama_client:
        ollama_client.sleeps = sleeps
        yield ollama_client


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from pipeline.local.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("serving-model") / "base", layers=2)


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    from pipeline.gguf import convert, quant

    out = tmp_path_factory.mktemp("serving-gguf") / "model.gguf"
    convert.export_gguf(str(tiny_model_dir), None, str(out), quant.OutputType.Q8_0, threads=2, progress=False)
    return out


def instruction(handle: str, bio: str = "Professor of physics at ETH Zurich.", teacher: str = prompt.DEFAULT_INFERENCE_TEACHER) -> str:
    return prompt.format_instruction(
        handle=handle,
        display_name="Dr. Example",
        bio=bio,
        created_at="2015-03-01",
        follower_count="1200",
        location="Zurich",
        scored_by=teacher,
    )


def write_profiles(path: Path, scores: dict[str, float], teachers: dict[str, str] | None = None) -> Path:
    """A dataset JSONL file (holdout.jsonl / seeds.jsonl rows) with these teacher scores, by
    prompt.DEFAULT_INFERENCE_TEACHER unless ``teachers`` names another for a handle."""
    import json

    lines = [
        json.dumps(
            {
                "instruction": instruction(handle, teacher=(teachers or {}).get(handle, prompt.DEFAULT_INFERENCE_TEACHER)),
                "output": prompt.format_answer(handle, score, "teacher reason"),
            },
            ensure_ascii=False,
        )
        for handle, score in scores.items()
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
