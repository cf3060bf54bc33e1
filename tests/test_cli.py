"""``python -m pipeline dataset ...`` as a user runs it: real processes, real PostgreSQL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def seed_list(tmp_path) -> str:
    """The bundled sample's seed-profile ids, as a user passes their own list with --seed-profiles."""
    seeds = tmp_path / "seeds.txt"
    assert cli("dataset", "seed-profiles", "--out", str(seeds)).returncode == 0
    return str(seeds)


def test_sample_then_export_then_validate(database_url, tmp_path):
    loaded = cli("dataset", "sample", "--database-url", database_url, "--profiles", "1200", "--seed", "5")
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded 1240 profiles" in loaded.stdout
    out = tmp_path / "dataset"
    exported = cli(
        "dataset", "export", "--database-url", database_url, "--out", str(out), "--min-rows", "1000", "--seed-profiles", seed_list(tmp_path)
    )
    assert exported.returncode == 0, exported.stderr
    assert "dataset valid" in exported.stdout
    assert "rows/s" in exported.stderr or " rows" in exported.stderr  # tqdm's progress line
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["total"] >= 1000
    assert cli("dataset", "validate", "--data", str(out), "--min-rows", "1000").returncode == 0
    not_enough = cli("dataset", "validate", "--data", str(out), "--min-rows", "100000")
    assert not_enough.returncode == 3 and "InsufficientData" in not_enough.stdout


def test_export_flags_teachers_split_and_seed_list(database_url, tmp_path):
    assert cli("dataset", "sample", "--database-url", database_url, "--profiles", "300").returncode == 0
    seeds = tmp_path / "seeds.txt"
    assert cli("dataset", "seed-profiles", "--out", str(seeds)).returncode == 0
    out = tmp_path / "d"
    result = cli(
        "dataset",
        "export",
        "--database-url",
        database_url,
        "--out",
        str(out),
        "--min-rows",
        "10",
        "--teachers",
        "claude-haiku-20240307",
        "--split",
        "0.6,0.2,0.2",
        "--seed-profiles",
        str(seeds),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["query"]["teachers"] == ["claude-haiku-20240307"]
    assert manifest["query"]["split_fractions"] == {"train": 0.6, "validation": 0.2, "holdout": 0.2}
    assert manifest["counts"]["seed_profiles_in_holdout"] == 40
    assert result.stderr == ""  # --no-progress


def test_unreachable_database_is_one_line_no_traceback(tmp_path):
    result = cli(
        "dataset",
        "export",
        "--database-url",
        "postgresql://u@127.0.0.1:1/db",
        "--out",
        str(tmp_path / "x"),
        "--seed-profiles",
        seed_list(tmp_path),
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: DatabaseUnavailable: cannot connect to PostgreSQL at 127.0.0.1:1")
    assert not (tmp_path / "x").exists()


def test_empty_table_exits_non_zero_with_insufficient_data(database_url, db, tmp_path):
    result = cli("dataset", "export", "--database-url", database_url, "--out", str(tmp_path / "x"), "--seed-profiles", seed_list(tmp_path))
    assert result.returncode == 1 and "error: InsufficientData:" in result.stderr and "Traceback" not in result.stderr


def test_a_real_database_without_a_seed_list_is_refused_before_any_export(database_url, tmp_path):
    """The bundled sample's synthetic seed ids are the demo's; a real database needs the team's list."""
    assert cli("dataset", "sample", "--database-url", database_url, "--profiles", "300").returncode == 0
    result = cli("dataset", "export", "--database-url", database_url, "--out", str(tmp_path / "x"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: InvalidArgument: a seed-profile list is required") and "--seed-profiles" in lines[0]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--split", "0.5,0.5"], 1, "error: InvalidArgument: --split expects three numbers like 0.8,0.1,0.1, got '0.5,0.5'"),
        (["--min-rows", "0"], 2, "error: argument --min-rows: expected a number of at least 1, got 0"),
        (["--split", "0.95,0,0.05"], 1, "error: InvalidArgument: --split: the holdout share 0.05 is below 0.1"),
        (["--teachers", " , "], 1, "error: InvalidArgument: --teachers needs at least one name"),
        (["--database-url", "not a url at all"], 1, "error: InvalidArgument:"),
    ],
)
def test_bad_flags_are_named_errors(tmp_path, args, code, message):
    """A bad value is a usage error from argparse (exit 2) or a named error (exit 1), one line each."""
    result = cli(
        "dataset",
        "export",
        "--database-url",
        "postgresql://u@127.0.0.1:1/db",
        "--out",
        str(tmp_path),
        "--seed-profiles",
        str(ROOT / "README.md"),
        *args,
    )
    assert result.returncode == code, (args, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_bad_flag_is_refused_before_an_embedded_postgres_starts(tmp_path):
    result = cli("dataset", "export", "--out", str(tmp_path / "x"), "--split", "0.5,0.5")
    assert result.returncode == 1 and "error: InvalidArgument: --split expects three numbers" in result.stderr
    assert "embedded PostgreSQL" not in result.stderr and "Traceback" not in result.stderr


def test_without_a_database_url_the_demo_path_uses_an_embedded_postgres(tmp_path):
    out = tmp_path / "runs" / "demo" / "dataset"
    result = cli("dataset", "export", "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "embedded PostgreSQL" in result.stderr and "dataset valid" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["total"] >= 1000 and manifest["counts"]["seed_profiles_in_holdout"] == 40


def test_tiny_model_then_train_from_the_command_line(tmp_path):
    from tests.pipeline.training.conftest import write_dataset

    model = tmp_path / "tiny"
    built = cli("tiny-model", "--out", str(model), "--layers", "1")
    assert built.returncode == 0, built.stderr
    assert '"num_hidden_layers": 1' in built.stdout
    dataset = write_dataset(tmp_path / "dataset", train_rows=16, validation_rows=8)
    trained = cli(
        "train",
        "--dataset",
        str(dataset),
        "--base-model",
        str(model),
        "--out",
        str(tmp_path / "adapter"),
        "--set",
        "num_train_epochs=1",
        "--set",
        "gradient_accumulation_steps=1",
        "--no-progress",
    )
    assert trained.returncode == 0, trained.stderr
    assert "adapter written to" in trained.stdout and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    bad = cli("train", "--dataset", str(dataset), "--base-model", str(model), "--out", str(tmp_path / "x"), "--set", "nope=1")
    assert bad.returncode == 1 and "error: InvalidArgument: unknown hyperparameter 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_convert_from_the_command_line(tmp_path):
    model = tmp_path / "tiny"
    assert cli("tiny-model", "--out", str(model), "--layers", "1").returncode == 0
    result = cli("convert", "--base-model", str(model), "--adapter", str(tmp_path / "no-adapter"), "--out", str(tmp_path / "m.gguf"))
    assert result.returncode == 1 and "error: AdapterMismatch:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m.gguf").exists()


def test_an_unwritable_output_is_one_line_not_a_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = cli("tiny-model", "--out", str(blocker / "model"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_a_holdout_sample_no_gate_could_decide_on_is_a_usage_error(tmp_path):
    result = cli(
        "validate", "--ollama-url", "http://127.0.0.1:1", "--holdout", "h", "--seeds", "s", "--out", str(tmp_path), "--max-holdout", "12"
    )
    assert (
        result.returncode == 2
        and "argument --max-holdout: expected at least 30 (the correlation gate's least sample), got 12" in result.stderr
    )
