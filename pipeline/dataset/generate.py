"""GenerateDataset: PostgreSQL -> train / validation / holdout / seeds JSONL and manifest.json.

Streams: rows come out of PostgreSQL's COPY in batches, become examples column by column
(records.to_examples) in worker processes (stream.ExportStream) and go, in the query's order,
straight to the writers (local files or S3 multipart uploads), so memory does not grow with the
table. The files appear together only when the export succeeds; the manifest is written last and is what marks a dataset complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections import Counter
from dataclasses import dataclass, field
from itertools import compress, count
from typing import Any, NamedTuple

from pipeline import prompt, runs, storage
from pipeline.contracts import DEFAULT_MIN_ROWS, MANIFEST_FORMAT, MANIFEST_NAME, POSITIVE_SCORE
from pipeline.dataset import records, source, stream
from pipeline.dataset.columns import SourceColumns
from pipeline.dataset.split import Split, SplitFractions, assign_splits
from pipeline.errors import InsufficientData, InvalidArgument, RunFolderExists

DEDUP_RULE = (
    "one row per profile: the most recent score (scored_at) among the allowed teachers, ties by "
    "teacher name; one profile per handle (case-insensitive): the most recently scored, the others "
    "rejected as duplicate_handle"
)


@dataclass(frozen=True)
class ExportConfig:
    teachers: tuple[str, ...] = source.DEFAULT_TEACHERS
    fractions: SplitFractions = field(default_factory=SplitFractions)
    seed_ids: frozenset[str] = frozenset()
    min_rows: int = DEFAULT_MIN_ROWS
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.teachers or any(not teacher.strip() for teacher in self.teachers):
            raise InvalidArgument("at least one teacher is needed, with no empty names")
        if self.min_rows < 1:
            raise InvalidArgument(f"min_rows must be at least 1, got {self.min_rows}")


class _SplitStats:
    def __init__(self) -> None:
        self.rows = 0
        self.positives = 0
        self.seed_profiles = 0

    def add(self, rows: int, positives: int, seed_profiles: int) -> None:
        self.rows += rows
        self.positives += positives
        self.seed_profiles += seed_profiles

    @property
    def positive_share(self) -> float | None:
        return round(self.positives / self.rows, 4) if self.rows else None


def parse_min_rows(value: object, floor: int = 1, default: int = DEFAULT_MIN_ROWS) -> int:
    """A row count from a flag or an event field, at least ``floor``; None -> ``default``.

    On AWS the floor is the stack's minRows: an execution may raise the bar, never lower it.
    """
    if value is None:
        return max(default, floor)
    try:
        number = int(value)  # type: ignore[call-overload]  # any object: a wrong type is the named error below
    except (TypeError, ValueError):
        raise InvalidArgument(f"min_rows must be a whole number, got {value!r}") from None
    if isinstance(value, bool):
        raise InvalidArgument(f"min_rows must be a whole number, got {value!r}")
    if number < max(floor, 1):
        why = " (the stack's minRows: an execution may raise it, not lower it)" if floor > 1 else ""
        raise InvalidArgument(f"min_rows must be at least {max(floor, 1)}{why}, got {value!r}")
    return number


def export_dataset(
    params: source.ConnectionParams, out_uri: str, config: ExportConfig, started: stream.ExportStream | None = None
) -> dict[str, Any]:
    """Run the export; returns the manifest (also written to ``out_uri/manifest.json``).

    ``started``: the export's COPY, when the caller sent it already (the CLI does, before it imports
    the rules). Raises InsufficientData when no row is usable (nothing is written then),
    DatabaseUnavailable when PostgreSQL cannot be reached.
    """
    if started is not None and (started.params, started.teachers) != (params, config.teachers):
        # Not the parameters themselves in the message: they may hold a password.
        raise InvalidArgument("the COPY handed to the export reads another database or other teachers than the export's")
    manifest = _write_splits(params, out_uri, config, started)
    storage.write_json(storage.join(out_uri, MANIFEST_NAME), manifest)
    return manifest


def _scores_by_teacher(params: source.ConnectionParams) -> dict[str, int]:
    conn = source.connect(params)
    try:
        conn.set_session(readonly=True)
        return source.scores_by_teacher(conn)
    finally:
        conn.close()


class _BatchResult(NamedTuple):
    """What a worker process sends back for one batch: the JSONL bytes of each split and the counts."""

    rows_read: int
    lines: dict[Split, bytes]
    rows: dict[Split, int]
    positives: dict[Split, int]
    seed_profiles: dict[Split, int]
    rejects: Counter[str]
    truncated: Counter[str]


def _export_batch(columns: SourceColumns, config: ExportConfig) -> _BatchResult:
    """One batch of the query's rows -> each split's JSONL lines and the batch's counts (in a worker)."""
    examples = records.to_examples(columns)
    splits = assign_splits(examples.twitter_ids, config.fractions, config.seed_ids)
    # Each split's rows, and what is counted of them, picked out by maps (C) rather than a loop.
    members = {split: list(compress(count(), map(split.__eq__, splits))) for split in Split}
    lines = examples.jsonl_lines()
    scores, twitter_ids, seeds = examples.scores, examples.twitter_ids, config.seed_ids
    return _BatchResult(
        rows_read=len(columns.twitter_id),
        lines={split: b"".join(map(lines.__getitem__, positions)) for split, positions in members.items()},
        rows={split: len(positions) for split, positions in members.items()},
        positives={split: sum(map(POSITIVE_SCORE.__le__, map(scores.__getitem__, positions))) for split, positions in members.items()},
        seed_profiles={
            split: sum(map(seeds.__contains__, map(twitter_ids.__getitem__, positions))) for split, positions in members.items()
        },
        rejects=Counter(reject.reason.value for reject in examples.rejects),
        truncated=Counter(name.value for names in examples.truncated.values() for name in names),
    )


