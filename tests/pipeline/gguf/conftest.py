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


@dataclass(frozen=True)
class Models:
    base: Path
    adapter: Path
    merged: Path


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Models:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pipeline.training.tiny_model import build_tiny_model

    work = tmp_path_factory.mktemp("gguf-models")
    base = build_tiny_model(work / "base", layers=8)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0,
                      bias="none", task_type="CAUSAL_LM", init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(str(work / "adapter"))
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(str(work / "merged"))
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, work / "merged" / name)
    return Models(base, work / "adapter", work / "merged")


def ensure_converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py from the llama-cpp-python sdist (used here, never copied into the repo)."""
    script = SOURCE_CACHE / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    if not script.is_file():
        SOURCE_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-d", str(SOURCE_CACHE)], check=True)
        with tarfile.open(SOURCE_CACHE / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz") as archive:
            members = [m for m in archive.getmembers() if "/vendor/llama.cpp/" in m.name and
                       ("/conversion/" in m.name or "/gguf-py/" in m.name or m.name.endswith("convert_hf_to_gguf.py"))]
            archive.extractall(SOURCE_CACHE, members=members, filter="data")
    return script


@pytest.fixture(scope="session")
def llama_cpp_converter() -> Path:
    return ensure_converter()


def run_converter(script: Path, model_dir: Path, out: Path, outtype: str = "f16") -> Path:
    subprocess.run([sys.executable, str(script), str(model_dir), "--outtype", outtype, "--outfile", str(out)],
                   check=True, capture_output=True)
    return out
