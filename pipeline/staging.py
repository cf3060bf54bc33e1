"""Stage the base model once where the pipeline reads it (DESIGN deviation 3): a local Hugging Face
directory -> s3://… (the training job's base_model channel and ConvertToGGUF read it there; no hub
download at run time, so the training job runs with network isolation).

Each file is streamed (multipart to S3, never whole in memory) with its sha256; ``staged.json``
is written last and lists every file's size and sha256, so a staged model is complete exactly when
it exists. A second run skips files already staged with the same content (an interrupted upload of
14.5 GB resumes file by file).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline import storage
from pipeline.errors import InvalidArgument, PipelineError
from pipeline.model_files import CONFIG_FILE, REQUIRED_TOKENIZER_FILES, TOKENIZER_FILES, WEIGHTS_INDEX_FILE, WEIGHTS_SUFFIX

STAGED_MANIFEST = "staged.json"
# Beside config, tokenizer and weights: generation defaults and the sharded-weights index.
OPTIONAL_FILES = ("generation_config.json", WEIGHTS_INDEX_FILE)
CHUNK_BYTES = 8 * 1024 * 1024


class DestinationHoldsAnotherModel(PipelineError):
    """The destination has a staged model with other files: replacing it is asked for explicitly."""


class BaseModelIncomplete(PipelineError):
    """The directory lacks what training and conversion read: config, SentencePiece tokenizer, safetensors."""


def model_files(source: Path) -> list[Path]:
    if not source.is_dir():
        raise InvalidArgument(f"--from {source} is not a directory")
    missing = [name for name in (CONFIG_FILE, *REQUIRED_TOKENIZER_FILES) if not (source / name).is_file()]
    if missing:
        raise BaseModelIncomplete(
            f"{source} has no {', '.join(missing)} (training tokenizes with tokenizer.json, the GGUF vocabulary is built "
            "from tokenizer.model: both as the model's publisher ships them)"
        )
    weights = sorted(source.glob(f"*{WEIGHTS_SUFFIX}"))
    if not weights:
        bins = [path.name for path in source.glob("*.bin")]
        raise BaseModelIncomplete(
            f"{source} has no *.safetensors weights" + (f" (only {', '.join(bins)}: convert them to safetensors first)" if bins else "")
        )
    names = [CONFIG_FILE, *TOKENIZER_FILES, *OPTIONAL_FILES]
    return [source / name for name in names if (source / name).is_file()] + weights


def _previous(destination: str) -> dict[str, Any]:
    manifest = storage.join(destination, STAGED_MANIFEST)
    if not storage.exists(manifest):
        return {}
    files = storage.read_json(manifest)
    files = files.get("files") if isinstance(files, dict) else None
    if not isinstance(files, dict):
        raise DestinationHoldsAnotherModel(f"{manifest} is not a staging manifest (no files object); stage to a new prefix, or remove it")
    return files


def stage_base_model(source: str | Path, destination: str, *, replace: bool = False, progress: bool = True) -> dict[str, Any]:
    """Copy the model directory ``source`` to ``destination`` (s3:// or a path); returns the manifest
    plus ``uploaded``/``skipped`` file names. A destination holding a different staged model is
    refused unless ``replace``: earlier runs were trained on it."""
    source = Path(source)
    files = model_files(source)
    destination = destination.rstrip("/")
    if storage.is_s3(destination):
        storage.split_s3_uri(destination + "/")  # a bucket is named
    previous = _previous(destination)
    if previous and not replace:
        differing = sorted(set(previous) ^ {path.name for path in files})
        if differing:
            raise DestinationHoldsAnotherModel(
                f"{destination}/ holds a staged model with other files ({', '.join(differing)}); stage to a new "
                "prefix (and set baseModelS3Uri), or pass --replace"
            )
    manifest: dict[str, Any] = {"source": str(source.resolve()), "files": {}}
    uploaded, skipped = [], []
    total = sum(path.stat().st_size for path in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="stage base model", disable=not progress) as bar:
        for path in files:
            size, sha256 = path.stat().st_size, storage.sha256_of(str(path))[0]
            target = storage.join(destination, path.name)
            if previous.get(path.name) == {"size": size, "sha256": sha256} and storage.exists(target) and storage.size_of(target) == size:
                skipped.append(path.name)
            else:
                with storage.open_write(target) as out, open(path, "rb") as stream:
                    while chunk := stream.read(CHUNK_BYTES):
                        out.write(chunk)
                uploaded.append(path.name)
            manifest["files"][path.name] = {"size": size, "sha256": sha256}
            bar.update(size)
    manifest["staged_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    storage.write_json(storage.join(destination, STAGED_MANIFEST), manifest)
    return {**manifest, "uploaded": uploaded, "skipped": skipped, "destination": destination + "/"}
