"""One interface for every stage's artifacts, on a local path or ``s3://bucket/key``.

Writes are all-or-nothing: a local file is written under a temporary name and renamed into place
on success; an S3 object is written as a streamed multipart upload (smart_open) that is completed on
success and aborted on error. Either way a reader never sees a half-written artifact, and a failed
stage leaves what was there before intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import StorageError

S3_SCHEME = "s3://"
# What boto3 raises: an answer from S3 (ClientError: missing bucket, access denied) or no answer at
# all (BotoCoreError: no credentials, endpoint unreachable). Both become StorageError.
AWS_ERRORS = (ClientError, BotoCoreError)
# S3 multipart parts: 5 MiB is S3's minimum; 16 MiB keeps a 10 GB object well under the
# 10,000-part limit while bounding the writer's buffer.
S3_PART_SIZE_BYTES = 16 * 1024 * 1024
# How often a local file being written is synced while the writing goes on (see _synced_as_written).
SYNC_INTERVAL_SECONDS = 0.05


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def join(base: str, *parts: str) -> str:
    """``join("s3://b/runs/x", "dataset", "train.jsonl")``; also for local paths."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    return parsed.netloc, parsed.path.lstrip("/")


def _s3_client():
    from pipeline import aws_clients  # only the S3 paths need boto3; local runs work without AWS configured

    return aws_clients.client("s3")


def _transport_params() -> dict[str, Any]:
    return {"client": _s3_client(), "min_part_size": S3_PART_SIZE_BYTES}


@contextlib.contextmanager
def open_write(uri: str) -> Iterator[IO[bytes]]:
    """Binary writer that makes ``uri`` appear only if the block finishes without error."""
    if is_s3(uri):
        split_s3_uri(uri)
        try:
            import smart_open  # here, not at the top: it imports every transport it has (~0.5 s), which local paths never need

            writer = smart_open.open(uri, "wb", compression="disable", transport_params=_transport_params())
        except (OSError, ValueError, *AWS_ERRORS) as exc:  # missing bucket, access denied
            raise StorageError(f"cannot write {uri}: {exc}") from exc
        try:
            yield writer
        except BaseException:
            writer.terminate()  # type: ignore[attr-defined]  # smart_open's S3 writer: abort the multipart upload
            raise
        try:
            writer.close()  # completes the multipart upload
        except (OSError, ValueError, *AWS_ERRORS) as exc:
            raise StorageError(f"cannot complete the upload of {uri}: {exc}") from exc
        return

    path = Path(uri)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create directory {path.parent}: {exc.strerror}") from exc
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(temporary, "wb") as out:
            with _synced_as_written(out.fileno(), uri):
                yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _synced_as_written(fd: int, uri: str) -> Iterator[None]:
    """A thread syncs ``fd`` every SYNC_INTERVAL_SECONDS while the block writes to it: the disk takes
    the data as it comes, and the fsync before the rename waits only for the last of it (at the end
    of a 100k-row export, 32 ms of fsyncs became a few: docs/benchmarks.md). A sync's error is
    raised here: the kernel reports a write-back error once, and the final fsync might not see it."""
    stop = threading.Event()
    errors: list[OSError] = []

    def sync() -> None:
        while not stop.wait(SYNC_INTERVAL_SECONDS):
            try:
                _fdatasync(fd)
            except OSError as exc:
                errors.append(exc)
                return

    syncer = threading.Thread(target=sync, name="storage-sync", daemon=True)
    syncer.start()
    try:
        yield
    finally:
        stop.set()
        syncer.join()
    if errors:
        raise StorageError(f"cannot write {uri}: {errors[0].strerror}") from errors[0]


_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has only fsync


@contextlib.contextmanager
def open_read(uri: str) -> Iterator[IO[bytes]]:
    """Binary reader, streamed (never the whole object in memory)."""
    try:
        if is_s3(uri):
            split_s3_uri(uri)
            import smart_open  # see open_write

            stream = smart_open.open(uri, "rb", compression="disable", transport_params={"client": _s3_client()})
        else:
            stream = open(uri, "rb")
    except (OSError, ValueError, *AWS_ERRORS) as exc:
        raise StorageError(f"cannot read {uri}: {exc}") from exc
    with stream:
        yield stream


def read_bytes(uri: str) -> bytes:
    with open_read(uri) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes) -> None:
    with open_write(uri) as out:
        out.write(data)


def read_json(uri: str) -> Any:
    try:
        return json.loads(read_bytes(uri))
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise StorageError(f"{uri} is not valid JSON: {exc}") from exc


