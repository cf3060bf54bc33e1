"""Lambda zip contents built by the program at `pulumi up`: a dependency layer per requirements file
(Linux x86-64 wheels for the Lambda runtime, whatever machine runs Pulumi) and one code directory
(pipeline/ and lambdas/).

pip does the work (``--platform``/``--only-binary``: psycopg2-binary's manylinux wheel, never a
local build). Builds are cached under .build/ by a hash of their inputs, so a second `pulumi up`
(or preview) builds nothing and Pulumi sees the same archive hash: no spurious function updates.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pulumi

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / ".build" / "lambda"
LAMBDA_RUNTIME = "python3.12"
LAMBDA_PYTHON_VERSION = "3.12"
LAMBDA_ARCHITECTURE = "x86_64"
# manylinux tags the Lambda python3.12 runtime (Amazon Linux 2023, glibc 2.34) accepts.
LAMBDA_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
# In the Lambda runtime already; ~80 MB unzipped that would count against the 250 MB limit.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
CODE_PACKAGES = ("pipeline", "lambdas")
# The zip Lambdas' dependency layers, by requirements file (requirements/<name>).
DATASET_LAYER = "dataset.txt"
SERVING_LAYER = "serving.txt"
LAYERS = (DATASET_LAYER, SERVING_LAYER)
# Demo and R&D code (pipeline/local/) never ships: not in the zip, not in the images (.dockerignore).
DEMO_ONLY = ("pipeline/local",)


class PackagingError(RuntimeError):
    """pip could not assemble a layer (the message carries pip's last lines)."""


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def dependency_layer(requirements: Path) -> Path:
    """A directory laid out as a Lambda layer (``python/<packages>``) for ``requirements``."""
    key = _digest(
        requirements.read_bytes(), LAMBDA_PYTHON_VERSION.encode(), " ".join(LAMBDA_PLATFORMS).encode(), " ".join(RUNTIME_PROVIDED).encode()
    )
    target = BUILD_DIR / f"layer-{requirements.stem}-{key}"
    if (target / ".complete").is_file():
        return target
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=BUILD_DIR))
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        LAMBDA_PYTHON_VERSION,
        *[arg for platform in LAMBDA_PLATFORMS for arg in ("--platform", platform)],
        "--target",
        str(staging / "python"),
        "-r",
        str(requirements),
    ]
    # The constraints of the machine running Pulumi are not the Lambda's.
    env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"} | {"PIP_CONSTRAINT": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise PackagingError(f"cannot build the Lambda layer for {requirements.name}:\n{tail}")
    for name in RUNTIME_PROVIDED:
        for path in (staging / "python").glob(f"{name}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in (staging / "python").rglob("__pycache__"):
        shutil.rmtree(path, ignore_errors=True)
    (staging / ".complete").write_text(" ".join(command))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _shipped(path: Path) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return (
        path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix != ".pyc"
        and path.name != "Dockerfile"
        and not any(relative == excluded or relative.startswith(f"{excluded}/") for excluded in DEMO_ONLY)
    )


def code_directory() -> Path:
    """pipeline/ and lambdas/ without caches and demo code: every Lambda's handler is
    lambdas.<stage>.handler.handler."""
    sources = sorted(path for package in CODE_PACKAGES for path in (ROOT / package).rglob("*") if _shipped(path))
    key = _digest(*(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() for path in sources))
    target = BUILD_DIR / f"code-{key}"
    if (target / ".complete").is_file():
        return target
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=BUILD_DIR))
    for path in sources:
        (staging / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, staging / path.relative_to(ROOT))
    (staging / ".complete").write_text(key)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def archive(directory: Path) -> pulumi.AssetArchive:
    """The directory as a Pulumi archive, without the build marker."""
    return pulumi.AssetArchive(
        {
            path.name: pulumi.FileArchive(str(path)) if path.is_dir() else pulumi.FileAsset(str(path))
            for path in sorted(directory.iterdir())
            if path.name != ".complete"
        }
    )


IMAGE_SOURCES = ("pipeline", "lambdas", "training_image", "requirements")


def source_tag(dockerfile: str) -> str:
    """A tag naming the source an image was built from: a hash of its Dockerfile and the folders images copy."""
    files = sorted(
        path
        for folder in IMAGE_SOURCES
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    return "src-" + _digest((ROOT / dockerfile).read_bytes(), *(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() for p in files))


if __name__ == "__main__":
    # `make test` builds the layers once, where the package index is reachable; `pulumi up` and the
    # tests then find them in the cache (.build/lambda/).
    for requirements in LAYERS:
        print(dependency_layer(ROOT / "requirements" / requirements))
