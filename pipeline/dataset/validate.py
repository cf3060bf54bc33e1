"""ValidateData: an independent check of a written dataset before any GPU time is spent on it.

Re-reads the files the export wrote (streamed, from a local path or S3), and checks them against
the manifest (sha256, bytes, rows) and against the row contract (the spec's JSONL format, the
answer schema, one row per handle). Too few rows -> ``valid: false`` with ``InsufficientData``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from pipeline import storage
from pipeline.contracts import (
    DEFAULT_MIN_ROWS,
    DEFAULT_MIN_SEED_PROFILES,
    GATED_TEACHER,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MIN_HOLDOUT_PROFILES,
    POSITIVE_SCORE,
)
from pipeline.dataset import rows
from pipeline.dataset.split import Split
from pipeline.errors import StorageError

# Class balance outside these shares of positives is reported as a warning, not a failure: a
# weekly batch can be skewed, but the operator should see it.
BALANCE_WARNING_RANGE = (0.05, 0.95)
# Only a few examples of each problem are carried in the result (Step Functions' 256 KB payload).
MAX_EXAMPLES_PER_PROBLEM = 3


class Problem(str, Enum):
    INSUFFICIENT_DATA = "InsufficientData"
    MANIFEST_MISSING = "ManifestMissing"
    MANIFEST_INVALID = "ManifestInvalid"
    FILE_MISSING = "FileMissing"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    COUNT_MISMATCH = "CountMismatch"
    MALFORMED_ROW = "MalformedRow"
    DUPLICATE_HANDLE = "DuplicateHandle"
    TOO_FEW_SEED_PROFILES = "TooFewSeedProfiles"
    TOO_FEW_HOLDOUT_PROFILES = "TooFewHoldoutProfiles"


@dataclass
class ValidationResult:
    valid: bool
    problems: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    class_balance: dict[str, float | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def problem_names(self) -> list[str]:
        return [problem["reason"] for problem in self.problems]


class _Findings:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, problem: Problem, example: str) -> None:
        self.counts[problem.value] += 1
        examples = self.examples.setdefault(problem.value, [])
        if len(examples) < MAX_EXAMPLES_PER_PROBLEM:
            examples.append(example)


def _handle_key(handle: str) -> bytes:
    # 8-byte digests keep the duplicate check's memory small for million-row datasets.
    return hashlib.blake2b(handle.strip().lower().encode("utf-8"), digest_size=8).digest()


def validate_dataset(
    dataset_uri: str,
    min_rows: int = DEFAULT_MIN_ROWS,
    min_seed_profiles: int = DEFAULT_MIN_SEED_PROFILES,
    min_holdout_profiles: int = MIN_HOLDOUT_PROFILES,
) -> ValidationResult:
    findings = _Findings()
    manifest_uri = storage.join(dataset_uri, MANIFEST_NAME)
    try:
        manifest = storage.read_json(manifest_uri)
    except StorageError as exc:
        problem = Problem.MANIFEST_INVALID if storage.exists(manifest_uri) else Problem.MANIFEST_MISSING
        return ValidationResult(valid=False, problems=[{"reason": problem.value, "count": 1, "examples": [str(exc)]}])
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        return ValidationResult(
            valid=False,
            problems=[
                {"reason": Problem.MANIFEST_INVALID.value, "count": 1, "examples": [f"{manifest_uri} is not a {MANIFEST_FORMAT} manifest"]}
            ],
        )

    seen_handles: set[bytes] = set()
    gated_holdout = 0  # holdout rows the agreement gates read (labelled by GATED_TEACHER)
    counts: dict[str, int] = {}
    positives: dict[str, int] = {}
    for split in Split:
        expected = manifest["files"].get(split.value) or {}
        uri = storage.join(dataset_uri, split.file_name)
        digest, size, row_count, split_positives = hashlib.sha256(), 0, 0, 0
        try:
            with storage.open_read(uri) as stream:
                while lines := list(itertools.islice(stream, rows.PARSE_BATCH_LINES)):
                    chunk = b"".join(lines)
                    digest.update(chunk)
                    size += len(chunk)
                    for line_number, row in enumerate(rows.parse_rows(lines), start=row_count + 1):
                        if isinstance(row, rows.MalformedRow):
                            findings.add(Problem.MALFORMED_ROW, f"{split.file_name}:{line_number}: {row}")
                            continue
                        key = _handle_key(row.handle)
                        if key in seen_handles:
                            findings.add(Problem.DUPLICATE_HANDLE, f"{split.file_name}:{line_number}: {row.handle}")
                        seen_handles.add(key)
                        split_positives += row.score >= POSITIVE_SCORE
                        gated_holdout += split is Split.HOLDOUT and row.teacher == GATED_TEACHER
                    row_count += len(lines)
        except StorageError as exc:
            findings.add(Problem.FILE_MISSING, str(exc))
            continue
        counts[split.value] = row_count
        positives[split.value] = split_positives
        if digest.hexdigest() != expected.get("sha256") or size != expected.get("bytes"):
            findings.add(Problem.CHECKSUM_MISMATCH, f"{split.file_name}: sha256/bytes differ from the manifest")
        if row_count != expected.get("rows"):
            findings.add(Problem.COUNT_MISMATCH, f"{split.file_name}: {row_count} rows, manifest says {expected.get('rows')}")

    counts["total"] = sum(counts.values())
    counts["malformed"] = findings.counts[Problem.MALFORMED_ROW.value]
    usable = counts["total"] - counts["malformed"]
    if usable < min_rows:
        findings.add(Problem.INSUFFICIENT_DATA, f"{usable} usable rows, at least {min_rows} needed")
    elif counts.get(Split.TRAIN.value, 0) == 0:
        findings.add(Problem.INSUFFICIENT_DATA, "the train split is empty")

    if Split.SEEDS.value in counts and counts[Split.SEEDS.value] < min_seed_profiles:
        findings.add(
            Problem.TOO_FEW_SEED_PROFILES,
            f"{counts[Split.SEEDS.value]} seed profiles found in the database, at least {min_seed_profiles} needed "
            "(is the seed-profile list the right one?)",
        )

    if gated_holdout < min_holdout_profiles:
        findings.add(
            Problem.TOO_FEW_HOLDOUT_PROFILES,
            f"{gated_holdout} holdout profiles scored by {GATED_TEACHER} (of {counts.get(Split.HOLDOUT.value, 0)}), "
            f"at least {min_holdout_profiles} needed for the correlation gate",
        )

    class_balance: dict[str, float | None] = {
        name: round(positives[name] / counts[name], 4) if counts.get(name) else None for name in positives
    }
    all_positive = sum(positives.values())
    class_balance["all"] = round(all_positive / counts["total"], 4) if counts["total"] else None
    warnings = []
    low, high = BALANCE_WARNING_RANGE
    if class_balance["all"] is not None and not low <= class_balance["all"] <= high:
        warnings.append(f"class imbalance: {class_balance['all']:.1%} of rows score >= {POSITIVE_SCORE}")

    problems = [{"reason": reason, "count": count, "examples": findings.examples[reason]} for reason, count in findings.counts.items()]
    return ValidationResult(valid=not problems, problems=problems, counts=counts, class_balance=class_balance, warnings=warnings)


def validate_data(dataset_uri: str, min_rows: int = DEFAULT_MIN_ROWS, min_seed_profiles: int = DEFAULT_MIN_SEED_PROFILES) -> dict[str, Any]:
    """The ValidateData state: ``{valid, problems, counts, class_balance, warnings, dataset_uri}``."""
    result = validate_dataset(dataset_uri, min_rows, min_seed_profiles)
    return {**result.to_dict(), "dataset_uri": dataset_uri}