def write_json(uri: str, value: Any) -> None:
    write_bytes(uri, (json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))


def read_range(uri: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of an object: a ranged GET on S3, a seek on a local file."""
    if end <= start:
        return b""
    try:
        if is_s3(uri):
            bucket, key = split_s3_uri(uri)
            response = _s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            data = response["Body"].read()
        else:
            with open(uri, "rb") as stream:
                stream.seek(start)
                data = stream.read(end - start)
    except (OSError, *AWS_ERRORS) as exc:
        raise StorageError(f"cannot read {uri}: {exc}") from exc
    if len(data) != end - start:
        raise StorageError(f"{uri} is truncated: wanted bytes {start}-{end}, got {len(data)}")
    return data


def size_of(uri: str) -> int:
    try:
        if is_s3(uri):
            bucket, key = split_s3_uri(uri)
            return _s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"]
        return Path(uri).stat().st_size
    except (OSError, *AWS_ERRORS) as exc:
        raise StorageError(f"cannot read {uri}: {exc}") from exc


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = split_s3_uri(uri)
        try:
            _s3_client().head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise StorageError(f"cannot stat {uri}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot stat {uri}: {exc}") from exc
        return True
    return Path(uri).exists()


HASH_CHUNK_BYTES = 8 * 1024 * 1024


def copy_named(source: str, destination: str, names: Sequence[str]) -> list[str]:
    """The files called ``names`` that exist under ``source`` copied, byte for byte, to
    ``destination`` (each a directory or s3:// prefix); returns the names copied."""
    copied = []
    for name in names:
        uri = join(source, name)
        if exists(uri):
            write_bytes(join(destination, name), read_bytes(uri))
            copied.append(name)
    return copied


def any_under(prefix_uri: str) -> bool:
    """Whether anything exists under a directory or an s3:// prefix (one listed key is enough)."""
    if is_s3(prefix_uri):
        bucket, key = split_s3_uri(prefix_uri)
        prefix = key.rstrip("/") + "/"
        try:
            return bool(_s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))
        except AWS_ERRORS as exc:
            raise StorageError(f"cannot list {prefix_uri}: {exc}") from exc
    path = Path(prefix_uri)
    return path.is_dir() and any(path.iterdir())


def sha256_of(uri: str) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a local file or S3 object, streamed."""
    digest, size = hashlib.sha256(), 0
    with open_read(uri) as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def set_tags(uri: str, tags: dict[str, str]) -> bool:
    """Replace an S3 object's tags (the lifecycle rules read them). Local files have no tags: False."""
    if not is_s3(uri):
        return False
    bucket, key = split_s3_uri(uri)
    try:
        _s3_client().put_object_tagging(
            Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": name, "Value": value} for name, value in sorted(tags.items())]}
        )
    except AWS_ERRORS as exc:
        raise StorageError(f"cannot tag {uri}: {exc}") from exc
    return True


def get_tags(uri: str) -> dict[str, str]:
    if not is_s3(uri):
        return {}
    bucket, key = split_s3_uri(uri)
    try:
        tag_set = _s3_client().get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    except AWS_ERRORS as exc:
        raise StorageError(f"cannot read the tags of {uri}: {exc}") from exc
    return {tag["Key"]: tag["Value"] for tag in tag_set}


class HashingWriter:
    """Wraps a binary writer; counts bytes and computes sha256 as data streams through."""

    def __init__(self, out: IO[bytes]):
        self._out = out
        self._sha256 = hashlib.sha256()
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._sha256.update(data)
        self.bytes_written += len(data)
        return self._out.write(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


def read_with_etag(uri: str) -> tuple[bytes | None, str | None]:
    """An S3 object's bytes and ETag (None, None when absent): the base of a conditional rewrite."""
    bucket, key = split_s3_uri(uri)
    try:
        response = _s3_client().get_object(Bucket=bucket, Key=key)
        return response["Body"].read(), response["ETag"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None, None
        raise StorageError(f"cannot read {uri}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"cannot read {uri}: {exc}") from exc


def write_if_unchanged(uri: str, data: bytes, etag: str | None) -> bool:
    """Write only if the object is still the one read (its ETag), or still absent (etag None).
    False when another writer changed it first (S3's PreconditionFailed): read again and retry."""
    bucket, key = split_s3_uri(uri)
    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        _s3_client().put_object(Bucket=bucket, Key=key, Body=data, **condition)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "ConditionalRequestConflict"}:
            return False
        raise StorageError(f"cannot write {uri}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"cannot write {uri}: {exc}") from exc
    return True
