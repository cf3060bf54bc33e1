"""The run history: every run, passed or not, and every operator action, one JSON object per line
in ``<root>/runs/index.jsonl`` (a local directory or s3://bucket). The name has a dot, which no
run id has, so it never collides with a run's folder.

A record is built from what the run left (manifest, training metrics, report), so the history says
the same as the artifacts. Appending to an S3 object is a conditional rewrite (If-Match on the ETag,
retried when another writer got there first), so two writers never drop each other's lines.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline import contracts, prompt, runs, storage
from pipeline.errors import PipelineError

INDEX_NAME = contracts.RUN_INDEX_NAME
APPEND_ATTEMPTS = 5
# Teachers a record lists by name (the most scores first); the rest are summed in one entry. The
# names are the table's scored_by, untrusted: about 1,100 long ones pushed RecordRun's answer past
# Step Functions' 256 KB state limit.
MAX_TEACHERS_LISTED = 20
MAX_SUMMARY_ERROR_CHARS = 300


class HistoryError(PipelineError):
    """The runs index could not be read or appended to."""


class Outcome:
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled back"  # validated, gates failed: production untouched
    FAILED = "failed"  # stopped before a verdict (a stage error)


class Kind:
    RUN = "run"
    PROMOTE = "promote"  # an operator pinned a run (python -m pipeline promote --run)
    ROLLBACK = "rollback"  # an operator restored a run (python -m pipeline rollback --to)


def index_uri(root: str) -> str:
    return storage.join(root, contracts.RUNS_DIR, INDEX_NAME)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _read_json(uri: str) -> dict[str, Any] | None:
    try:
        if not storage.exists(uri):
            return None
        value = storage.read_json(uri)
    except (PipelineError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _dataset(root: str, run_id: str) -> dict[str, Any] | None:
    uri = storage.join(runs.dataset_uri(root, run_id), contracts.MANIFEST_NAME)
    if not storage.exists(uri):
        return None
    raw = storage.read_bytes(uri)
    try:
        manifest = json.loads(raw)
    except ValueError:  # ValidateData refuses such a run; its history line says so instead of failing
        return {"uri": runs.dataset_uri(root, run_id), "sha256": hashlib.sha256(raw).hexdigest(), "unreadable_manifest": True}
    manifest = _mapping(manifest)
    counts = _mapping(manifest.get("counts"))
    rows = counts.get("total")
    return {
        "uri": runs.dataset_uri(root, run_id),
        "sha256": hashlib.sha256(raw).hexdigest(),  # the manifest pins every file's sha256
        "rows": rows if isinstance(rows, int) and not isinstance(rows, bool) else None,
        "counts": counts or None,
        "teacher_mix": teacher_mix(_mapping(manifest.get("source")).get("scores_by_teacher")),
    }


def teacher_name(value: Any) -> str:
    """A teacher's name as the history shows it: one clean line (no control, format or markup-
    breaking characters survive clean_field), at most prompt.MAX_TEACHER_CHARS."""
    return prompt.truncate(prompt.clean_field(value), prompt.MAX_TEACHER_CHARS)[0] or "(unnamed)"


def teacher_mix(counts: Any) -> dict[str, int] | None:
    """Scores per teacher, names cleaned (names that clean alike are summed), the
    MAX_TEACHERS_LISTED largest by name and the others in one "(N other teachers)" entry."""
    merged: dict[str, int] = {}
    for name, count in _mapping(counts).items():
        if isinstance(count, int) and not isinstance(count, bool):
            merged[teacher_name(name)] = merged.get(teacher_name(name), 0) + count
    ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
    listed = dict(ranked[:MAX_TEACHERS_LISTED])
    others = ranked[MAX_TEACHERS_LISTED:]
    if others:
        listed[f"({len(others)} other teachers)"] = sum(count for _, count in others)
    return listed or None


def _mapping(value: Any) -> dict[str, Any]:
    """A JSON object read from an artifact, or {} for anything else (a malformed manifest, e.g.
    ``counts: []``, still gets its run a history line)."""
    return value if isinstance(value, dict) else {}


def _training(adapter_uri: str | None) -> dict[str, Any] | None:
    if not adapter_uri:
        return None
    metrics = _read_json(storage.join(adapter_uri, "training_metrics.json")) or {}  # absent: a job cut short
    losses = [entry.get("eval_loss") for entry in metrics.get("eval_loss_per_epoch", [])]
    curve = metrics.get("loss_curve") or []
    return {
        "adapter_uri": adapter_uri,
        "steps": metrics.get("global_steps"),
        "seconds": metrics.get("seconds"),
        "final_train_loss": curve[-1].get("loss") if curve else None,
        "eval_loss_per_epoch": losses,
        "best_eval_loss": metrics.get("best_eval_loss"),
        "train_examples": metrics.get("train_examples"),
        "precision": metrics.get("precision"),
    }


def _validation(root: str, run_id: str) -> dict[str, Any] | None:
    report = _read_json(storage.join(runs.report_uri(root, run_id), contracts.REPORT_JSON))
    if not report:
        return None
    metrics = report.get("metrics", {})
    return {
        "passed": report.get("passed"),
        "failed_gates": report.get("failed_gates"),
        "gates": {gate["name"]: {k: gate[k] for k in ("value", "threshold", "passed")} for gate in report.get("gates", [])},
        "metrics": {name: metrics.get(name) for name in ("pearson", "spearman", "mae", "seed_mean", "seed_min", "valid_json_rate")},
        "champion": metrics.get("champion"),
        "report_uri": storage.join(runs.report_uri(root, run_id), contracts.REPORT_MD),
    }


def _shadow(root: str, run_id: str) -> dict[str, Any] | None:
    """The run's shadow result (ValidateModel's), when it has one."""
    found = _read_json(storage.join(runs.run_uri(root, run_id), contracts.SHADOW_DIR, "shadow.json"))
    if not found:
        return None
    return {key: found.get(key) for key in ("profiles", "scored", "pearson", "mae", "agreement", "previous_pearson", "alert", "status")}


def run_record(
    root: str,
    run_id: str,
    *,
    outcome: str,
    adapter_uri: str | None = None,
    error: str | None = None,
    shadow: Mapping[str, Any] | None = None,
    origin: str = "local",
) -> dict[str, Any]:
    """What the history says about one run, from what the run left behind."""
    return {
        "kind": Kind.RUN,
        "run_id": run_id,
        "time": _now(),
        "origin": origin,  # "local" or "aws"
        "outcome": outcome,
        "promoted": outcome == Outcome.PROMOTED,
        "error": error,
        "dataset": _dataset(root, run_id),
        "training": _training(adapter_uri),
        "validation": _validation(root, run_id),
        "shadow": dict(shadow) if shadow else _shadow(root, run_id),
    }


def outcome_of(root: str, run_id: str, pointer_path: tuple[str, ...] = (contracts.MODELS_DIR, contracts.POINTER_NAME)) -> str:
    """A finished run's outcome, read from its artifacts (never trusted from an event): promoted when
    the production pointer names it, rolled back when its report failed the gates, failed otherwise."""
    pointer = _read_json(storage.join(root, *pointer_path))
    if pointer and pointer.get("run_id") == run_id:
        return Outcome.PROMOTED
    report = _read_json(storage.join(runs.report_uri(root, run_id), contracts.REPORT_JSON))
    return Outcome.ROLLED_BACK if report and report.get("passed") is False else Outcome.FAILED


def summary_line(record: Mapping[str, Any]) -> str:
    """The run in one line for a person (the notification): outcome, the figures that decided it,
    the data it learned from, where the report is."""
    parts = [f"Run {record['run_id']} {record['outcome']}"]
    validation = record.get("validation") or {}
    metrics = validation.get("metrics") or {}
    if metrics:
        figures = [
            f"{name} {metrics[name]:.3f}" for name in ("pearson", "mae", "seed_mean", "seed_min") if isinstance(metrics.get(name), float)
        ]
        parts.append(", ".join(figures))
        champion = validation.get("champion")
        if champion and isinstance(champion.get("champion_pearson"), float):
            parts.append(f"production's pearson {champion['champion_pearson']:.3f}")
        if validation.get("failed_gates"):
            parts.append(f"failed gates: {', '.join(validation['failed_gates'])}")
    shadow = record.get("shadow") or {}
    if shadow.get("scored"):
        pearson = shadow.get("pearson")
        shown = "undefined" if pearson is None else f"{pearson:.3f}"
        parts.append(
            f"shadow vs the teachers on {shadow['scored']} fresh profiles: pearson {shown}"
            + (" (ALERT: dropped)" if shadow.get("alert") else "")
        )
    dataset = record.get("dataset") or {}
    if dataset.get("rows"):
        # Cleaned again: a record written before names were cleaned is still in the index.
        mix = ", ".join(f"{teacher} {count}" for teacher, count in (teacher_mix(dataset.get("teacher_mix")) or {}).items())
        parts.append(f"{dataset['rows']} rows" + (f" ({mix})" if mix else ""))
    if record.get("error"):
        parts.append(prompt.clean_text(str(record["error"]))[:MAX_SUMMARY_ERROR_CHARS])
    if validation.get("report_uri"):
        parts.append(f"report {validation['report_uri']}")
    return "; ".join(parts)


SUBJECT_PREFIX = "researcher-scorer"
SHADOW_ALERT_SUBJECT = "ALERT: production's agreement with the teachers dropped"


def shadow_alert(record: Mapping[str, Any]) -> bool:
    return bool((record.get("shadow") or {}).get("alert"))


def notification_subject(record: Mapping[str, Any]) -> str:
    """The notification's subject: the outcome, and the shadow alert first when there is one, so a
    drop of the production model's agreement is seen whatever became of the run."""
    outcome = f"run {record['outcome']}"
    return f"{SUBJECT_PREFIX} {SHADOW_ALERT_SUBJECT}; {outcome}" if shadow_alert(record) else f"{SUBJECT_PREFIX} training {outcome}"


