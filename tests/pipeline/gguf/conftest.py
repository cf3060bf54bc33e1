"""An 8-layer tiny Mistral (so the Q6_K layer rule is exercised), a random non-zero LoRA adapter,
and the peft-merged model the references are computed from. Built once per session."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.model_files import TOKENIZER_FILES

ROOT = Path(__file__).resolve().parents[3]
LLAMA_CPP_VERSION = "0.3.36"
SOURCE_CACHE = ROOT / ".venv" / "llama-cpp-python-src"
CONVERTER = SOURCE_CACHE / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"


@dataclass(frozen=True)
class Models:
    base: Path
    adapter: Path
    merged: Path


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Models:
    from tests.factories import tiny_model_with_adapter

    work = tmp_path_factory.mktemp("gguf-models")
    base, adapter, peft_model = tiny_model_with_adapter(work, layers=8, seed=1)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(str(work / "merged"))
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, work / "merged" / name)
    return Models(base, adapter, work / "merged")


def ensure_converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py from the llama-cpp-python sdist (used here, never copied into
    the repo); `make test`'s install step calls this, where the package index is reachable."""
    script = CONVERTER
    if not script.is_file():
        SOURCE_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_CPP_VERSION}",
                "-d",
                str(SOURCE_CACHE),
            ],
            check=True,
        )
        with tarfile.open(SOURCE_CACHE / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz") as archive:
            members = [
                m
                for m in archive.getmembers()
                if "/vendor/llama.cpp/" in m.name
                and ("/conversion/" in m.name or "/gguf-py/" in m.name or m.name.endswith("convert_hf_to_gguf.py"))
            ]
            archive.extractall(SOURCE_CACHE, members=members, filter="data")
    return script


@pytest.fixture(scope="session")
def llama_cpp_converter() -> Path:
    """Downloaded by `make test`'s install step (no network in the tests themselves)."""
    script = CONVERTER
    if not script.is_file():
        pytest.fail(f"{script} is missing: run `make test` (or `make rehearsal-assets`), which downloads it")
    return script


def run_converter(script: Path, model_dir: Path, out: Path, outtype: str = "f16") -> Path:
    subprocess.run(
        [sys.executable, str(script), str(model_dir), "--outtype", outtype, "--outfile", str(out)], check=True, capture_output=True
    )
    return out
