"""Run ids and the artifact layout shared by the cloud pipeline and the local loop.

Every artifact of a run lives under ``<root>/runs/<run_id>/`` where root is a local directory or
``s3://bucket``. In AWS the run id is the Step Functions execution name.
"""

from __future__ import annotations

import datetime as dt
import secrets

from pipeline import storage
from pipeline.contracts import ADAPTER_DIR, DATASET_DIR, GGUF_NAME, REPORT_DIR, RUN_ID_PATTERN, RUNS_DIR
from pipeline.errors import InvalidArgument


def new_run_id(prefix: str = "run") -> str:
    """A sortable, unique id: ``run-20261125-201300-1a2b3c``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(3)}"


def check_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise InvalidArgument(f"run id must be 1-80 letters, digits, '-' or '_', got {run_id!r}")
    return run_id


def run_uri(root: str, run_id: str) -> str:
    return storage.join(root, RUNS_DIR, check_run_id(run_id))


def dataset_uri(root: str, run_id: str) -> str:
    return storage.join(run_uri(root, run_id), DATASET_DIR)


def gguf_uri(root: str, run_id: str) -> str:
    return storage.join(run_uri(root, run_id), GGUF_NAME)


def report_uri(root: str, run_id: str) -> str:
    return storage.join(run_uri(root, run_id), REPORT_DIR)


def adapter_uri(root: str, run_id: str) -> str:
    return storage.join(run_uri(root, run_id), ADAPTER_DIR)