def action_record(kind: str, run_id: str, *, replaced: str | None, forced: bool, note: str = "") -> dict[str, Any]:
    """An operator's promote or rollback."""
    return {"kind": kind, "run_id": run_id, "time": _now(), "replaced": replaced, "forced": forced, "note": note}


def append(root: str, record: Mapping[str, Any]) -> None:
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    uri = index_uri(root)
    if not storage.is_s3(uri):
        from pathlib import Path

        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+b") as handle:  # one write per line: appends never interleave
            handle.seek(0, os.SEEK_END)
            if handle.tell():
                handle.seek(-1, os.SEEK_END)
                ended = handle.read(1) == b"\n"
            else:
                ended = True
            handle.write(line if ended else b"\n" + line)
        return
    for _ in range(APPEND_ATTEMPTS):
        current, etag = storage.read_with_etag(uri)
        if storage.write_if_unchanged(uri, _line_after(current or b"") + line, etag):
            return
    raise HistoryError(f"{uri} kept changing while appending; try again")


def _line_after(current: bytes) -> bytes:
    """The index with its last line ended: a line cut short by an interrupted writer stays a line of
    its own (counted unreadable) instead of swallowing the record appended after it."""
    return current if not current or current.endswith(b"\n") else current + b"\n"


@dataclass(frozen=True)
class History:
    records: list[dict[str, Any]]
    unreadable: int  # lines that are not JSON objects: counted, never silently dropped

    def runs(self) -> dict[str, dict[str, Any]]:
        """The latest record of each run, in the order the runs were first recorded."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.records:
            if record.get("kind") == Kind.RUN:
                latest[record["run_id"]] = record
        return latest

    def actions(self) -> list[dict[str, Any]]:
        return [record for record in self.records if record.get("kind") in (Kind.PROMOTE, Kind.ROLLBACK)]


def read(root: str) -> History:
    uri = index_uri(root)
    if not storage.exists(uri):
        return History([], 0)
    records, unreadable = [], 0
    for line in storage.read_bytes(uri).decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            unreadable += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("run_id"), str):
            records.append(record)
        else:
            unreadable += 1
    return History(records, unreadable)


# --- reading it: `python -m pipeline runs list | compare` -------------------------------------------

# (label, path into a run record) of what `runs compare` sets side by side; numbers get a difference.
COMPARED = (
    ("outcome", ("outcome",)),
    ("time", ("time",)),
    ("dataset rows", ("dataset", "rows")),
    ("dataset sha256", ("dataset", "sha256")),
    ("teacher mix", ("dataset", "teacher_mix")),
    ("final train loss", ("training", "final_train_loss")),
    ("best eval loss", ("training", "best_eval_loss")),
    ("pearson", ("validation", "metrics", "pearson")),
    ("spearman", ("validation", "metrics", "spearman")),
    ("mae", ("validation", "metrics", "mae")),
    ("seed mean", ("validation", "metrics", "seed_mean")),
    ("seed min", ("validation", "metrics", "seed_min")),
    ("valid JSON rate", ("validation", "metrics", "valid_json_rate")),
    ("pearson vs production", ("validation", "champion", "pearson_delta")),
    ("shadow pearson", ("shadow", "pearson")),
    ("report", ("validation", "report_uri")),
)
NUMERIC = {
    "dataset rows",
    "final train loss",
    "best eval loss",
    "pearson",
    "spearman",
    "mae",
    "seed mean",
    "seed min",
    "valid JSON rate",
    "pearson vs production",
    "shadow pearson",
}
PLOTTED = ("pearson", "spearman", "mae", "seed mean", "seed min", "valid JSON rate")


class UnknownRun(PipelineError):
    """A run id the history does not hold."""


def value_at(record: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def as_number(value: Any) -> float | None:
    """Training metrics are stored as the trainer wrote them (some as text): numbers for comparing."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def pick(history: History, run_id: str) -> dict[str, Any]:
    found = history.runs().get(run_id)
    if found is None:
        known = ", ".join(list(history.runs())[-5:]) or "none yet"
        raise UnknownRun(f"run {run_id!r} is not in the history (latest: {known})")
    return found


def compare_plot(first: Mapping[str, Any], second: Mapping[str, Any]) -> bytes:
    """Bars of the validation metrics of two runs, side by side (PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    labels = [label for label, _ in COMPARED if label in PLOTTED]
    paths = dict(COMPARED)
    figure = Figure(figsize=(8, 4))
    axes = figure.subplots()
    positions = range(len(labels))
    for offset, record in ((-0.2, first), (0.2, second)):
        values = [as_number(value_at(record, paths[label])) or 0.0 for label in labels]
        axes.bar([p + offset for p in positions], values, width=0.4, label=str(record["run_id"]))
    axes.set_xticks(list(positions), labels, rotation=20)
    axes.set(title="Validation metrics (undefined shown as 0)", ylim=(min(0.0, axes.get_ylim()[0]), max(1.0, axes.get_ylim()[1])))
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()