def _progress(shown: bool) -> Any:
    """The export's progress bar; tqdm is imported only when one is shown (some 20 ms of imports,
    in a 100k-row export of about 1 s)."""
    if not shown:
        return contextlib.nullcontext(_NoProgress())
    from tqdm import tqdm

    return tqdm(desc="export", unit=" rows", unit_scale=True, mininterval=0.5)


class _NoProgress:
    def update(self, rows: int) -> None:
        pass


def _write_splits(
    params: source.ConnectionParams, out_uri: str, config: ExportConfig, started: stream.ExportStream | None
) -> dict[str, Any]:
    rejects: Counter[str] = Counter()
    truncated: Counter[str] = Counter()
    stats = {split: _SplitStats() for split in Split}
    rows_read = 0
    created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with contextlib.ExitStack() as stack:
        export = started if started is not None else stack.enter_context(stream.ExportStream(params, config.teachers))
        # The workers are forked first, before the writers (and any thread of theirs) exist.
        results = export.results(functools.partial(_export_batch, config=config))
        # While the server prepares the COPY's first rows (it sorts the whole query first), this
        # process counts the scores on a connection of its own: the count costs no time of its own.
        # Before any writer exists: a database that cannot be reached leaves nothing at out_uri.
        by_teacher = _scores_by_teacher(params)
        writers = {
            split: storage.HashingWriter(stack.enter_context(storage.open_write(storage.join(out_uri, split.file_name)))) for split in Split
        }
        bar = stack.enter_context(_progress(config.progress))
        for result in results:
            rows_read += result.rows_read
            rejects.update(result.rejects)
            truncated.update(result.truncated)
            for split in Split:
                if result.rows[split]:
                    writers[split].write(result.lines[split])
                    stats[split].add(result.rows[split], result.positives[split], result.seed_profiles[split])
            bar.update(result.rows_read)

        total = sum(stat.rows for stat in stats.values())
        if total == 0:
            # Raising inside the block aborts every writer: no empty dataset is ever published.
            raise InsufficientData(
                f"no usable rows: {rows_read} scored profiles read for teachers {', '.join(config.teachers)}, "
                f"{sum(rejects.values())} rejected"
            )
    return {
        "format": MANIFEST_FORMAT,
        "created_at": created_at,
        "template_version": prompt.TEMPLATE_VERSION,
        "query": {
            "teachers": list(config.teachers),
            "dedup_rule": DEDUP_RULE,
            "order": "scored_at DESC",
            "split_fractions": config.fractions.as_dict(),
            "split_rule": "sha256(twitter_id) position; seed profiles held out in seeds.jsonl",
            "seed_profiles": len(config.seed_ids),
            "min_rows": config.min_rows,
        },
        "limits": {
            "bio_chars": prompt.MAX_BIO_CHARS,
            "display_name_chars": prompt.MAX_DISPLAY_NAME_CHARS,
            "location_chars": prompt.MAX_LOCATION_CHARS,
            "handle_chars": prompt.MAX_HANDLE_CHARS,
            "reason_chars": prompt.MAX_REASON_CHARS,
        },
        "source": {"rows_read": rows_read, "scores_by_teacher": by_teacher},
        "counts": {
            **{split.value: stats[split].rows for split in Split},
            "total": total,
            "rejected": sum(rejects.values()),
            "seed_profiles_in_holdout": stats[Split.SEEDS].seed_profiles,
        },
        "rejects": dict(sorted(rejects.items())),
        "truncated": dict(sorted(truncated.items())),
        "class_balance": {
            "positive_score": POSITIVE_SCORE,
            **{split.value: stats[split].positive_share for split in Split},
        },
        "files": {
            split.value: {
                "name": split.file_name,
                "rows": stats[split].rows,
                "bytes": writers[split].bytes_written,
                "sha256": writers[split].sha256,
            }
            for split in Split
        },
    }


def generate_dataset(
    params: source.ConnectionParams,
    artifact_root: str,
    run_id: str,
    *,
    seed_ids: frozenset[str],
    teachers: tuple[str, ...] = source.DEFAULT_TEACHERS,
    fractions: SplitFractions | None = None,
    min_rows: int = DEFAULT_MIN_ROWS,
    progress: bool = False,
) -> dict[str, Any]:
    """The GenerateDataset state: ``runs/<run_id>/dataset/`` under ``artifact_root``; returns URIs,
    counts and hashes (a small JSON-able result, never data)."""
    dataset_uri = runs.dataset_uri(artifact_root, run_id)
    if storage.any_under(dataset_uri):
        # An execution name used again (Step Functions allows it after 90 days) must not overwrite the
        # earlier run's dataset, possibly production's: nothing is written, the run fails by name.
        raise RunFolderExists(
            f"{dataset_uri} already holds a dataset from an earlier run of the same name; start the execution under a new name"
        )
    config = ExportConfig(
        teachers=teachers, fractions=fractions or SplitFractions(), seed_ids=seed_ids, min_rows=min_rows, progress=progress
    )
    manifest = export_dataset(params, dataset_uri, config)
    return {
        "run_id": run_id,
        "dataset_uri": dataset_uri,
        "manifest_uri": storage.join(dataset_uri, MANIFEST_NAME),
        "counts": manifest["counts"],
        "rejects": manifest["rejects"],
        "files": {
            name: {"uri": storage.join(dataset_uri, entry["name"]), "rows": entry["rows"], "sha256": entry["sha256"]}
            for name, entry in manifest["files"].items()
        },
    }
