import errno
import threading

import boto3
import pytest

from pipeline import storage
from pipeline.errors import StorageError


class Boom(Exception):
    pass


def test_local_write_appears_only_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "run" / "model.bin"
    storage.write_bytes(str(target), b"first")
    with pytest.raises(Boom):
        with storage.open_write(str(target)) as out:
            out.write(b"half-written")
            raise Boom
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["model.bin"]  # no temporary left behind


def test_a_local_file_is_synced_while_it_is_written(tmp_path, monkeypatch):
    """The disk takes the data as it comes (a sync thread), not all of it at the final fsync."""
    synced = threading.Event()
    synced_fds = []

    def fdatasync(fd):
        synced_fds.append(fd)
        synced.set()

    monkeypatch.setattr(storage, "_fdatasync", fdatasync)
    monkeypatch.setattr(storage, "SYNC_INTERVAL_SECONDS", 0.01)
    with storage.open_write(str(tmp_path / "data.jsonl")) as out:
        out.write(b"x" * 100_000)
        assert synced.wait(timeout=30)
        assert set(synced_fds) == {out.fileno()}
    assert (tmp_path / "data.jsonl").read_bytes() == b"x" * 100_000


def test_a_failed_sync_is_a_named_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    # The kernel reports a write-back error once: the sync thread's must not be lost.
    target = tmp_path / "data.jsonl"
    storage.write_bytes(str(target), b"first")
    failed = threading.Event()

    def fdatasync(fd):
        failed.set()
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(storage, "_fdatasync", fdatasync)
    monkeypatch.setattr(storage, "SYNC_INTERVAL_SECONDS", 0.01)
    with pytest.raises(StorageError, match="cannot write .*data.jsonl: Input/output error"):
        with storage.open_write(str(target)) as out:
            out.write(b"second")
            assert failed.wait(timeout=30)
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]


def test_s3_round_trip_streams_in_multiple_parts(bucket, monkeypatch):
    monkeypatch.setattr(storage, "S3_PART_SIZE_BYTES", 5 * 1024 * 1024)
    uri = f"s3://{bucket}/runs/r1/big.bin"
    payload = bytes(range(256)) * (12 * 1024 * 1024 // 256)  # 12 MiB -> 3 parts of 5 MiB max
    with storage.open_write(uri) as out:
        for offset in range(0, len(payload), 1024 * 1024):
            out.write(payload[offset : offset + 1024 * 1024])
    head = boto3.client("s3").head_object(Bucket=bucket, Key="runs/r1/big.bin")
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith("-3")  # a real multipart upload, not one buffered PUT
    assert storage.read_bytes(uri) == payload


def test_s3_failure_aborts_the_upload_and_keeps_the_previous_object(bucket):
    uri = f"s3://{bucket}/models/current.json"
    storage.write_bytes(uri, b"production")
    with pytest.raises(Boom):
        with storage.open_write(uri) as out:
            out.write(b"x" * (6 * 1024 * 1024))
            raise Boom
    s3 = boto3.client("s3")
    assert storage.read_bytes(uri) == b"production"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_join_and_exists(bucket, tmp_path):
    assert storage.join("s3://b/runs/", "x", "/dataset/") == "s3://b/runs/x/dataset"
    assert storage.join(str(tmp_path), "a", "b") == str(tmp_path / "a" / "b")
    assert not storage.exists(f"s3://{bucket}/nothing")
    storage.write_json(f"s3://{bucket}/thing.json", {"a": 1})
    assert storage.exists(f"s3://{bucket}/thing.json")
    assert storage.read_json(f"s3://{bucket}/thing.json") == {"a": 1}


def test_missing_and_malformed_uris_are_named_errors(bucket, tmp_path):
    with pytest.raises(StorageError):
        storage.read_bytes(str(tmp_path / "missing"))
    with pytest.raises(StorageError):
        storage.read_bytes(f"s3://{bucket}/missing")
    with pytest.raises(StorageError):
        storage.split_s3_uri("s3:///no-bucket")


def test_errors_inside_the_block_are_not_mistaken_for_storage_errors(bucket, tmp_path):
    for uri in (f"s3://{bucket}/a.bin", str(tmp_path / "a.bin")):
        with pytest.raises(ValueError):
            with storage.open_write(uri) as out:
                out.write(b"x")
                raise ValueError("the caller's own error")
        assert not storage.exists(uri)


def test_writing_to_a_missing_bucket_is_a_named_error(aws):
    with pytest.raises(StorageError, match="no-such-bucket"):
        storage.write_bytes("s3://no-such-bucket/a.json", b"{}")


def test_no_aws_credentials_is_a_named_error_not_a_traceback(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance-metadata address
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # no credentials cached by an earlier test
    for call in (
        lambda: storage.write_bytes("s3://some-bucket/a", b"x"),
        lambda: storage.read_bytes("s3://some-bucket/a"),
        lambda: storage.exists("s3://some-bucket/a"),
        lambda: storage.read_range("s3://some-bucket/a", 0, 8),
    ):
        with pytest.raises(StorageError, match="credentials"):
            call()


def test_json_that_is_not_utf8_is_a_named_error(tmp_path):
    (tmp_path / "bad.json").write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(StorageError, match="not valid JSON"):
        storage.read_json(str(tmp_path / "bad.json"))
