"""What can be checked of the training image without a Docker engine."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "training_image" / "Dockerfile").read_text()


def test_the_image_runs_our_train_entry_point():
    assert "COPY training_image/train /usr/local/bin/train" in DOCKERFILE
    assert "COPY pipeline/ /opt/program/pipeline/" in DOCKERFILE
    entry = (ROOT / "training_image" / "train").read_text()
    assert entry.startswith("#!/usr/bin/env python3") and "from pipeline.training.sagemaker import main" in entry
    assert (ROOT / "training_image" / "train").stat().st_mode & 0o111


def test_the_image_installs_the_pinned_training_requirements():
    assert "requirements/training-gpu.txt" in DOCKERFILE and "pip install -r /tmp/requirements/training-gpu.txt" in DOCKERFILE
    gpu = (ROOT / "requirements" / "training-gpu.txt").read_text()
    assert "-r training.txt" in gpu and re.search(r"^bitsandbytes==", gpu, re.M)
    training = (ROOT / "requirements" / "training.txt").read_text()
    for package in ("transformers", "peft", "accelerate", "sentencepiece"):
        assert re.search(rf"^{package}==", training, re.M), package
    # Mistral needs transformers >= 4.34 (the spec's 4.28 image cannot load it).
    major, minor = map(int, re.search(r"^transformers==(\d+)\.(\d+)", training, re.M).groups())
    assert (major, minor) >= (4, 34)


def test_the_base_image_is_a_build_argument():
    assert re.search(r"^ARG BASE_IMAGE=\S+cuda\S*", DOCKERFILE, re.M) and "FROM ${BASE_IMAGE}" in DOCKERFILE
