"""python -m pipeline stage-base-model: a local model directory staged in S3, resumable, complete or absent."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest

from pipeline import cli, staging, storage
from pipeline.errors import InvalidArgument


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from pipeline.local.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", layers=1)


def keys(bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"].removeprefix(prefix): s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listed}


def test_stage_copies_every_model_file_with_a_manifest_written_last(model_dir, bucket, capsys):
    destination = f"s3://{bucket}/base-models/tiny/"
    assert cli.main(["stage-base-model", "--from", str(model_dir), "--to", destination, "--no-progress"]) == 0
    staged = keys(bucket, "base-models/tiny/")
    local = {path.name for path in staging.model_files(model_dir)}
    assert set(staged) == local | {staging.STAGED_MANIFEST}
    assert {"config.json", "tokenizer.model"} <= local and any(name.endswith(".safetensors") for name in local)
    for name in local:
        assert staged[name] == (model_dir / name).read_bytes(), name
    manifest = json.loads(staged[staging.STAGED_MANIFEST])
    assert manifest["files"]["tokenizer.model"] == {
        "size": (model_dir / "tokenizer.model").stat().st_size,
        "sha256": hashlib.sha256((model_dir / "tokenizer.model").read_bytes()).hexdigest(),
    }
    assert f"at {destination}" in capsys.readouterr().out


def test_a_second_run_uploads_only_what_changed(model_dir, bucket, tmp_path):
    import shutil

    source = tmp_path / "model"
    shutil.copytree(model_dir, source)
    destination = f"s3://{bucket}/base"
    first = staging.stage_base_model(source, destination, progress=False)
    assert first["skipped"] == []
    (source / "generation_config.json").write_text('{"temperature": 0.1}')
    second = staging.stage_base_model(source, destination, progress=False)
    assert second["uploaded"] == ["generation_config.json"]
    assert set(second["skipped"]) == set(first["uploaded"]) - {"generation_config.json"}


def test_a_different_model_at_the_destination_is_not_overwritten(model_dir, bucket, tmp_path):
    import shutil

    destination = f"s3://{bucket}/base"
    staging.stage_base_model(model_dir, destination, progress=False)
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    weights = next(other.glob("*.safetensors"))
    weights.rename(other / "model-00001-of-00002.safetensors")
    before = keys(bucket, "base/")
    with pytest.raises(staging.DestinationHoldsAnotherModel, match="--replace"):
        staging.stage_base_model(other, destination, progress=False)
    assert keys(bucket, "base/") == before
    replaced = staging.stage_base_model(other, destination, replace=True, progress=False)
    assert "model-00001-of-00002.safetensors" in replaced["files"]


@pytest.mark.parametrize(
    "remove, error",
    [
        ("tokenizer.model", staging.BaseModelIncomplete),
        ("tokenizer.json", staging.BaseModelIncomplete),
        ("config.json", staging.BaseModelIncomplete),
        ("*.safetensors", staging.BaseModelIncomplete),
    ],
)
def test_an_incomplete_directory_is_refused_before_any_upload(model_dir, bucket, tmp_path, remove, error):
    import shutil

    source = tmp_path / "model"
    shutil.copytree(model_dir, source)
    for path in source.glob(remove):
        path.unlink()
    with pytest.raises(error):
        staging.stage_base_model(source, f"s3://{bucket}/base", progress=False)
    assert keys(bucket, "base/") == {}


@pytest.mark.parametrize("manifest", [b"[1, 2]", b'{"files": "all"}', b"not json"])
def test_a_foreign_staged_json_is_a_named_error(model_dir, bucket, manifest):
    boto3.client("s3").put_object(Bucket=bucket, Key=f"base/{staging.STAGED_MANIFEST}", Body=manifest)
    with pytest.raises((staging.DestinationHoldsAnotherModel, storage.StorageError)):
        staging.stage_base_model(model_dir, f"s3://{bucket}/base", progress=False)
    assert set(keys(bucket, "base/")) == {staging.STAGED_MANIFEST}


def test_cli_names_the_error_and_exits_1(tmp_path, bucket, capsys):
    assert cli.main(["stage-base-model", "--from", str(tmp_path / "nope"), "--to", f"s3://{bucket}/x"]) == cli.EXIT_ERROR
    assert "InvalidArgument" in capsys.readouterr().err
    with pytest.raises(InvalidArgument):
        staging.model_files(tmp_path / "nope")


def test_an_interrupted_upload_leaves_no_manifest(model_dir, bucket, monkeypatch):
    calls = {"n": 0}
    real_open_write = storage.open_write

    def failing_open_write(uri):
        calls["n"] += 1
        if calls["n"] == 3:
            raise storage.StorageError("connection reset")
        return real_open_write(uri)

    monkeypatch.setattr(storage, "open_write", failing_open_write)
    with pytest.raises(storage.StorageError):
        staging.stage_base_model(model_dir, f"s3://{bucket}/base", progress=False)
    assert staging.STAGED_MANIFEST not in keys(bucket, "base/")
