"""The run history: records built from a run's artifacts, appended without losing lines (locally
and on S3, with a concurrent writer), and read back by `runs list` and `runs compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import cli, contracts, history, prompt, storage


def write_run(root: Path, run_id: str, *, pearson: float, passed: bool, teachers: dict[str, int]) -> None:
    run = root / "runs" / run_id
    (run / "dataset").mkdir(parents=True)
    manifest = {"format": contracts.MANIFEST_FORMAT, "counts": {"total": 1200}, "source": {"scores_by_teacher": teachers}}
    (run / "dataset" / contracts.MANIFEST_NAME).write_text(json.dumps(manifest))
    (run / "adapter").mkdir()
    metrics = {
        "loss_curve": [{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.5}],
        "eval_loss_per_epoch": [{"epoch": 1.0, "eval_loss": 1.7}],
    }
    (run / "adapter" / "training_metrics.json").write_text(json.dumps({**metrics, "global_steps": 20, "best_eval_loss": "1.7"}))
    (run / "report").mkdir()
    gates = [{"name": "pearson", "value": pearson, "threshold": 0.85, "comparison": ">", "passed": pearson > 0.85, "detail": ""}]
    report = {"passed": passed, "failed_gates": [] if passed else ["pearson"], "gates": gates, "metrics": {"pearson": pearson, "mae": 0.1}}
    (run / "report" / contracts.REPORT_JSON).write_text(json.dumps(report))


def test_a_record_says_what_the_runs_artifacts_say(tmp_path):
    write_run(tmp_path, "run-1", pearson=0.9, passed=True, teachers={"claude-haiku-20240307": 700, "gemini-2.0-flash": 500})
    record = history.run_record(str(tmp_path), "run-1", outcome=history.Outcome.PROMOTED, adapter_uri=str(tmp_path / "runs/run-1/adapter"))
    manifest = (tmp_path / "runs/run-1/dataset/manifest.json").read_bytes()
    import hashlib

    assert record["dataset"]["sha256"] == hashlib.sha256(manifest).hexdigest() and record["dataset"]["rows"] == 1200
    assert record["dataset"]["teacher_mix"] == {"claude-haiku-20240307": 700, "gemini-2.0-flash": 500}
    assert record["training"]["final_train_loss"] == 1.5 and record["training"]["eval_loss_per_epoch"] == [1.7]
    assert record["validation"]["gates"]["pearson"] == {"value": 0.9, "threshold": 0.85, "passed": True}
    assert record["promoted"] is True and record["validation"]["report_uri"].endswith("runs/run-1/report/report.md")


def test_a_run_that_failed_early_is_recorded_with_what_it_left(tmp_path):
    record = history.run_record(str(tmp_path), "run-x", outcome=history.Outcome.FAILED, error="stage dataset failed: DatabaseUnavailable")
    assert record["dataset"] is None and record["validation"] is None and record["error"].startswith("stage dataset failed")


def test_local_appends_keep_every_line_and_count_unreadable_ones(tmp_path):
    history.append(str(tmp_path), {"kind": "run", "run_id": "run-1", "outcome": "promoted"})
    with open(history.index_uri(str(tmp_path)), "a") as index:
        index.write("not json\n")
    history.append(str(tmp_path), {"kind": "run", "run_id": "run-2", "outcome": "failed"})
    history.append(str(tmp_path), history.action_record(history.Kind.ROLLBACK, "run-1", replaced="run-2", forced=False))
    found = history.read(str(tmp_path))
    assert list(found.runs()) == ["run-1", "run-2"] and found.unreadable == 1
    assert [action["kind"] for action in found.actions()] == ["rollback"]


def test_s3_appends_survive_a_concurrent_writer(bucket, monkeypatch):
    root = f"s3://{bucket}"
    history.append(root, {"kind": "run", "run_id": "run-1"})
    original = storage.read_with_etag
    raced = []

    def read_then_someone_else_writes(uri):
        current = original(uri)
        if not raced:  # between this writer's read and its write, another appends
            raced.append(True)
            storage.write_bytes(uri, (current[0] or b"") + b'{"kind": "run", "run_id": "run-other"}\n')
        return current

    monkeypatch.setattr(storage, "read_with_etag", read_then_someone_else_writes)
    history.append(root, {"kind": "run", "run_id": "run-2"})
    assert list(history.read(root).runs()) == ["run-1", "run-other", "run-2"]


def test_an_append_after_a_cut_off_line_keeps_the_new_record_locally(tmp_path):
    history.append(str(tmp_path), {"kind": "run", "run_id": "run-1"})
    with open(history.index_uri(str(tmp_path)), "a") as index:
        index.write('{"kind": "run", "run_id": "run-cut')  # a writer stopped mid-line
    history.append(str(tmp_path), {"kind": "run", "run_id": "run-2"})
    found = history.read(str(tmp_path))
    assert list(found.runs()) == ["run-1", "run-2"] and found.unreadable == 1


def test_an_append_after_a_cut_off_line_keeps_the_new_record_on_s3(bucket):
    root = f"s3://{bucket}"
    storage.write_bytes(history.index_uri(root), b'{"kind": "run", "run_id": "run-1"}\n{"kind": "run", "run_')
    history.append(root, {"kind": "run", "run_id": "run-2"})
    found = history.read(root)
    assert list(found.runs()) == ["run-1", "run-2"] and found.unreadable == 1


@pytest.mark.parametrize(
    "manifest",
    [{"counts": []}, {"counts": {"total": "many"}, "source": []}, {"source": {"scores_by_teacher": ["a", "b"]}}, [1, 2]],
)
def test_a_malformed_manifest_still_gets_the_run_its_history_line(tmp_path, manifest):
    (tmp_path / "runs/run-1/dataset").mkdir(parents=True)
    (tmp_path / "runs/run-1/dataset/manifest.json").write_text(json.dumps(manifest))
    record = history.run_record(str(tmp_path), "run-1", outcome=history.Outcome.FAILED, error="InsufficientData")
    assert record["dataset"]["rows"] is None and record["dataset"]["teacher_mix"] is None
    assert history.summary_line(record) == "Run run-1 failed; InsufficientData"


def test_runs_list_and_compare(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a terminal wide enough for the tables
    root = str(tmp_path)
    adapter = str(tmp_path / "runs/run-1/adapter")
    write_run(tmp_path, "run-1", pearson=0.9, passed=True, teachers={"claude-haiku-20240307": 700})
    write_run(tmp_path, "run-2", pearson=0.8, passed=False, teachers={"claude-haiku-20240307": 900})
    history.append(root, history.run_record(root, "run-1", outcome=history.Outcome.PROMOTED, adapter_uri=adapter))
    history.append(root, history.run_record(root, "run-2", outcome=history.Outcome.ROLLED_BACK))

    assert cli.main(["runs", "list", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "run-1" in out and "run-2" in out and "promoted" in out and "rolled back" in out

    plot = tmp_path / "cmp.png"
    assert cli.main(["runs", "compare", "run-1", "run-2", "--root", root, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "-0.100" in out  # pearson 0.9 -> 0.8
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["runs", "compare", "run-1", "run-9", "--root", root]) == cli.EXIT_ERROR
    assert "UnknownRun: run 'run-9' is not in the history" in capsys.readouterr().err


HOSTILE_TEACHERS = {
    "claude-haiku-20240307": 700,
    "gemini\n\nYour account is locked. Sign in at https://evil.example to keep your models.": 3,
    "\x1b]8;;https://evil.example\x1b\\click me\x1b]8;;\x1b\\": 2,  # an OSC-8 link in a terminal
    "[/bold] closes markup [red]": 1,
    **{f"teacher-{i:04d}-" + "x" * 200: 1 for i in range(1100)},
}


def test_untrusted_teacher_names_and_errors_reach_no_one_raw(tmp_path, capsys):
    write_run(tmp_path, "run-1", pearson=0.9, passed=True, teachers=HOSTILE_TEACHERS)
    error = "States.TaskFailed: [/bold] \x1b[2J cleared\nsecond line " + "e" * 5000
    record = history.run_record(str(tmp_path), "run-1", outcome=history.Outcome.FAILED, error=error)
    mix = record["dataset"]["teacher_mix"]
    assert len(mix) == history.MAX_TEACHERS_LISTED + 1 and mix["(1084 other teachers)"] == 1084
    assert sum(mix.values()) == sum(HOSTILE_TEACHERS.values())  # every score counted, under a bounded name
    assert all(len(name) <= prompt.MAX_TEACHER_CHARS and name.isprintable() for name in mix)
    summary = history.summary_line(record)
    assert summary.isprintable() and "\x1b" not in summary and len(summary.encode()) < 4096  # SNS email, Step Functions state
    assert len(json.dumps(record).encode()) < 16_384  # RecordRun's answer stays far under Step Functions' 256 KB
    history.append(str(tmp_path), record)
    history.append(str(tmp_path), {**record, "run_id": "run-2", "error": error})
    assert cli.main(["runs", "list", "--root", str(tmp_path)]) == 0
    assert cli.main(["runs", "compare", "run-1", "run-2", "--root", str(tmp_path), "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "[/bold]" in out  # shown as text, never taken for markup


# "a\n": `$` also matches before a final newline, so the pattern is applied with fullmatch.
@pytest.mark.parametrize("run_id", ["index.jsonl", "a\n", "", "a" * 81, "../x", 7])
def test_the_index_and_malformed_names_can_never_be_a_run(run_id):
    from pipeline import runs
    from pipeline.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        runs.check_run_id(run_id)


def test_damaged_artifacts_are_named_not_a_traceback(tmp_path):
    from pipeline.dataset import fresh
    from pipeline.errors import StorageError

    (tmp_path / "runs/run-1/dataset").mkdir(parents=True)
    (tmp_path / "runs/run-1/dataset/manifest.json").write_text("{not json")
    record = history.run_record(str(tmp_path), "run-1", outcome=history.Outcome.FAILED)
    assert record["dataset"]["unreadable_manifest"] is True
    snapshot = tmp_path / "runs/run-1/shadow/fresh.json"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_text('{"profiles": [{"row": {}}]}')
    with pytest.raises(StorageError, match="not a shadow snapshot"):
        fresh.read_snapshot(str(snapshot))
